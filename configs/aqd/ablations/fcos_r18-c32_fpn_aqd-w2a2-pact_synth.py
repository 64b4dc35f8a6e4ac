# Quantizer comparison on the generated benchmark (AQD, arXiv 2007.06919v1, section 4.6): AQD FCOS at 2 bits with LIQ
# replaced by PACT for weights and activations, no weight normalization (LIQ's); multi-level BN head as AQD. Paper: AQD
# Table 5, ImageNet R18 2-bit top-1: PACT 64.4 vs LIQ 67.4; no COCO number. PACT has no weight quantizer of its own: its
# weight mode is DoReFa's (mmaqd.quantization.quantizers.pact).
_base_ = '../fcos_r18-c32_fpn_aqd-w4a4_synth.py'

model = dict(
    quant_cfg=dict(weight_quant=dict(_delete_=True, type='PACT', bits=2),
                   input_quant=dict(_delete_=True, type='PACT', bits=2)))
