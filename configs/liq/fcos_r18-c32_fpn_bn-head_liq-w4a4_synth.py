# The benchmark FCOS fully quantized with LIQ (AQD, arXiv 2007.06919v1, eq. 3-7) at 4 bits: weights with weight
# normalization, every conv input, the ResNet residual adds and the FPN top-down adds; first layer and prediction convs
# at 8 bits ("F8L8"). Fine-tuned from the full-precision benchmark checkpoint (written by `make demo`, or pass
# --cfg-options load_from=PATH). The heads keep one shared BN; multi-level BN is the AQD configs' job.
_base_ = ['../fcos/fcos_r18-c32_fpn_bn-head_synth.py', '../aqd/_base_/schedule_synth_finetune.py']

model = dict(
    type='QFCOS',
    backbone=dict(type='AddModuleResNet'),
    neck=dict(type='AddModuleFPN'),
    quant_cfg=dict(
        weight_quant=dict(type='LIQ', bits=4, weight_norm=True),
        input_quant=dict(type='LIQ', bits=4),
        scope=['backbone', 'neck', 'bbox_head'],
        first_layer='backbone.conv1',
        first_layer_bits=8,
        last_layers=['bbox_head.conv_cls', 'bbox_head.conv_reg', 'bbox_head.conv_centerness'],
        last_layer_bits=8,
        quantize_adds=True))

load_from = 'work_dirs/pipeline/fp/final.pth'
custom_hooks = [dict(type='QuantizerInitHook')]

# the shared fine-tuning schedule of every quantized benchmark variant
train_cfg = _base_.finetune_schedule.train_cfg
param_scheduler = _base_.finetune_schedule.param_scheduler
optim_wrapper = _base_.finetune_schedule.optim_wrapper
