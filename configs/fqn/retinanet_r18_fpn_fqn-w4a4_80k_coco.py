# FQN RetinaNet R18 at 4 bits on COCO (FQN, Li et al., CVPR 2019, Table 1a R18-INT4 / AQD, arXiv 2007.06919v1,
# Table 2 "FQN (4-bit)": 28.6 AP):
#   F  every BN folded into its conv with its EMA statistics frozen for the whole fine-tune (eq. 13-14);
#   P  per-tensor asymmetric activation ranges from the 0.1% / 99.9% percentiles of 20 training batches, then fixed;
#   C  per-output-channel asymmetric min/max weights (eq. 9-10), zero points nudged so that 0 is exact (3.6).
# Fully quantized at 4 bits: the normalized input, every conv input and weight, the residual and FPN adds
# (nearest upsampling, mmdet's default), the outputs of the prediction convs.
# Schedule (FQN section 4): FQN fine-tunes with the FP settings except a fixed lr of 0.004 for 40k steps at batch 32
# (16 workers x 2). At batch 16 (8 GPUs x 2) the linear scaling rule gives lr 0.002, and the same number of
# images (40k x 32 = 80k x 16) takes 80k iterations. FQN reports its best checkpoint on coco-2017-val: validated
# every 10k iterations, the best one kept (save_best). Initialised from the FP checkpoint of
# configs/retinanet/retinanet_r18_fpn_bn-head_90k_coco.py (mmdet's tools/train.py writes it to the load_from path
# below; or pass --cfg-options load_from=PATH).
_base_ = '../retinanet/retinanet_r18_fpn_bn-head_90k_coco.py'

model = dict(
    type='QRetinaNet',
    # weights come from load_from (the FP detector), not from ImageNet
    backbone=dict(type='AddModuleResNet', init_cfg=None),
    neck=dict(type='AddModuleFPN'),
    quant_cfg=dict(
        weight_quant=dict(type='FQNAffine', bits=4, per_channel=True),
        input_quant=dict(type='FQNAffine', bits=4, percentile=0.999),
        scope=['backbone', 'neck', 'bbox_head'],
        output_layers=['bbox_head.retina_cls', 'bbox_head.retina_reg'],
        quantize_adds=True,
        fold_bn=True,
        freeze_bn=True))

load_from = 'work_dirs/retinanet_r18_fpn_bn-head_90k_coco/iter_90000.pth'
# n_cal = 20 batches (here 2 images per GPU; the per-GPU ranges are averaged over the GPUs)
custom_hooks = [dict(type='PercentileCalibrationHook', num_batches=20)]

max_iters = 80000
train_cfg = dict(max_iters=max_iters, val_interval=10000)
param_scheduler = [dict(type='ConstantLR', factor=1.0, by_epoch=False, begin=0, end=max_iters)]
optim_wrapper = dict(optimizer=dict(lr=0.002))
default_hooks = dict(checkpoint=dict(save_best='coco/bbox_mAP', rule='greater'))
