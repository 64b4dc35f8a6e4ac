# AQD FCOS R50 at 2 bits on COCO (AQD, arXiv 2007.06919v1, Table 1: 36.0 AP; FP 38.9).
# Fine-tuned from the FP checkpoint of configs/fcos/fcos_r50_fpn_bn-head_90k_coco.py.
_base_ = './fcos_r18_fpn_aqd-w4a4_90k_coco.py'

model = dict(
    backbone=dict(depth=50),
    neck=dict(in_channels=[256, 512, 1024, 2048]),
    quant_cfg=dict(weight_quant=dict(bits=2), input_quant=dict(bits=2)))
load_from = 'work_dirs/fcos_r50_fpn_bn-head_90k_coco/iter_90000.pth'
