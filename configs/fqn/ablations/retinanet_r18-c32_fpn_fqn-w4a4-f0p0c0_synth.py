# FQN (Li et al., CVPR 2019) Table 2a row 1 (paper: 19.7 AP on COCO, R18 4-bit): no F: BN folded with batch statistics,
# EMA updated (eq. 11-12, Jacob et al.); no P: activation ranges from the min / max (percentile 1.0); no C: per-tensor
# weights. The ranges of rows without P are still calibrated once on 20 batches (mean of per-batch min / max), not
# tracked by an EMA during training as in Jacob et al. (see configs/fqn/README.md).
_base_ = '../retinanet_r18-c32_fpn_fqn-w4a4_synth.py'

model = dict(quant_cfg=dict(freeze_bn=False, input_quant=dict(percentile=1.0), weight_quant=dict(per_channel=False)))
