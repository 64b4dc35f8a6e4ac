"""CheckedCocoDataset (the repo's dataset configs): a broken annotation file is named, and missing or empty
image files stop the run when the dataset is built, not at the iteration that first samples them."""
import json
import os.path as osp
import shutil

import pytest
from mmengine.config import Config
from mmengine.registry import init_default_scope

from conftest import ROOT

CONFIGS = ['configs/fcos/fcos_r18-c32_fpn_bn-head_synth.py', 'configs/aqd/fcos_r18-c32_fpn_aqd-w4a4_synth.py']


@pytest.fixture
def data_copy(tiny_coco, tmp_path):
    root = tmp_path / 'data'
    shutil.copytree(tiny_coco, root)
    return root


def _build(root, config=CONFIGS[0], **options):
    from mmdet.registry import DATASETS

    import mmaqd  # noqa: F401  (registers the dataset)
    init_default_scope('mmdet')
    cfg = Config.fromfile(osp.join(ROOT, config)).train_dataloader.dataset
    cfg.data_root = str(root).rstrip('/') + '/'
    cfg.update(options)
    return DATASETS.build(cfg)


@pytest.mark.parametrize('config', CONFIGS)
def test_configs_use_the_checked_dataset(config, data_copy):
    cfg = Config.fromfile(osp.join(ROOT, config))
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        assert cfg[loader].dataset.type == 'CheckedCocoDataset'
    assert len(_build(data_copy, config)) == 8


@pytest.mark.parametrize('config', ['configs/fcos/fcos_r18_fpn_bn-head_90k_coco.py',
                                    'configs/retinanet/retinanet_r50_fpn_bn-head_90k_coco.py'])
def test_coco_configs_use_the_checked_dataset(config):
    cfg = Config.fromfile(osp.join(ROOT, config))
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        assert cfg[loader].dataset.type == 'CheckedCocoDataset'
    assert cfg.train_dataloader.dataset.ann_file == 'annotations/instances_train2017.json'


def test_truncated_annotation_file_is_named(data_copy):
    ann = data_copy / 'annotations' / 'instances_train.json'
    text = ann.read_text()
    ann.write_text(text[:len(text) // 2])
    with pytest.raises(ValueError) as info:
        _build(data_copy)
    msg = str(info.value)
    assert str(ann) in msg and 'not valid JSON' in msg and 'truncated' in msg


def test_missing_and_empty_images_are_counted_and_named(data_copy):
    (data_copy / 'train' / '000003.jpg').unlink()
    (data_copy / 'train' / '000005.jpg').write_bytes(b'')
    with pytest.raises(FileNotFoundError) as info:
        _build(data_copy)
    msg = str(info.value)
    assert '2 of 8 images' in msg and 'instances_train.json' in msg
    assert f"{data_copy / 'train' / '000003.jpg'} (missing)" in msg
    assert f"{data_copy / 'train' / '000005.jpg'} (empty file)" in msg
    assert 'check_images=False' in msg  # the way to turn it off
    # turned off, the dataset builds (the run would fail only when it samples a bad image)
    assert len(_build(data_copy, check_images=False)) == 8


def test_many_bad_images_show_the_first_few(data_copy):
    ann = data_copy / 'annotations' / 'instances_train.json'
    coco = json.loads(ann.read_text())
    for im in coco['images']:
        im['file_name'] = 'elsewhere/' + im['file_name']
    ann.write_text(json.dumps(coco))
    with pytest.raises(FileNotFoundError, match=r'8 of 8 images[\s\S]*and 3 more'):
        _build(data_copy)


def test_check_images_must_be_a_bool(data_copy):
    with pytest.raises(TypeError, match="check_images must be True or False, got 'no'"):
        _build(data_copy, check_images='no')
