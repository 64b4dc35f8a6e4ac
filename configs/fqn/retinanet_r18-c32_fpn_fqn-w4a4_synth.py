# FQN (Li et al., CVPR 2019, section 3) on the generated benchmark: the FP benchmark RetinaNet
# (configs/retinanet/retinanet_r18-c32_fpn_bn-head_synth.py) fully quantized at 4 bits with the recipe of
# retinanet_r18_fpn_fqn-w4a4_80k_coco.py:
#   F  every BN folded into its conv with frozen EMA statistics (fold_bn / freeze_bn, eq. 13-14);
#   P  activation ranges (per tensor, asymmetric, zero point nudged) from the 0.1% / 99.9% percentiles of 20
#      training batches before fine-tuning (PercentileCalibrationHook; gamma = 0.999), then fixed;
#   C  weights per output channel, asymmetric min/max of the folded weight (eq. 9-10).
# Everything is quantized at 4 bits, first and last layers included: the normalized input (backbone.conv1's input),
# every conv input, the residual and FPN adds (operands and sums; AddModuleResNet / AddModuleFPN, nearest upsampling)
# and the outputs of the prediction convs. The eight F/P/C combinations of FQN Table 2 are in ablations/.
# Fine-tuned from the FP benchmark checkpoint written by tools/pipeline.py (stage `fp-retinanet`; or
# --cfg-options load_from=PATH) for the iterations and base lr of the shared benchmark fine-tuning schedule
# (configs/aqd/_base_/schedule_synth_finetune.py), with FQN's constant learning rate (FQN section 4: "fixed").
_base_ = ['../retinanet/retinanet_r18-c32_fpn_bn-head_synth.py', '../aqd/_base_/schedule_synth_finetune.py']

model = dict(
    # a baseline without AQD's multi-level BN: one BN per head conv shared by the levels (starts from the mean
    # of the FP benchmark's per-level BNs)
    bbox_head=dict(multi_level_norm=False),
    type='QRetinaNet',
    backbone=dict(type='AddModuleResNet'),
    neck=dict(type='AddModuleFPN'),
    quant_cfg=dict(
        weight_quant=dict(type='FQNAffine', bits=4, per_channel=True),
        input_quant=dict(type='FQNAffine', bits=4, percentile=0.999),
        scope=['backbone', 'neck', 'bbox_head'],
        output_layers=['bbox_head.retina_cls', 'bbox_head.retina_reg'],
        quantize_adds=True,
        fold_bn=True,
        freeze_bn=True))

load_from = 'work_dirs/pipeline/fp-retinanet/final.pth'
custom_hooks = [dict(type='PercentileCalibrationHook', num_batches=20)]

train_cfg = _base_.finetune_schedule.train_cfg
param_scheduler = [dict(type='ConstantLR', factor=1.0, by_epoch=False, begin=0, end=_base_.finetune_iters)]
optim_wrapper = _base_.finetune_schedule.optim_wrapper
