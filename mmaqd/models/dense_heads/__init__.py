"""AQD dense heads with multi-level BN (arXiv 2007.06919v1, sec. 3.2), registered into mmdet's ``MODELS`` on import."""
from .aqd_fcos_head import AQDFCOSHead
from .aqd_retina_head import AQDRetinaHead

__all__ = ['AQDFCOSHead', 'AQDRetinaHead']
