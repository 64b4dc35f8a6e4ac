# FQN (Li et al., CVPR 2019) Table 2a row 5 (paper: 25.4 AP on COCO, R18 4-bit): F: BN folded with frozen EMA statistics
# (eq. 13-14); P: activation ranges from the 0.1% / 99.9% percentiles; no C: per-tensor weights.
_base_ = '../retinanet_r18-c32_fpn_fqn-w4a4_synth.py'

model = dict(quant_cfg=dict(weight_quant=dict(per_channel=False)))
