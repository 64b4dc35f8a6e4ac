# FQN RetinaNet R34 at 4 bits on COCO (FQN, Li et al., CVPR 2019, Table 1a R34-INT4 / AQD (arXiv 2007.06919v1) Table 2:
# 31.3 AP); recipe and schedule of retinanet_r18_fpn_fqn-w4a4_80k_coco.py, from the FP checkpoint of
# retinanet_r34_fpn_bn-head_90k_coco.py.
_base_ = './retinanet_r18_fpn_fqn-w4a4_80k_coco.py'

model = dict(backbone=dict(depth=34))
load_from = 'work_dirs/retinanet_r34_fpn_bn-head_90k_coco/iter_90000.pth'
