# Table 3 ablation on COCO: AQD FCOS at 2 bits with one BN shared by all FPN levels in the head instead of
# multi-level BN (AQD, arXiv 2007.06919v1, Table 3: 29.4 AP shared vs 32.2 multi-level).
_base_ = '../fcos_r18_fpn_aqd-w4a4_90k_coco.py'

model = dict(bbox_head=dict(multi_level_norm=False),
             quant_cfg=dict(weight_quant=dict(bits=2), input_quant=dict(bits=2)))
