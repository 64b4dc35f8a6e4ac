"""Datasets: the generated COCO-format detection benchmark (read with mmdet's own ``CocoDataset``)."""
from .synthetic_coco import CLASSES, PRESETS, SyntheticCocoSpec, generate_synthetic_coco  # noqa: F401
