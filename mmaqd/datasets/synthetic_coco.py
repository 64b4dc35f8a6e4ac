"""A seeded generator of a COCO-format detection dataset that exists on every machine.

Each image is a cluttered, noisy background with several objects of ``CLASSES``; a class is a shape with its own
texture family and hue (saturation and brightness jitter), so a detector can use all three; background
distractors (blobs, lines) take any texture and colour. Object sizes are drawn from COCO's small
(area < 32^2), medium and large (area > 96^2) buckets in equal parts (:func:`size_buckets`), so that every FPN
level of a one-stage detector has targets. Objects may overlap (partial occlusion, bounded IoU) and the background holds
distractors (blobs, lines, rings of random texture) that are not objects.

Determinism: image ``i`` of a split is drawn from ``numpy.random.default_rng([seed, split_id, i])`` alone, so the
same arguments always write the same bytes, whatever the number of images.

Output layout (mmdet's ``CocoDataset`` reads it as is)::

    <out_dir>/train/000000.jpg ...      <out_dir>/annotations/instances_train.json
    <out_dir>/val/000000.jpg ...        <out_dir>/annotations/instances_val.json
"""
import json
import math
import os
import os.path as osp
from dataclasses import asdict, dataclass
from typing import Dict, List, Optional, Tuple

import cv2
import numpy as np

CLASSES = ('circle', 'square', 'triangle', 'cross', 'ring', 'star')
SPLIT_IDS = {'train': 0, 'val': 1}
MAX_TRIES = 50  # placement attempts per object before it is dropped


@dataclass
class SyntheticCocoSpec:
    """What to generate.

    Args:
        num_train: images in the train split (>= 0).
        num_val: images in the val split (>= 0).
        image_size: side of the square images, pixels.
        min_object_size: smallest object side, pixels (objects are drawn from [min, max] log-uniformly).
        max_object_size: largest object side, pixels; ``None`` means ``image_size * 0.9``.
        objects_per_image: inclusive (min, max) number of objects per image.
        max_iou: largest IoU allowed between two objects' boxes (controls overlap/occlusion).
        num_distractors: inclusive (min, max) number of non-object clutter items per image.
        noise_std: std of the Gaussian pixel noise added last (0-255 scale).
        seed: base seed.
    """
    num_train: int = 2000
    num_val: int = 300
    image_size: int = 192
    min_object_size: int = 12
    max_object_size: Optional[int] = None
    objects_per_image: Tuple[int, int] = (3, 8)
    max_iou: float = 0.3
    num_distractors: Tuple[int, int] = (2, 6)
    noise_std: float = 4.0
    seed: int = 0

    def __post_init__(self):
        for name in ('num_train', 'num_val'):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise ValueError(f'{name}={value!r} is invalid; it must be an integer >= 0')
        if self.min_object_size < 4:
            raise ValueError(f'min_object_size={self.min_object_size} is invalid; it must be >= 4 pixels')
        if self.image_size < self.min_object_size:
            raise ValueError(f'image_size={self.image_size} is smaller than the smallest object '
                             f'(min_object_size={self.min_object_size}); use image_size >= {self.min_object_size}')
        if not self.min_object_size <= self.max_side <= self.image_size:
            raise ValueError(f'max_object_size={self.max_side} must lie in '
                             f'[min_object_size={self.min_object_size}, image_size={self.image_size}]')
        lo, hi = self.objects_per_image
        if not 1 <= lo <= hi:
            raise ValueError(f'objects_per_image={self.objects_per_image!r} is invalid; need 1 <= min <= max')
        lo, hi = self.num_distractors
        if not 0 <= lo <= hi:
            raise ValueError(f'num_distractors={self.num_distractors!r} is invalid; need 0 <= min <= max')
        if not 0.0 <= self.max_iou < 1.0:
            raise ValueError(f'max_iou={self.max_iou} is invalid; it must lie in [0, 1)')
        if self.noise_std < 0:
            raise ValueError(f'noise_std={self.noise_std} is invalid; it must be >= 0')

    @property
    def max_side(self) -> int:
        """The largest object side in pixels (``max_object_size`` resolved)."""
        if self.max_object_size is None:
            return max(self.min_object_size, int(self.image_size * 0.9))
        return self.max_object_size


# Benchmark and tiny (test) presets.
PRESETS: Dict[str, SyntheticCocoSpec] = {
    'benchmark': SyntheticCocoSpec(),
    'tiny': SyntheticCocoSpec(num_train=8, num_val=4, image_size=128, min_object_size=10,
                              max_object_size=110, objects_per_image=(2, 5), num_distractors=(2, 4)),
}


