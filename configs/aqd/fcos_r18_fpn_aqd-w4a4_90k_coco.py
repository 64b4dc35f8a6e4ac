# AQD FCOS R18 at 4 bits on COCO (AQD, arXiv 2007.06919v1, Table 1: 34.9 AP; FP 33.9): multi-level BN head
# (AQD section 3.2) and LIQ (eq. 3-7) for weights (with weight normalization, 4.3) and activations, every conv of
# backbone, FPN and head plus the residual and FPN adds quantized; the first layer (backbone.conv1) and the prediction
# convs stay full precision as in the paper (see the -f8l8 configs for 8 bits there). The paper's COCO schedule,
# fine-tuned from the FP checkpoint of configs/fcos/fcos_r18_fpn_bn-head_90k_coco.py (mmdet's tools/train.py writes it
# to work_dirs/fcos_r18_fpn_bn-head_90k_coco/iter_90000.pth; or pass --cfg-options load_from=PATH).
# The anchor of configs/aqd/*_90k_coco.py: other backbones, bit widths and ablations derive from this file.
_base_ = '../fcos/fcos_r18_fpn_bn-head_90k_coco.py'

model = dict(
    type='QFCOS',
    # weights come from load_from (the FP detector), not from ImageNet
    backbone=dict(type='AddModuleResNet', init_cfg=None),
    neck=dict(type='AddModuleFPN'),
    bbox_head=dict(type='AQDFCOSHead', multi_level_norm=True),
    quant_cfg=dict(
        weight_quant=dict(type='LIQ', bits=4, weight_norm=True),
        input_quant=dict(type='LIQ', bits=4),
        scope=['backbone', 'neck', 'bbox_head'],
        first_layer='backbone.conv1',
        first_layer_bits=None,  # None: full precision (paper); 8: "F8"
        last_layers=['bbox_head.conv_cls', 'bbox_head.conv_reg', 'bbox_head.conv_centerness'],
        last_layer_bits=None,   # None: full precision (paper); 8: "L8"
        quantize_adds=True))

load_from = 'work_dirs/fcos_r18_fpn_bn-head_90k_coco/iter_90000.pth'
# LIQ's alpha starts from the first training batch (data-driven init) before the first step
custom_hooks = [dict(type='QuantizerInitHook')]
# quantizer ranges are not decayed towards 0; one param group per setting, not per parameter (mmaqd.engine.optim)
optim_wrapper = dict(constructor='GroupedOptimWrapperConstructor',
                     paramwise_cfg=dict(custom_keys={'_quantizer': dict(decay_mult=0.)}))
