"""Building blocks of mmaqd's mmdet models."""
from .multi_level_norm import MultiLevelNorm, MultiLevelNormHeadMixin

__all__ = ['MultiLevelNorm', 'MultiLevelNormHeadMixin']
