# AQD RetinaNet on the generated benchmark at 4 bits with the first layer and the prediction convs at 8 bits
# ("F8L8") instead of full precision: the integer-deployable variant (tools/deploy.py turns it into an
# integer-only model).
_base_ = './retinanet_r18-c32_fpn_aqd-w4a4_synth.py'

model = dict(quant_cfg=dict(first_layer_bits=8, last_layer_bits=8))
