# AQD FCOS R34 at 2 bits on COCO (AQD, arXiv 2007.06919v1, Table 1: 35.7 AP; FP 38.0).
# Fine-tuned from the FP checkpoint of configs/fcos/fcos_r34_fpn_bn-head_90k_coco.py.
_base_ = './fcos_r18_fpn_aqd-w4a4_90k_coco.py'

model = dict(
    backbone=dict(depth=34),
    quant_cfg=dict(weight_quant=dict(bits=2), input_quant=dict(bits=2)))
load_from = 'work_dirs/fcos_r34_fpn_bn-head_90k_coco/iter_90000.pth'
