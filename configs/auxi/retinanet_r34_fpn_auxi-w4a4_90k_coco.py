# Auxi 4-bit RetinaNet R34 (AQD, arXiv 2007.06919v1, Table 2); see retinanet_r18_fpn_auxi-w4a4_90k_coco.py for the
# method. Initialised from the full-precision configs/retinanet/retinanet_r34_fpn_bn-head_90k_coco.py.
_base_ = './retinanet_r18_fpn_auxi-w4a4_90k_coco.py'

model = dict(
    backbone=dict(depth=34, init_cfg=dict(type='Pretrained', checkpoint='torchvision://resnet34')))

load_from = 'work_dirs/retinanet_r34_fpn_bn-head_90k_coco/iter_90000.pth'
