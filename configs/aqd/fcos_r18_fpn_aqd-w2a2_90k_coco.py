# AQD FCOS R18 at 2 bits on COCO (AQD, arXiv 2007.06919v1, Table 1: 32.2 AP; FP 33.9).
_base_ = './fcos_r18_fpn_aqd-w4a4_90k_coco.py'

model = dict(quant_cfg=dict(weight_quant=dict(bits=2), input_quant=dict(bits=2)))
