"""Datasets: the generated COCO-format detection benchmark, and mmdet's ``CocoDataset`` with its files checked up
front (``CheckedCocoDataset``, used by the repo's dataset configs; registered when mmdet is installed)."""
import importlib.util

from .synthetic_coco import CLASSES, PRESETS, SyntheticCocoSpec, generate_synthetic_coco  # noqa: F401

if importlib.util.find_spec('mmdet') is not None:
    from .checked_coco import CheckedCocoDataset  # noqa: F401  (registers it)
