# A lever on the generated benchmark (not in the AQD paper): AQD FCOS at 2 bits whose quantized residual and FPN adds
# (operands and sums) run at 8 bits. tools/analysis/quantizer_stats.py finds the 2-bit adds the most clipped tensors of
# the 2-bit model (about 20 % of an add's sum and up to 55 % of a stride-2 shortcut clipped, against under 5 % at the
# conv inputs); the adds stay integer (deployable), at 8 bits.
_base_ = '../fcos_r18-c32_fpn_aqd-w2a2_synth.py'

model = dict(quant_cfg=dict(overrides=[
    dict(pattern='backbone.layer*.add', input_quant=dict(bits=8)),
    dict(pattern='neck.top_down_adds.*', input_quant=dict(bits=8))]))
