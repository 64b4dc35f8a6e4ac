# AQD RetinaNet R50 at 3 bits on COCO (AQD, arXiv 2007.06919v1, Table 2: 37.2 AP; FP 37.8).
# Fine-tuned from the FP checkpoint of configs/retinanet/retinanet_r50_fpn_bn-head_90k_coco.py.
_base_ = './retinanet_r18_fpn_aqd-w4a4_90k_coco.py'

model = dict(
    backbone=dict(depth=50),
    neck=dict(in_channels=[256, 512, 1024, 2048]),
    quant_cfg=dict(weight_quant=dict(bits=3), input_quant=dict(bits=3)))
load_from = 'work_dirs/retinanet_r50_fpn_bn-head_90k_coco/iter_90000.pth'
