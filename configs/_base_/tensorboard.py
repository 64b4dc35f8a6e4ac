# Opt-in TensorBoard logging with each quantizer's range and clipped share (mmaqd.engine.hooks.QuantizerHealthHook:
# `quant/<layer>.alpha`, `quant/<layer>.clip`, ... every logging interval, nothing on the other iterations), beside
# the losses and learning rates. Needs `pip install tensorboard`; then `tensorboard --logdir work_dirs/NAME`.
# Every full config already defines `visualizer` (mmdet's runtime), and mmengine refuses a key that two bases both
# define, so this fragment defines one new key for a config to copy from (as aqd/_base_/schedule_synth_finetune.py):
#
#     _base_ = ['./fcos_r18-c32_fpn_aqd-w4a4_synth.py', '../_base_/tensorboard.py']
#     visualizer = _base_.tensorboard.visualizer
#     default_hooks = _base_.tensorboard.default_hooks
#
# (a config's `visualizer` / `default_hooks` dicts merge into its bases', so everything else stays as it was).
tensorboard = dict(
    visualizer=dict(vis_backends=[dict(type='LocalVisBackend'), dict(type='TensorboardVisBackend')]),
    default_hooks=dict(quantizer_health=dict(type='QuantizerHealthHook')))
