# The benchmark FCOS fully quantized with LIQ (aqd.md eq. 3-7) at 4 bits: weights with weight normalization,
# every conv input, the ResNet residual adds and the FPN top-down adds; first layer and prediction convs at
# 8 bits ("F8L8"). Fine-tuned from the full-precision benchmark checkpoint (written by `make demo`, or pass
# --cfg-options load_from=PATH). The heads keep one shared BN; multi-level BN is the AQD configs' job.
_base_ = '../fcos/fcos_r18-c32_fpn_bn-head_synth.py'

model = dict(
    type='QFCOS',
    backbone=dict(type='QResNet'),
    neck=dict(type='QFPN'),
    quant_cfg=dict(
        weight=dict(type='LIQ', bits=4, weight_norm=True),
        act=dict(type='LIQ', bits=4),
        scope=['backbone', 'neck', 'bbox_head'],
        first_layer='backbone.conv1',
        first_layer_bits=8,
        last_layers=['bbox_head.conv_cls', 'bbox_head.conv_reg', 'bbox_head.conv_centerness'],
        last_layer_bits=8,
        quantize_adds=True))

load_from = 'work_dirs/pipeline/fp/final.pth'

# fine-tuning schedule (CPU benchmark): 500 iterations from the FP weights, lr 0.005 with a step at 400
train_cfg = dict(max_iters=500, val_interval=500)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=50),
    dict(type='MultiStepLR', begin=0, end=500, by_epoch=False, milestones=[400], gamma=0.1)
]
# quantizer ranges are not decayed towards 0
optim_wrapper = dict(optimizer=dict(lr=0.005), paramwise_cfg=dict(custom_keys={'_quantizer': dict(decay_mult=0.)}))
