# AQD FCOS on the generated benchmark at 2 bits (the recipe of fcos_r18_fpn_aqd-w2a2_90k_coco.py).
_base_ = './fcos_r18-c32_fpn_aqd-w4a4_synth.py'

model = dict(quant_cfg=dict(weight_quant=dict(bits=2), input_quant=dict(bits=2)))
