# FQN (Li et al., CVPR 2019) Table 2a row 4 (paper: 25.0 AP on COCO, R18 4-bit): no F: BN folded with batch statistics,
# EMA updated (eq. 11-12, Jacob et al.); no P: activation ranges from the min / max (percentile 1.0); C: per-channel
# weights.
_base_ = '../retinanet_r18-c32_fpn_fqn-w4a4_synth.py'

model = dict(quant_cfg=dict(freeze_bn=False, input_quant=dict(percentile=1.0)))
