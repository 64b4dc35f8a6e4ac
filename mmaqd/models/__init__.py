"""mmdet-facing models, registered into mmdet's ``MODELS`` registry on import."""
from .backbones import *  # noqa: F401,F403
from .dense_heads import *  # noqa: F401,F403
from .detectors import *  # noqa: F401,F403
from .fold_rules import MMDET_FOLD_RULES  # noqa: F401
from .layers import *  # noqa: F401,F403
from .necks import *  # noqa: F401,F403