# ------------------------------------------------------------------------------------------------ drawing
def _random_color(rng: np.random.Generator) -> np.ndarray:
    return rng.integers(0, 256, size=3).astype(np.float32)


def _hue_color(rng: np.random.Generator, hue: float) -> np.ndarray:
    """A saturated BGR colour of OpenCV hue ``hue`` (0-180) with a little jitter in hue, saturation and value."""
    hsv = np.array([[[(hue + rng.uniform(-6, 6)) % 180, rng.uniform(150, 255), rng.uniform(140, 255)]]],
                   np.float32)
    return cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2BGR)[0, 0].astype(np.float32)


def _texture(rng: np.random.Generator, kind: str, h: int, w: int, hue: Optional[float] = None) -> np.ndarray:
    """A (h, w, 3) float texture of family ``kind`` with random frequency and phase; colours random, or of hue
    ``hue`` (the pattern's second colour is a darker shade of it)."""
    if hue is None:
        c1, c2 = _random_color(rng), _random_color(rng)
        while np.abs(c1 - c2).sum() < 120:  # keep the two colours of a pattern distinguishable
            c2 = _random_color(rng)
    else:
        c1 = _hue_color(rng, hue)
        c2 = c1 * rng.uniform(0.3, 0.55)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    period = rng.uniform(4.0, 10.0)
    if kind == 'solid':
        t = np.zeros((h, w), np.float32)
    elif kind == 'stripes':
        theta = rng.uniform(0, math.pi)
        t = (np.sin((xx * math.cos(theta) + yy * math.sin(theta)) * 2 * math.pi / period) > 0)
    elif kind == 'checker':
        t = ((xx // (period / 2)).astype(int) + (yy // (period / 2)).astype(int)) % 2 == 0
    elif kind == 'dots':
        t = (np.sin(xx * 2 * math.pi / period) * np.sin(yy * 2 * math.pi / period)) > 0.5
    elif kind == 'gradient':
        theta = rng.uniform(0, 2 * math.pi)
        ramp = xx * math.cos(theta) + yy * math.sin(theta)
        t = (ramp - ramp.min()) / max(float(np.ptp(ramp)), 1.0)
    elif kind == 'noise':
        t = cv2.GaussianBlur(rng.random((h, w)).astype(np.float32), (0, 0), 1.0) > 0.5
    else:
        raise ValueError(f'unknown texture {kind!r}')
    t = t.astype(np.float32)[..., None]
    return c1 * (1 - t) + c2 * t


# The texture family and hue of each class (shapes differ too); clutter uses any family and any colour.
CLASS_HUES = tuple(180.0 * i / len(CLASSES) for i in range(len(CLASSES)))
CLASS_TEXTURES = dict(circle='solid', square='stripes', triangle='checker', cross='dots',
                      ring='gradient', star='noise')
TEXTURES = ('solid', 'stripes', 'checker', 'dots', 'gradient', 'noise')


def _shape_mask(rng: np.random.Generator, cls: str, w: int, h: int) -> np.ndarray:
    """A (h, w) uint8 mask of shape ``cls`` filling a w x h box (with a random rotation where it matters)."""
    mask = np.zeros((h, w), np.uint8)
    cx, cy, rx, ry = (w - 1) / 2, (h - 1) / 2, (w - 1) / 2, (h - 1) / 2

    def poly(points):
        pts = np.array([[cx + rx * px, cy + ry * py] for px, py in points])
        cv2.fillPoly(mask, [np.round(pts).astype(np.int32)], 1)

    if cls == 'circle':
        cv2.ellipse(mask, (round(cx), round(cy)), (round(rx), round(ry)), 0, 0, 360, 1, -1)
    elif cls == 'square':
        mask[:] = 1
    elif cls == 'triangle':
        apex = rng.uniform(-0.6, 0.6)
        poly([(apex, -1), (1, 1), (-1, 1)] if rng.random() < 0.5 else [(apex, 1), (1, -1), (-1, -1)])
    elif cls == 'cross':
        t = rng.uniform(0.25, 0.4)
        poly([(-t, -1), (t, -1), (t, -t), (1, -t), (1, t), (t, t), (t, 1), (-t, 1), (-t, t), (-1, t), (-1, -t),
              (-t, -t)])
    elif cls == 'ring':
        cv2.ellipse(mask, (round(cx), round(cy)), (round(rx), round(ry)), 0, 0, 360, 1, -1)
        inner = rng.uniform(0.45, 0.65)
        cv2.ellipse(mask, (round(cx), round(cy)), (max(1, round(rx * inner)), max(1, round(ry * inner))), 0, 0,
                    360, 0, -1)
    elif cls == 'star':
        k, inner, rot = 5, rng.uniform(0.35, 0.5), rng.uniform(0, 2 * math.pi)
        poly([((1 if i % 2 == 0 else inner) * math.cos(rot + i * math.pi / k),
               (1 if i % 2 == 0 else inner) * math.sin(rot + i * math.pi / k)) for i in range(2 * k)])
    else:
        raise ValueError(f'unknown class {cls!r}; classes: {CLASSES}')
    return mask


def _paste(img: np.ndarray, mask: np.ndarray, tex: np.ndarray, x: int, y: int) -> None:
    h, w = mask.shape
    region = img[y:y + h, x:x + w]
    m = mask[..., None].astype(np.float32)
    region[:] = region * (1 - m) + tex * m


def _background(rng: np.random.Generator, spec: SyntheticCocoSpec) -> np.ndarray:
    s = spec.image_size
    img = _texture(rng, rng.choice(['gradient', 'solid']), s, s) * 0.6 + rng.uniform(0, 100)
    # low-frequency colour blotches
    blotch = cv2.resize(rng.random((4, 4, 3)).astype(np.float32) * 120, (s, s), interpolation=cv2.INTER_CUBIC)
    img = np.clip(img + blotch - 60, 0, 255)
    for _ in range(int(rng.integers(spec.num_distractors[0], spec.num_distractors[1] + 1))):
        kind = rng.integers(0, 3)
        if kind == 0:  # random line
            p1, p2 = rng.integers(0, s, 2), rng.integers(0, s, 2)
            color = tuple(float(c) for c in _random_color(rng))
            cv2.line(img, tuple(int(v) for v in p1), tuple(int(v) for v in p2), color,
                     int(rng.integers(1, 4)))
        else:  # irregular textured blob (an ellipse or a random polygon): not an object
            size = int(rng.integers(spec.min_object_size, max(spec.min_object_size + 1, spec.image_size // 3)))
            x, y = int(rng.integers(0, s - size + 1)), int(rng.integers(0, s - size + 1))
            mask = np.zeros((size, size), np.uint8)
            if kind == 1:
                cv2.ellipse(mask, (size // 2, size // 2), (size // 2, max(1, int(size * rng.uniform(0.1, 0.3)))),
                            float(rng.uniform(0, 180)), 0, 360, 1, -1)
            else:
                n = int(rng.integers(4, 8))
                ang = np.sort(rng.uniform(0, 2 * math.pi, n))
                rad = rng.uniform(0.3, 1.0, n) * size / 2
                pts = np.stack([size / 2 + rad * np.cos(ang), size / 2 + rad * np.sin(ang)], 1)
                cv2.fillPoly(mask, [np.round(pts).astype(np.int32)], 1)
            _paste(img, mask, _texture(rng, TEXTURES[int(rng.integers(len(TEXTURES)))], size, size) * 0.8, x, y)
    return img


def _iou(a: List[float], b: List[float]) -> float:
    ax2, ay2, bx2, by2 = a[0] + a[2], a[1] + a[3], b[0] + b[2], b[1] + b[3]
    iw, ih = max(0.0, min(ax2, bx2) - max(a[0], b[0])), max(0.0, min(ay2, by2) - max(a[1], b[1]))
    inter = iw * ih
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


def size_buckets(min_side: int, max_side: int) -> List[Tuple[float, float]]:
    """Object-side ranges drawn with equal probability: COCO's small (side < 32), medium (32-96) and large
    (> 96, from 100 so that most shapes' pixel area clears 96^2) buckets, each clipped to [min_side, max_side];
    a bucket outside that range is left out. Sides are log-uniform within a bucket."""
    ranges = [(min_side, 32), (32, 96), (100, max_side)]
    return [(max(lo, min_side), min(hi, max_side)) for lo, hi in ranges if max(lo, min_side) < min(hi, max_side)]


def render_image(spec: SyntheticCocoSpec, rng: np.random.Generator) -> Tuple[np.ndarray, List[dict]]:
    """Draw one image; returns the (S, S, 3) uint8 BGR image and its objects (bbox xywh, category index, area)."""
    img = _background(rng, spec)
    objects: List[dict] = []
    buckets = size_buckets(spec.min_object_size, spec.max_side)
    for _ in range(int(rng.integers(spec.objects_per_image[0], spec.objects_per_image[1] + 1))):
        cls_idx = int(rng.integers(len(CLASSES)))
        for _ in range(MAX_TRIES):
            lo, hi = buckets[int(rng.integers(len(buckets)))]
            side = math.exp(rng.uniform(math.log(lo), math.log(hi)))
            aspect = math.exp(rng.uniform(-0.3, 0.3))
            w = int(np.clip(round(side * aspect), spec.min_object_size, spec.image_size))
            h = int(np.clip(round(side / aspect), spec.min_object_size, spec.image_size))
            x, y = int(rng.integers(0, spec.image_size - w + 1)), int(rng.integers(0, spec.image_size - h + 1))
            box = [float(x), float(y), float(w), float(h)]
            if all(_iou(box, o['bbox']) <= spec.max_iou for o in objects):
                break
        else:
            continue
        mask = _shape_mask(rng, CLASSES[cls_idx], w, h)
        tex = _texture(rng, CLASS_TEXTURES[CLASSES[cls_idx]], h, w, hue=CLASS_HUES[cls_idx])
        _paste(img, mask, tex, x, y)
        ys, xs = np.nonzero(mask)
        tight = [float(x + xs.min()), float(y + ys.min()), float(xs.max() - xs.min() + 1),
                 float(ys.max() - ys.min() + 1)]
        objects.append(dict(bbox=tight, category=cls_idx, area=float(mask.sum())))
    img = img + rng.normal(0, spec.noise_std, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8), objects


# ------------------------------------------------------------------------------------------------ writing
def generate_split(spec: SyntheticCocoSpec, out_dir: str, split: str) -> dict:
    """Write the images of ``split`` and return its COCO ``instances`` dict (also written to disk)."""
    num = spec.num_train if split == 'train' else spec.num_val
    img_dir = osp.join(out_dir, split)
    os.makedirs(img_dir, exist_ok=True)
    os.makedirs(osp.join(out_dir, 'annotations'), exist_ok=True)
    images, annotations = [], []
    for i in range(num):
        rng = np.random.default_rng([spec.seed, SPLIT_IDS[split], i])
        img, objects = render_image(spec, rng)
        file_name = f'{i:06d}.jpg'
        cv2.imwrite(osp.join(img_dir, file_name), img, [cv2.IMWRITE_JPEG_QUALITY, 95])
        images.append(dict(id=i + 1, file_name=file_name, width=spec.image_size, height=spec.image_size))
        for obj in objects:
            annotations.append(dict(id=len(annotations) + 1, image_id=i + 1, category_id=obj['category'] + 1,
                                    bbox=obj['bbox'], area=obj['area'], iscrowd=0))
    coco = dict(info=dict(description='mmaqd synthetic detection benchmark', spec=asdict(spec), split=split),
                images=images, annotations=annotations,
                categories=[dict(id=i + 1, name=name, supercategory='shape') for i, name in enumerate(CLASSES)])
    with open(osp.join(out_dir, 'annotations', f'instances_{split}.json'), 'w') as f:
        json.dump(coco, f)
    return coco


def dataset_is_complete(spec: SyntheticCocoSpec, out_dir: str) -> bool:
    """True when ``out_dir`` holds a dataset generated with exactly ``spec`` (both splits, all images)."""
    for split in SPLIT_IDS:
        ann = osp.join(out_dir, 'annotations', f'instances_{split}.json')
        if not osp.isfile(ann):
            return False
        with open(ann) as f:
            coco = json.load(f)
        if coco.get('info', {}).get('spec') != json.loads(json.dumps(asdict(spec))):
            return False
        if not all(osp.isfile(osp.join(out_dir, split, im['file_name'])) for im in coco['images']):
            return False
    return True


def generate_synthetic_coco(out_dir: str, spec: Optional[SyntheticCocoSpec] = None, force: bool = False) -> bool:
    """Generate both splits into ``out_dir`` unless a complete dataset of the same spec is already there.

    Returns True when it wrote the dataset. A folder holding a dataset of a *different* spec is an error unless
    ``force``: a user's data is never overwritten silently.
    """
    spec = spec or SyntheticCocoSpec()
    if dataset_is_complete(spec, out_dir):
        return False
    ann_dir = osp.join(out_dir, 'annotations')
    if osp.isdir(ann_dir) and not force:
        for name in sorted(os.listdir(ann_dir)):
            with open(osp.join(ann_dir, name)) as f:
                info = json.load(f).get('info', {}) if name.endswith('.json') else {}
            if info.get('spec') != json.loads(json.dumps(asdict(spec))):
                raise FileExistsError(
                    f'{osp.join(ann_dir, name)} was not written by this generator with these settings; pass '
                    f'force=True (--force) to overwrite {out_dir}, or choose another folder')
    for split in SPLIT_IDS:
        generate_split(spec, out_dir, split)
    return True
