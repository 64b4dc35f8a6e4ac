"""What every quantize function of :mod:`mmaqd.ops` checks and shares: the supported bit widths and the view of a
per-channel range that broadcasts along dim 0 (output channels of a weight)."""
import torch

__all__ = ['MIN_BITS', 'MAX_BITS', 'check_bits', 'broadcast_dim0']

#: the bit widths every quantizer and quantize function supports
MIN_BITS = 2
MAX_BITS = 8


def check_bits(bits: int, what: str = 'bits') -> int:
    """Return ``bits`` if it is an int in [MIN_BITS, MAX_BITS]; else raise a ValueError naming ``what``."""
    if isinstance(bits, bool) or not isinstance(bits, int) or not MIN_BITS <= bits <= MAX_BITS:
        raise ValueError(f'{what}={bits!r} is not supported; allowed: integers {MIN_BITS} to {MAX_BITS}')
    return bits


def broadcast_dim0(p: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``p`` shaped to broadcast against ``x``: a scalar (or one-element) range as a scalar, one value per slice of
    dim 0, (C,), viewed as (C, 1, ..., 1)."""
    if p.numel() == 1 and not (x.dim() >= 1 and p.dim() == 1 and x.shape[0] == 1):
        return p.reshape(())
    return p.reshape((-1,) + (1,) * (x.dim() - 1))
