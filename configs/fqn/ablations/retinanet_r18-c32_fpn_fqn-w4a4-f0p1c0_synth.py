# FQN (Li et al., CVPR 2019) Table 2a row 3 (paper: 22.2 AP on COCO, R18 4-bit): no F: BN folded with batch statistics,
# EMA updated (eq. 11-12, Jacob et al.); P: activation ranges from the 0.1% / 99.9% percentiles; no C: per-tensor
# weights.
_base_ = '../retinanet_r18-c32_fpn_fqn-w4a4_synth.py'

model = dict(quant_cfg=dict(freeze_bn=False, weight_quant=dict(per_channel=False)))
