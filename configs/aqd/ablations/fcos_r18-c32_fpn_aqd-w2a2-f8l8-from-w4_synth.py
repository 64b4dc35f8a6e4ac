# Progressive initialisation: the 2-bit F8L8 FCOS fine-tuned from the trained 4-bit F8L8 model (stage
# aqd-w4a4-f8l8 of tools/pipeline.py) instead of the FP detector; QuantizerInitHook(reinit=True) initialises every
# quantizer range from data again for 2 bits (the loaded ranges were learned for 4). Measured in
# configs/aqd/README.md ("Where the 2-bit loss comes from").
_base_ = '../fcos_r18-c32_fpn_aqd-w2a2-f8l8_synth.py'

load_from = 'work_dirs/pipeline/aqd-w4a4-f8l8/final.pth'
custom_hooks = [dict(type='QuantizerInitHook', reinit=True)]
