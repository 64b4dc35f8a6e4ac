from .auxi import AuxiFCOS, AuxiliaryDetectorMixin, AuxiRetinaNet  # noqa: F401
from .quantized import QFCOS, QRetinaNet, QuantizedDetectorMixin  # noqa: F401
