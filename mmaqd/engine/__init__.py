"""mmengine-facing training utilities, registered into mmdet's registries on import."""
from .checkpoint_compat import allow_mmengine_checkpoints

allow_mmengine_checkpoints()
