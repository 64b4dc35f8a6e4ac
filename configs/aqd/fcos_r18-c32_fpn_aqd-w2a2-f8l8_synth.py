# AQD FCOS on the generated benchmark at 2 bits with the first layer and the prediction convs at 8 bits
# ("F8L8") instead of full precision.
_base_ = './fcos_r18-c32_fpn_aqd-w4a4_synth.py'

model = dict(quant_cfg=dict(weight_quant=dict(bits=2), input_quant=dict(bits=2), first_layer_bits=8, last_layer_bits=8))
