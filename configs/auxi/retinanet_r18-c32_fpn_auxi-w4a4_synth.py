# The benchmark RETINANET (configs/retinanet/retinanet_r18-c32_fpn_bn-head_synth.py) quantized at 4 bits and
# fine-tuned with Auxi's full-precision auxiliary module (adaptors + FPN + BN head, training only). Same
# quantizer choices as the COCO config retinanet_r18_fpn_auxi-w4a4_90k_coco.py (LIQ, weight normalization,
# first and last layers full precision, adds full precision); see that file for why. Fine-tuned from the
# full-precision benchmark checkpoint (written by the pipeline, or pass --cfg-options load_from=PATH), which
# also initialises the auxiliary FPN and head.
_base_ = ['../retinanet/retinanet_r18-c32_fpn_bn-head_synth.py', '../aqd/_base_/schedule_synth_finetune.py']

model = dict(
    # a baseline without AQD's multi-level BN: one BN per head conv shared by the levels (starts from the mean
    # of the FP benchmark's per-level BNs)
    bbox_head=dict(multi_level_norm=False),
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
        adaptor=dict(norm_cfg=dict(type='BN', requires_grad=True), act_cfg=dict(type='ReLU')),
        neck=None,
        head=None))

load_from = 'work_dirs/pipeline/fp-retinanet/final.pth'

# the shared fine-tuning schedule of every quantized benchmark variant
train_cfg = _base_.finetune_schedule.train_cfg
param_scheduler = _base_.finetune_schedule.param_scheduler
optim_wrapper = _base_.finetune_schedule.optim_wrapper
default_hooks = dict(checkpoint=dict(interval=_base_.finetune_iters))
