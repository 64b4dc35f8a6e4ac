import hashlib
import json
import os
import os.path as osp

import numpy as np
import pytest
from pycocotools.coco import COCO

from mmaqd.datasets.synthetic_coco import CLASSES, PRESETS, SyntheticCocoSpec, generate_synthetic_coco

SMALL, LARGE = 32 ** 2, 96 ** 2


def _digest(root):
    h = hashlib.sha256()
    for dirpath, _, files in sorted(os.walk(root)):
        for name in sorted(files):
            with open(osp.join(dirpath, name), 'rb') as f:
                h.update(name.encode() + f.read())
    return h.hexdigest()


def test_deterministic_and_independent_of_count(tmp_path):
    spec = SyntheticCocoSpec(num_train=3, num_val=2, image_size=96, min_object_size=8)
    generate_synthetic_coco(str(tmp_path / 'a'), spec)
    generate_synthetic_coco(str(tmp_path / 'b'), spec)
    assert _digest(tmp_path / 'a') == _digest(tmp_path / 'b')
    # image i depends on (seed, split, i) only: a larger split starts with the same images
    bigger = SyntheticCocoSpec(num_train=5, num_val=2, image_size=96, min_object_size=8)
    generate_synthetic_coco(str(tmp_path / 'c'), bigger)
    for i in range(3):
        name = f'train/{i:06d}.jpg'
        assert (tmp_path / 'a' / name).read_bytes() == (tmp_path / 'c' / name).read_bytes()
    other_seed = SyntheticCocoSpec(num_train=3, num_val=2, image_size=96, min_object_size=8, seed=1)
    generate_synthetic_coco(str(tmp_path / 'd'), other_seed)
    assert _digest(tmp_path / 'a') != _digest(tmp_path / 'd')


def test_valid_coco_with_all_size_ranges(tmp_path):
    spec = SyntheticCocoSpec(num_train=30, num_val=5)
    generate_synthetic_coco(str(tmp_path), spec)
    coco = COCO(str(tmp_path / 'annotations' / 'instances_train.json'))
    assert [c['name'] for c in coco.loadCats(coco.getCatIds())] == list(CLASSES)
    assert len(coco.getImgIds()) == 30
    areas = []
    for ann in coco.loadAnns(coco.getAnnIds()):
        img = coco.loadImgs(ann['image_id'])[0]
        x, y, w, h = ann['bbox']
        assert w > 0 and h > 0 and x >= 0 and y >= 0
        assert x + w <= img['width'] and y + h <= img['height']
        assert 0 < ann['area'] <= w * h
        areas.append(ann['area'])
    areas = np.array(areas)
    # every COCO size bucket is present in substantial numbers
    assert (areas < SMALL).mean() > 0.2
    assert ((areas >= SMALL) & (areas < LARGE)).mean() > 0.2
    assert (areas >= LARGE).mean() > 0.05
    # every class occurs
    assert {ann['category_id'] for ann in coco.loadAnns(coco.getAnnIds())} == set(range(1, len(CLASSES) + 1))


def test_tiny_preset_loads(tiny_coco):
    for split, n in (('train', PRESETS['tiny'].num_train), ('val', PRESETS['tiny'].num_val)):
        coco = COCO(osp.join(tiny_coco, 'annotations', f'instances_{split}.json'))
        assert len(coco.getImgIds()) == n
        assert all(osp.isfile(osp.join(tiny_coco, split, im['file_name'])) for im in coco.loadImgs(coco.getImgIds()))


def test_regenerate_is_noop_and_foreign_data_is_refused(tmp_path):
    spec = SyntheticCocoSpec(num_train=2, num_val=1, image_size=64, min_object_size=8)
    assert generate_synthetic_coco(str(tmp_path), spec) is True
    assert generate_synthetic_coco(str(tmp_path), spec) is False
    other = SyntheticCocoSpec(num_train=2, num_val=1, image_size=64, min_object_size=8, seed=7)
    with pytest.raises(FileExistsError, match='force'):
        generate_synthetic_coco(str(tmp_path), other)
    user_file = tmp_path / 'annotations' / 'instances_train.json'
    user_file.write_text(json.dumps({'images': []}))
    with pytest.raises(FileExistsError, match='instances_train.json'):
        generate_synthetic_coco(str(tmp_path), spec)
    assert json.loads(user_file.read_text()) == {'images': []}  # the user's file is untouched
    assert generate_synthetic_coco(str(tmp_path), other, force=True) is True


@pytest.mark.parametrize('kwargs, match', [
    (dict(num_train=-1), 'num_train=-1'),
    (dict(num_val=-5), 'num_val=-5'),
    (dict(image_size=10, min_object_size=12), 'image_size=10'),
    (dict(min_object_size=2), 'min_object_size=2'),
    (dict(max_object_size=500), 'max_object_size=500'),
    (dict(objects_per_image=(3, 1)), 'objects_per_image'),
    (dict(max_iou=1.5), 'max_iou=1.5'),
])
def test_invalid_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SyntheticCocoSpec(**kwargs)
