# Auxi 4-bit RetinaNet R50 (AQD, arXiv 2007.06919v1, Table 2); see retinanet_r18_fpn_auxi-w4a4_90k_coco.py for the
# method. Initialised from the full-precision configs/retinanet/retinanet_r50_fpn_bn-head_90k_coco.py. The auxiliary
# FPN copies the main FPN cfg, so its in_channels (and the adaptors') follow the R50 stages.
_base_ = './retinanet_r18_fpn_auxi-w4a4_90k_coco.py'

model = dict(
    backbone=dict(depth=50, init_cfg=dict(type='Pretrained', checkpoint='torchvision://resnet50')),
    neck=dict(in_channels=[256, 512, 1024, 2048]))

load_from = 'work_dirs/retinanet_r50_fpn_bn-head_90k_coco/iter_90000.pth'
