# Auxi baseline (Zhuang et al., CVPR 2020; AQD (arXiv 2007.06919v1) Table 2 "Auxi (4-bit)"): RetinaNet R18 with 4-bit
# weights and activations, trained with a full-precision auxiliary module that is thrown away at inference: an adaptor
# (1x1 conv + BN + ReLU) on each backbone stage the FPN uses (C3-C5), a full-precision FPN and a full-precision
# copy of the BN head (mmaqd.models.detectors.auxi). Their losses are added to the main losses (weight 1, as in
# the public Auxi code). First layer (backbone.conv1) and last layers (retina_cls / retina_reg) stay full
# precision, as the AQD paper says it follows Auxi for this (AQD section 4.3).
#
# Quantizer: LIQ (uniform grid round(x * q) / q on a learned interval), not DoReFa. The Auxi paper
# combines its auxiliary module with several uniform quantizers; its public code uses DoReFa with the
# activations clipped at 6 (ReLU6) instead of 1. mmaqd's DoReFa clips activations at a fixed 1, which suits
# neither a detector's activation ranges nor its signed FPN outputs. LIQ uses the same kind of uniform grid with
# a learned clipping interval, and with the settings of the LIQ configs this baseline differs from plain LIQ
# training only by the auxiliary module. As in the public Auxi code (and AQD's), the conv weights and inputs
# are quantized; the residual and FPN adds stay full precision (quantize_adds=False). AddModuleResNet / AddModuleFPN
# compute exactly ResNet / FPN here; their adds are modules so that `model.quant_cfg.quantize_adds=True` gives a fully
# quantized graph.
#
# Schedule: the paper's COCO schedule for quantized models (AQD section 4.3): 90k iterations, batch 16, lr 0.01
# /10 at 60k and 80k, initialised from the full-precision RetinaNet R18 of
# configs/retinanet/retinanet_r18_fpn_bn-head_90k_coco.py (load_from below, or --cfg-options load_from=PATH).
# That checkpoint also initialises the auxiliary FPN and head (copied from its neck / bbox_head at load).
# Test / deploy without the auxiliary branch: see configs/auxi/README.md.
_base_ = '../retinanet/retinanet_r18_fpn_bn-head_90k_coco.py'

norm_cfg = dict(type='SyncBN', requires_grad=True)
model = dict(
    type='AuxiRetinaNet',
    backbone=dict(type='AddModuleResNet'),
    neck=dict(type='AddModuleFPN'),
    quant_cfg=dict(
        weight_quant=dict(type='LIQ', bits=4, weight_norm=True),
        input_quant=dict(type='LIQ', bits=4),
        scope=['backbone', 'neck', 'bbox_head'],  # the auxiliary module (aux_*) is outside: full precision
        first_layer='backbone.conv1',
        first_layer_bits=None,
        last_layers=['bbox_head.retina_cls', 'bbox_head.retina_reg'],
        last_layer_bits=None,
        quantize_adds=False),
    aux_cfg=dict(
        loss_weight=1.0,
        adaptor=dict(norm_cfg=norm_cfg, act_cfg=dict(type='ReLU')),
        neck=None,  # a full-precision copy of the main FPN cfg
        head=None))  # a full-precision copy of the main RetinaHead cfg

load_from = 'work_dirs/retinanet_r18_fpn_bn-head_90k_coco/iter_90000.pth'

# quantizer ranges are not decayed towards 0; one param group per setting, not per parameter (mmaqd.engine.optim)
optim_wrapper = dict(constructor='GroupedOptimWrapperConstructor',
                     paramwise_cfg=dict(custom_keys={'_quantizer': dict(decay_mult=0.)}))
