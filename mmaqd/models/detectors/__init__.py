from .quantized import QFCOS, QRetinaNet, QuantizedDetectorMixin  # noqa: F401
