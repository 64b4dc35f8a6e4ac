# AQD FCOS at 2 bits with the residual and FPN adds left in full precision, as the AQD authors' public code did
# (arXiv 2007.06919v1 leaves this unsaid; this repository quantizes them by default, quantize_adds=True). Not
# integer-only: the float adds sit between integer convs. Measures what quantizing the adds costs at 2 bits.
_base_ = '../fcos_r18-c32_fpn_aqd-w2a2_synth.py'

model = dict(quant_cfg=dict(quantize_adds=False))
