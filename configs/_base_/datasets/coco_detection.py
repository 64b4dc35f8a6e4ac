# mmdet's COCO 2017 detection data, read with mmaqd's CheckedCocoDataset: a broken annotation file is named, and
# every image file is looked up before training starts (check_images=False turns that off).
_base_ = 'mmdet::_base_/datasets/coco_detection.py'

train_dataloader = dict(dataset=dict(type='CheckedCocoDataset'))
val_dataloader = dict(dataset=dict(type='CheckedCocoDataset'))
test_dataloader = dict(dataset=dict(type='CheckedCocoDataset'))
