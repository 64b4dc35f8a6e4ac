from .affine import FQNAffine
from .base import MAX_BITS, MIN_BITS, BaseQuantizer, check_bits  # noqa: F401
from .dorefa import DoReFa
from .liq import LIQ
from .lqnet import LQNet
from .lsq import LSQ, LSQPlus
from .pact import PACT

__all__ = ['MAX_BITS', 'MIN_BITS', 'BaseQuantizer', 'check_bits', 'LIQ', 'LSQ', 'LSQPlus', 'DoReFa', 'PACT',
           'LQNet', 'FQNAffine']
