# FQN (Li et al., CVPR 2019) Table 2a row 2 (paper: 23.5 AP on COCO, R18 4-bit): F: BN folded with frozen EMA statistics
# (eq. 13-14); no P: activation ranges from the min / max (percentile 1.0); no C: per-tensor weights.
_base_ = '../retinanet_r18-c32_fpn_fqn-w4a4_synth.py'

model = dict(quant_cfg=dict(input_quant=dict(percentile=1.0), weight_quant=dict(per_channel=False)))
