# AQD FCOS w4a4-f8l8 on the generated benchmark with zero-level LIQ grids (`zero_level=True`): signed weights
# and activations on the symmetric grid alpha * j / m (j in -m..m, m = 2^(k-1) - 1) that holds an exact zero, the
# grid that standard int8 runtimes (ONNX QuantizeLinear / QLinearConv with zero point 0) represent exactly. Export:
# `tools/deploy.py CONFIG CKPT --format onnx`. Its AP cost against the default grid: configs/aqd/README.md.
_base_ = './fcos_r18-c32_fpn_aqd-w4a4-f8l8_synth.py'

model = dict(quant_cfg=dict(weight_quant=dict(zero_level=True), input_quant=dict(zero_level=True)))
