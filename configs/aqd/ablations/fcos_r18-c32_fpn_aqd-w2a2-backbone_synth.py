# Table 4 ablation on the generated benchmark: AQD FCOS at 2 bits quantizing only the backbone (AQD, arXiv 2007.06919v1,
# Table 4 on COCO: 33.8 AP; all of backbone, FPN and heads: 32.2; FP 33.9). The head stays full precision, as does the
# FPN; the head keeps multi-level BN.
_base_ = '../fcos_r18-c32_fpn_aqd-w4a4_synth.py'

model = dict(quant_cfg=dict(weight_quant=dict(bits=2), input_quant=dict(bits=2), scope=['backbone'], last_layers=[]))
