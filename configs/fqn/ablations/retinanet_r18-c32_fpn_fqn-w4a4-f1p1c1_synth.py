# FQN (Li et al., CVPR 2019) Table 2a row 8 (paper: 28.6 AP on COCO, R18 4-bit): F: BN folded with frozen EMA statistics
# (eq. 13-14); P: activation ranges from the 0.1% / 99.9% percentiles; C: per-channel weights.
# The full FQN recipe: identical to ../retinanet_r18-c32_fpn_fqn-w4a4_synth.py, here to complete the table.
_base_ = '../retinanet_r18-c32_fpn_fqn-w4a4_synth.py'
