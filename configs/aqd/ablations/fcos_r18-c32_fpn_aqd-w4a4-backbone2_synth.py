# Sensitivity on the generated benchmark (not in the AQD paper): AQD FCOS at 4 bits with one part, the backbone,
# at 2 bits (its weights, inputs and quantized adds; quant_cfg.overrides), the rest of the 4-bit recipe unchanged
# (first layer and prediction convs full precision). Read beside fcos_r18-c32_fpn_aqd-w4a4_synth.py and
# -w2a2_synth.py: which part's 2 bits cost the most (configs/aqd/README.md, "Where the 2-bit loss comes from").
_base_ = '../fcos_r18-c32_fpn_aqd-w4a4_synth.py'

model = dict(quant_cfg=dict(overrides=[
    dict(pattern='backbone.*', weight_quant=dict(bits=2), input_quant=dict(bits=2))]))
