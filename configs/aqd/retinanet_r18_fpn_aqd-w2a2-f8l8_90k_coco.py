# AQD RetinaNet R18 at 2 bits on COCO with the first layer and the prediction convs at 8 bits
# ("F8L8", the public AQD code's later configs) instead of full precision (paper).
_base_ = './retinanet_r18_fpn_aqd-w4a4_90k_coco.py'

model = dict(quant_cfg=dict(weight_quant=dict(bits=2), input_quant=dict(bits=2), first_layer_bits=8, last_layer_bits=8))
