# AQD on the generated benchmark: the FP benchmark RetinaNet (configs/retinanet/retinanet_r18-c32_fpn_bn-head_
# synth.py) with the recipe of retinanet_r18_fpn_aqd-w4a4_90k_coco.py: multi-level BN head, LIQ weights (weight
# normalization) and activations at 4 bits over backbone, FPN and head, residual and FPN adds quantized, first
# layer and prediction convs full precision (paper). Fine-tuned with the benchmark's fine-tuning schedule
# (_base_/schedule_synth_finetune.py) from the FP benchmark checkpoint that tools/pipeline.py writes (stage
# `fp-retinanet`; or --cfg-options load_from=PATH). The anchor of configs/aqd/retinanet_*_synth.py.
_base_ = ['../retinanet/retinanet_r18-c32_fpn_bn-head_synth.py', './_base_/schedule_synth_finetune.py']

model = dict(
    type='QRetinaNet',
    backbone=dict(type='AddModuleResNet'),
    neck=dict(type='AddModuleFPN'),
    bbox_head=dict(type='AQDRetinaHead', multi_level_norm=True),
    quant_cfg=dict(
        weight_quant=dict(type='LIQ', bits=4, weight_norm=True),
        input_quant=dict(type='LIQ', bits=4),
        scope=['backbone', 'neck', 'bbox_head'],
        first_layer='backbone.conv1',
        first_layer_bits=None,
        last_layers=['bbox_head.retina_cls', 'bbox_head.retina_reg'],
        last_layer_bits=None,
        quantize_adds=True))

load_from = 'work_dirs/pipeline/fp-retinanet/final.pth'
custom_hooks = [dict(type='QuantizerInitHook')]
train_cfg = _base_.finetune_schedule.train_cfg
param_scheduler = _base_.finetune_schedule.param_scheduler
optim_wrapper = _base_.finetune_schedule.optim_wrapper
