# AQD RetinaNet R18 at 2 bits on COCO (AQD, arXiv 2007.06919v1, Table 2: 31.0 AP; FP 32.3).
_base_ = './retinanet_r18_fpn_aqd-w4a4_90k_coco.py'

model = dict(quant_cfg=dict(weight_quant=dict(bits=2), input_quant=dict(bits=2)))
