# Quantizer comparison on the generated benchmark (AQD, arXiv 2007.06919v1, section 4.6): AQD FCOS at 2 bits with LIQ
# replaced by LSQPlus for weights and activations, no weight normalization (LIQ's); multi-level BN head as AQD. Paper:
# AQD Table 5, ImageNet R18 2-bit top-1: LSQPlus 66.8 vs LIQ 67.4; no COCO number.
_base_ = '../fcos_r18-c32_fpn_aqd-w4a4_synth.py'

model = dict(
    quant_cfg=dict(weight_quant=dict(_delete_=True, type='LSQPlus', bits=2),
                   input_quant=dict(_delete_=True, type='LSQPlus', bits=2)))
