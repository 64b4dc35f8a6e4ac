# FQN RetinaNet R50 at 4 bits on COCO (FQN, Li et al., CVPR 2019, Table 1a R50-INT4 / AQD (arXiv 2007.06919v1) Table 2:
# 32.5 AP); recipe and schedule of retinanet_r18_fpn_fqn-w4a4_80k_coco.py, from the FP checkpoint of
# retinanet_r50_fpn_bn-head_90k_coco.py.
_base_ = './retinanet_r18_fpn_fqn-w4a4_80k_coco.py'

model = dict(backbone=dict(depth=50), neck=dict(in_channels=[256, 512, 1024, 2048]))
load_from = 'work_dirs/retinanet_r50_fpn_bn-head_90k_coco/iter_90000.pth'
