# AQD FCOS R50 at 4 bits on COCO, fine-tuned from mmdet's model-zoo FCOS R50 (fcos_r50-caffe_fpn_gn-head_1x_coco,
# 36.6 AP) instead of an FP run of configs/fcos/: the recipe of fcos_r50_fpn_aqd-w4a4_90k_coco.py (multi-level BN
# head, LIQ at 4 bits, adds quantized, first layer and prediction convs FP, the paper's schedule) with every model
# setting that the zoo's weights assume and that state-dict keys do not show:
#   backbone  caffe-style ResNet-50 (stride on the first 1x1 conv of a block), BNs frozen as the zoo trained them
#             (BN with requires_grad=False, norm_eval=True, stage 1 frozen);
#   input     caffe normalization: BGR (bgr_to_rgb=False), mean 102.9801 / 115.9465 / 122.7717, std 1;
#   head      the zoo's FCOS outputs: exp() box distances (norm_on_bbox=False), centerness on the classification
#             tower (centerness_on_reg=False); its targets, loss and NMS (no center sampling, IoU loss, NMS IoU 0.5).
# The head keeps AQD's conv -> BN -> ReLU with one BN per FPN level instead of the zoo's GroupNorm, so its norms
# cannot come from the zoo and start fresh (gamma 1, beta 0); everything else is loaded. Write the start checkpoint
# with the converter (it maps backbone, FPN, head conv weights, prediction convs and scales, drops the head
# GroupNorms, and refuses a checkpoint whose style or normalization differ from this config):
#   python tools/model_converters/mmdet_to_aqd.py fcos_r50_caffe_fpn_gn-head_1x_coco-821213aa.pth \
#       work_dirs/zoo/fcos_r50-caffe_fpn_gn-head_aqd-init.pth \
#       --config configs/aqd/fcos_r50-caffe_fpn_aqd-w4a4_90k_coco.py
# The head BNs are not in that checkpoint: load_from_strict = False lets it load (they are logged as a warning).
# The zoo model with AQD's own FCOS improvements (center sampling, normalized boxes, centerness on the regression
# tower, GIoU) is fcos_r50-caffe_fpn_aqd-w4a4-giou_90k_coco.py.
_base_ = './fcos_r50_fpn_aqd-w4a4_90k_coco.py'

model = dict(
    data_preprocessor=dict(mean=[102.9801, 115.9465, 122.7717], std=[1.0, 1.0, 1.0], bgr_to_rgb=False),
    backbone=dict(style='caffe', norm_cfg=dict(type='BN', requires_grad=False), norm_eval=True, frozen_stages=1),
    bbox_head=dict(
        norm_on_bbox=False,
        centerness_on_reg=False,
        center_sampling=False,
        loss_bbox=dict(type='IoULoss', loss_weight=1.0)),
    test_cfg=dict(nms=dict(type='nms', iou_threshold=0.5)))

load_from = 'work_dirs/zoo/fcos_r50-caffe_fpn_gn-head_aqd-init.pth'
load_from_strict = False
