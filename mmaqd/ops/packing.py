"""Sub-byte weight codes packed into bytes, and the odd integer grids of LIQ (torch only).

A k-bit code c in 0..q (q = 2^k - 1) is stored in a field of ``field_bits(k)`` bits: 2 bits for k = 2 (four codes
per byte), 4 bits for k = 3, 4 (two per byte; 3-bit codes keep a 4-bit field so that a byte holds whole codes),
8 bits for 5..8. Each row (one output channel, its C_in/g * kh * kw codes in ``weight.reshape(C_out, -1)``
order) starts on a byte boundary; the first code of a byte sits in its low bits.

LIQ's signed grids (AQD, arXiv 2007.06919, section 3.3, eq. 3 and 5) have the levels alpha * (2c - q) / q: the
integer value is the odd ``v = 2c - q`` in [-q, q]. Unsigned grids (eq. 4) use ``v = c``. Storing c and
computing with v keeps zero padding exact (a padded 0 is the real value 0).
"""
import torch

__all__ = ['field_bits', 'pack_codes', 'unpack_codes', 'codes_to_values', 'values_to_codes']


def field_bits(bits: int) -> int:
    """Bits one packed code occupies: 2, 4 or 8."""
    if isinstance(bits, bool) or not isinstance(bits, int) or not 1 <= bits <= 8:
        raise ValueError(f'bits={bits!r} cannot be packed; allowed: integers 1 to 8')
    return 2 if bits <= 2 else 4 if bits <= 4 else 8


def pack_codes(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """Pack ``codes`` (C, K) in 0..2^bits-1 into uint8 (C, ceil(K * field / 8))."""
    if codes.is_floating_point():
        raise TypeError(f'pack_codes expects integer codes, got {codes.dtype}')
    if codes.dim() != 2:
        raise ValueError(f'pack_codes expects (C, K) codes, got shape {tuple(codes.shape)}')
    q = (1 << bits) - 1
    c = codes.to(torch.int64)
    if c.numel() and (c.min() < 0 or c.max() > q):
        raise ValueError(f'pack_codes: codes outside 0..{q} for bits={bits}: [{int(c.min())}, {int(c.max())}]')
    fb = field_bits(bits)
    per_byte = 8 // fb
    rows, k = c.shape
    pad = (-k) % per_byte
    c = torch.nn.functional.pad(c, (0, pad)).view(rows, -1, per_byte)  # (C, bytes, per_byte)
    shifts = torch.arange(per_byte, dtype=torch.int64) * fb  # (per_byte,)
    return (c << shifts).sum(-1).to(torch.uint8)  # (C, bytes)


def unpack_codes(packed: torch.Tensor, bits: int, k: int) -> torch.Tensor:
    """The (C, k) int32 codes of :func:`pack_codes`'s output ``packed`` (C, bytes)."""
    fb = field_bits(bits)
    per_byte = 8 // fb
    shifts = torch.arange(per_byte, dtype=torch.int32, device=packed.device) * fb  # (per_byte,)
    fields = (packed.to(torch.int32).unsqueeze(-1) >> shifts) & ((1 << fb) - 1)  # (C, bytes, per_byte)
    return fields.reshape(packed.shape[0], -1)[:, :k].contiguous()  # (C, k)


def codes_to_values(codes: torch.Tensor, q: int, signed: bool) -> torch.Tensor:
    """The integer value of codes: ``2c - q`` on a signed LIQ grid, ``c`` on an unsigned one (int32)."""
    c = codes.to(torch.int32)
    return c * 2 - q if signed else c


def values_to_codes(values: torch.Tensor, q: int, signed: bool) -> torch.Tensor:
    """Inverse of :func:`codes_to_values` (int32)."""
    v = values.to(torch.int32)
    return torch.div(v + q, 2, rounding_mode='floor') if signed else v
