_base_ = './retinanet_r18_fpn_bn-head_90k_coco.py'

model = dict(
    backbone=dict(depth=34, init_cfg=dict(type='Pretrained', checkpoint='torchvision://resnet34')))
