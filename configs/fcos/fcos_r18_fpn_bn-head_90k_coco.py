# Full-precision FCOS R18 with a BN head on COCO, the paper's FP schedule (AQD, arXiv 2007.06919v1, section 4.3):
# shorter side 800, random flip, 90k iterations at batch 16 (8 GPUs x 2), SGD lr 0.01 (/10 at 60k, 80k), SyncBN.
# Every quantized model of the paper is initialised from a checkpoint of this recipe.
_base_ = [
    '../_base_/models/fcos_r18_fpn_bn-head.py',
    '../_base_/datasets/coco_detection.py',
    '../_base_/schedules/schedule_90k.py',
    '../_base_/default_runtime.py',
]

# iteration-based training: an infinite sampler instead of epochs (batch 2 per GPU x 8 GPUs = 16)
train_dataloader = dict(batch_size=2, sampler=dict(type='InfiniteSampler'))
