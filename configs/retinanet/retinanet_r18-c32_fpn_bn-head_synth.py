# The full-precision benchmark RETINANET on the generated dataset, sized to train on a 2-core CPU in
# under 15 minutes. Reduced from the COCO recipe (retinanet_r18_fpn_bn-head_90k_coco.py): 256x256 images,
# ResNet-18 at half width (32 stem channels, no ImageNet weights), 64-channel FPN and head, BN instead of
# SyncBN, 6 classes, the CPU schedule of _base_/schedules/schedule_synth.py. See configs/retinanet/README.md.
_base_ = [
    '../_base_/models/retinanet_r18_fpn_bn-head.py',
    '../_base_/datasets/synth_coco.py',
    '../_base_/schedules/schedule_synth.py',
    '../_base_/default_runtime.py',
]
norm_cfg = dict(type='BN', requires_grad=True)
model = dict(
    backbone=dict(base_channels=32, frozen_stages=-1, norm_cfg=norm_cfg, init_cfg=None),
    neck=dict(in_channels=[32, 64, 128, 256], out_channels=64),
    bbox_head=dict(num_classes=6, in_channels=64, feat_channels=64, norm_cfg=norm_cfg))
default_hooks = dict(checkpoint=dict(interval=500))
