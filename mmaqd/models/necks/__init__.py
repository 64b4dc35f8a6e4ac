from .fpn import QFPN  # noqa: F401
