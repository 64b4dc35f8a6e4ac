from .quantized import QFCOS, QRetinaNet, QuantizedDetectorMixin  # noqa: F401
from .auxi import AuxiFCOS, AuxiliaryDetectorMixin, AuxiRetinaNet  # noqa: F401
