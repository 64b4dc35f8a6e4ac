from .fpn import QFPN, AddModuleFPN  # noqa: F401
