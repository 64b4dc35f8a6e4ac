# AQD FCOS R50 at 2 bits on COCO from mmdet's model-zoo FCOS R50 (fcos_r50-caffe_fpn_gn-head_1x_coco): see
# fcos_r50-caffe_fpn_aqd-w4a4_90k_coco.py for the zoo settings kept and the checkpoint conversion.
_base_ = './fcos_r50-caffe_fpn_aqd-w4a4_90k_coco.py'

model = dict(quant_cfg=dict(weight_quant=dict(bits=2), input_quant=dict(bits=2)))
