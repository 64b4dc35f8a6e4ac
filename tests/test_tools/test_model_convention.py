"""What weights assume beyond their keys (mmaqd_tools.model_convention, tools/), read from configs and checkpoint text
(mmaqd_tools.config_text) without running it."""
import os.path as osp

import pytest
from mmengine.config import Config

from conftest import ROOT
from mmaqd_tools.config_text import Opaque, checkpoint_config, literal_config
from mmaqd_tools.model_convention import (ConventionMismatchError, check_convention, convention_mismatches, describe,
                                          model_convention)

MMDET_FCOS = osp.join(osp.dirname(__import__('mmdet').__file__), '.mim', 'configs', 'fcos')
ZOO = osp.join(MMDET_FCOS, 'fcos_r50-caffe_fpn_gn-head_1x_coco.py')
ZOO_GIOU = osp.join(MMDET_FCOS, 'fcos_r50-caffe_fpn_gn-head-center-normbbox-centeronreg-giou_1x_coco.py')
AQD_R50 = osp.join(ROOT, 'configs/aqd/fcos_r50_fpn_aqd-w4a4_90k_coco.py')
AQD_R50_CAFFE = osp.join(ROOT, 'configs/aqd/fcos_r50-caffe_fpn_aqd-w4a4_90k_coco.py')
CAFFE_MEAN = (102.9801, 115.9465, 122.7717)

# what mmdet 2.x (mmcv's pretty_text) stored in meta['config'] for the zoo's FCOS R50: no data_preprocessor, the
# normalization in img_norm_cfg and in the pipelines' Normalize step
MMDET2_TEXT = """
img_norm_cfg = dict(mean=[102.9801, 115.9465, 122.7717], std=[1.0, 1.0, 1.0], to_rgb=False)
model = dict(
    type='FCOS',
    backbone=dict(type='ResNet', depth=50, num_stages=4, out_indices=(0, 1, 2, 3), frozen_stages=1,
                  norm_cfg=dict(type='BN', requires_grad=False), norm_eval=True, style='caffe',
                  init_cfg=dict(type='Pretrained', checkpoint='open-mmlab://detectron/resnet50_caffe')),
    bbox_head=dict(type='FCOSHead', num_classes=80, in_channels=256, stacked_convs=4,
                   norm_cfg=dict(type='GN', num_groups=32, requires_grad=True)))
data = dict(test=dict(type='CocoDataset', pipeline=[
    dict(type='LoadImageFromFile'),
    dict(type='MultiScaleFlipAug', img_scale=(1333, 800), flip=False, transforms=[
        dict(type='Resize', keep_ratio=True),
        dict(type='Normalize', mean=[102.9801, 115.9465, 122.7717], std=[1.0, 1.0, 1.0], to_rgb=False)])]))
lr_config = dict(policy='step', warmup_ratio=1.0 / 3, step=[8, 11])
"""


def test_literal_config_reads_literals_and_runs_nothing(tmp_path):
    marker = tmp_path / 'ran'
    text = (f"import os\nx = os.system('touch {marker}')\nbase = dict(a=1, b=[1, -2.5, (3, 4)])\n"
            f"model = dict(type=__import__('os').getcwd(), depth=2 * 25, cfg=dict(**base, c=None), d={{'k': base}})\n"
            "open('x', 'w').write('y')\n")
    cfg = literal_config(text)
    assert not marker.exists()
    assert isinstance(cfg['x'], Opaque) and isinstance(cfg['model']['type'], Opaque)
    assert cfg['model']['depth'] == 50 and cfg['model']['cfg'] == dict(a=1, b=[1, -2.5, (3, 4)], c=None)
    assert cfg['model']['d'] == {'k': cfg['base']}
    with pytest.raises(ValueError, match='line 1'):
        literal_config('model = dict(')


def test_checkpoint_config_reads_mmengine_then_mmcv_meta():
    assert checkpoint_config({}) == (None, None) and checkpoint_config(None) == (None, None)
    cfg, where = checkpoint_config({'cfg': "model = dict(type='FCOS')", 'config': 'model = 1'})
    assert cfg['model'] == dict(type='FCOS') and where == "meta['cfg']"
    cfg, where = checkpoint_config({'config': MMDET2_TEXT})
    assert where == "meta['config']" and cfg['lr_config']['warmup_ratio'] == pytest.approx(1 / 3)


def test_conventions_of_the_zoo_and_the_aqd_configs():
    zoo, aqd, caffe = (model_convention(Config.fromfile(p)) for p in (ZOO, AQD_R50, AQD_R50_CAFFE))
    assert zoo == dict(**{'backbone.style': 'caffe', 'data_preprocessor.mean': CAFFE_MEAN,
                          'data_preprocessor.std': (1.0, 1.0, 1.0), 'data_preprocessor.bgr_to_rgb': False,
                          'bbox_head.norm_on_bbox': False, 'bbox_head.centerness_on_reg': False})
    assert aqd['backbone.style'] == 'pytorch' and aqd['data_preprocessor.bgr_to_rgb'] is True
    assert caffe == zoo  # the shipped caffe config matches the zoo model it starts from
    giou = osp.join(ROOT, 'configs/aqd/fcos_r50-caffe_fpn_aqd-w4a4-giou_90k_coco.py')
    assert model_convention(Config.fromfile(ZOO_GIOU)) == model_convention(Config.fromfile(giou))
    # the embedded text of a checkpoint reads like the config file: mmengine's pretty_text and mmdet 2.x's layout
    assert model_convention(literal_config(Config.fromfile(ZOO).pretty_text)) == zoo
    assert model_convention(literal_config(MMDET2_TEXT)) == zoo  # FCOSHead's defaults: both flags False
    # ResNet-18/34 blocks ignore the style: not part of their convention
    r18 = model_convention(Config.fromfile(osp.join(ROOT, 'configs/aqd/fcos_r18_fpn_aqd-w4a4_90k_coco.py')))
    assert 'backbone.style' not in r18 and 'data_preprocessor.mean' in r18


def test_check_convention_names_both_sides():
    zoo, aqd = model_convention(Config.fromfile(ZOO)), model_convention(Config.fromfile(AQD_R50))
    with pytest.raises(ConventionMismatchError) as e:
        check_convention(zoo, aqd, 'the checkpoint', 'aqd.py', hint='use another config')
    text = str(e.value)
    for key in ('backbone.style', 'data_preprocessor.mean', 'data_preprocessor.std', 'data_preprocessor.bgr_to_rgb',
                'bbox_head.norm_on_bbox', 'bbox_head.centerness_on_reg'):
        assert key in text
    assert "'caffe' in the checkpoint, 'pytorch' in aqd.py" in text
    assert '[102.98, 115.947, 122.772] in the checkpoint, [123.675, 116.28, 103.53] in aqd.py' in text
    assert text.endswith('use another config')
    # equal up to rounding is equal; a setting read on one side only is reported as not compared
    rounded = dict(zoo, **{'data_preprocessor.mean': (102.98, 115.9465, 122.7717)})
    rounded.pop('bbox_head.norm_on_bbox')
    assert check_convention(zoo, rounded, 'a', 'b') == ['bbox_head.norm_on_bbox']
    assert convention_mismatches(zoo, zoo) == ([], [])
    assert describe({}) == 'nothing readable' and "backbone.style='caffe'" in describe(zoo)
