# Table 4 ablation on COCO: AQD FCOS at 2 bits quantizing only the backbone and the FPN (AQD, arXiv 2007.06919v1,
# Table 4: 33.2 AP; all of backbone, FPN and heads: 32.2; FP 33.9). The head stays full precision and multi-level BN.
_base_ = '../fcos_r18_fpn_aqd-w4a4_90k_coco.py'

model = dict(quant_cfg=dict(weight_quant=dict(bits=2), input_quant=dict(bits=2), scope=['backbone', 'neck'],
                            last_layers=[]))
