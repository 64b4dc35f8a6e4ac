# AQD FCOS R50 at 4 bits on COCO, fine-tuned from mmdet's model-zoo FCOS R50 with the FCOS improvements that the AQD
# recipe uses (fcos_r50-caffe_fpn_gn-head-center-normbbox-centeronreg-giou_1x_coco, 38.7 AP: center sampling,
# normalized box distances, centerness on the regression tower, GIoU loss, NMS IoU 0.6; the head settings of
# fcos_r50_fpn_aqd-w4a4_90k_coco.py). From the zoo model it keeps what its weights assume: a caffe-style ResNet-50
# with frozen BNs (see fcos_r50-caffe_fpn_aqd-w4a4_90k_coco.py) and detectron2's caffe normalization (BGR, mean
# 103.53 / 116.28 / 123.675, std 1). The zoo head's GroupNorms and tower-conv biases are dropped; AQD's per-level
# head BNs start fresh. Write the start checkpoint with:
#   python tools/model_converters/mmdet_to_aqd.py \
#       fcos_center-normbbox-centeronreg-giou_r50_caffe_fpn_gn-head_1x_coco-0a0d75a8.pth \
#       work_dirs/zoo/fcos_r50-caffe_fpn_gn-head-giou_aqd-init.pth \
#       --config configs/aqd/fcos_r50-caffe_fpn_aqd-w4a4-giou_90k_coco.py
_base_ = './fcos_r50_fpn_aqd-w4a4_90k_coco.py'

model = dict(
    data_preprocessor=dict(mean=[103.530, 116.280, 123.675], std=[1.0, 1.0, 1.0], bgr_to_rgb=False),
    backbone=dict(style='caffe', norm_cfg=dict(type='BN', requires_grad=False), norm_eval=True, frozen_stages=1))

load_from = 'work_dirs/zoo/fcos_r50-caffe_fpn_gn-head-giou_aqd-init.pth'
load_from_strict = False
