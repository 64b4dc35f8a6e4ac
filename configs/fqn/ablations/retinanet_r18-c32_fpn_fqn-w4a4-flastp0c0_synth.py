# FQN (Li et al., CVPR 2019) Table 3, 4 bits without F (paper: 22.6 AP vs 23.6 with F, ~Table 2a row 2): BN folded with
# batch statistics (eq. 11-12) and frozen only for the last quarter of the fine-tune (FQN: the final 10k of 40k steps,
# as in the quantization whitepaper, Krishnamoorthi, arXiv 1806.08342); min / max activation ranges, per-tensor weights
# (the baseline of Tables 2a row 1-2 and 3). Compare with ablations/retinanet_r18-c32_fpn_fqn-w4a4-f1p0c0_synth.py.
_base_ = '../retinanet_r18-c32_fpn_fqn-w4a4_synth.py'

model = dict(quant_cfg=dict(freeze_bn=False, input_quant=dict(percentile=1.0), weight_quant=dict(per_channel=False)))
custom_hooks = [
    dict(type='PercentileCalibrationHook', num_batches=20),
    dict(type='FreezeBNHook', start_iter=int(_base_.finetune_iters * 3 / 4)),
]
