# FQN (Li et al., CVPR 2019) with its prediction layers at 8 bits: the FQN recipe (F, P and C, everything else at 4
# bits) but retina_cls and retina_reg take 8-bit inputs and weights and quantize their outputs at 8 bits (an output
# quantizer uses the layer's input cfg). Not in the FQN paper: the row that measures how much of FQN's loss on the
# generated benchmark comes from its 4-bit prediction outputs (FQN section 3.4), which AQD keeps full precision.
_base_ = '../retinanet_r18-c32_fpn_fqn-w4a4_synth.py'

model = dict(quant_cfg=dict(last_layers=['bbox_head.retina_cls', 'bbox_head.retina_reg'], last_layer_bits=8))
