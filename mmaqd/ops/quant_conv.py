"""The integer convolution and add of an integer-only detector, with their output stage (torch reference).

Quantized convolution with LIQ's weight grid (AQD, arXiv 2007.06919, section 3.3 eq. 3-5; weight normalization
as in section 4.3): the trained weight is ``s_w * (v_w + mu)`` with odd integers ``v_w = 2c - q_w`` and a real
offset ``mu = mean / s_w``; the input is ``s_x * v_x``. So

    conv(x, w)[o] = s_w[o] * s_x * (A[o] + mu[o] * S),   A = conv(v_x, v_w),   S = conv(v_x, ones)

and with ``mu~ = round(mu * 2^G)`` the accumulator ``acc = A * 2^F + round(mu~ * S / 2^(G - F))`` is an integer in
units of ``s_w s_x / 2^F``. F (a few bits: A * 2^F must fit int32) and G >= F (up to 30: mu~ must fit int32) are
separate so that the offset term, a product in int64 per output pixel, keeps G bits of mu (an error of at most
``|S| 2^-(G+1) + 1/2`` accumulator units) even when the accumulator keeps only a few fractional bits. BN, ReLU
and the next quantizer are the output stage :func:`mmaqd.ops.requantize` (Jacob et al., CVPR 2018, eq. 5-7).
The add rescales both operands to a common grid in fixed point (TFLite's quantized add: each operand shifted left
by ``left_shift`` bits, then scaled by its own multiplier), adds them and requantizes.

These functions are the op contract that the compiled kernels implement (``mmaqd/ops/csrc``; the public functions
call them on CPU tensors when the extension is built, on CUDA tensors when it was built with its CUDA kernels).
The ``*_reference`` functions compute the integer sums in float64, where every partial sum is an integer below
2^53 (checked), and everything else in int64.
"""
from typing import Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F

from .extension import cuda_ops_available, extension_available
from .fixed_point import check_int32, multiply_by_quantized_multiplier, requantize, rounding_divide_by_pot
from .packing import codes_to_values, unpack_codes

__all__ = ['quant_conv2d', 'quant_conv2d_reference', 'prepack_conv_weight', 'quant_add', 'quant_add_reference',
           'requantize_values']

_Pair = Union[int, Sequence[int]]


def _weight_values(weight: torch.Tensor, w_bits: int, w_shape: Tuple[int, ...]) -> torch.Tensor:
    """Packed uint8 codes (C_out, bytes) -> odd integer weights 2c - q, float64 (C_out, C_in/g, kh, kw)."""
    k = 1
    for d in w_shape[1:]:
        k *= d
    codes = unpack_codes(weight, w_bits, k)  # (C_out, K)
    return codes_to_values(codes, (1 << w_bits) - 1, True).to(torch.float64).view(w_shape)


def _pair(v) -> list:
    return [int(v), int(v)] if isinstance(v, int) else [int(e) for e in v]


def _compiled_device(t: torch.Tensor) -> bool:
    """Whether the compiled ops run tensors on ``t``'s device (the CPU, or CUDA when built with CUDA kernels)."""
    if t.device.type == 'cpu':
        return extension_available()
    return t.device.type == 'cuda' and cuda_ops_available()


def _compiled(op, *args) -> torch.Tensor:
    """Call a compiled op, raising the reference's error types: an overflow is an OverflowError."""
    try:
        return op(*args)
    except RuntimeError as e:
        if 'leaves int32' in str(e) or 'must fit int16' in str(e):
            raise OverflowError(str(e).splitlines()[0]) from None
        raise


def quant_conv2d(x: torch.Tensor, weight: torch.Tensor, w_bits: int, w_shape: Sequence[int],
                 w_offset: Optional[torch.Tensor] = None, frac_bits: int = 0, offset_frac_bits: Optional[int] = None,
                 bias: Optional[torch.Tensor] = None,
                 multiplier: Optional[torch.Tensor] = None, shift: Optional[torch.Tensor] = None,
                 zero_point: int = 0, qmin: int = 0, qmax: int = 255, out_levels: int = 255,
                 out_signed: bool = False, stride: _Pair = 1, padding: _Pair = 0, dilation: _Pair = 1,
                 groups: int = 1, prepacked: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Integer conv + offset term + bias (+ requantization and clamp): the compiled op
    (``torch.ops.mmaqd.quant_conv2d``) on CPU tensors when the extension is built (on CUDA tensors when it was
    built with its CUDA kernels), else :func:`quant_conv2d_reference`; all give the same integers. Arguments and
    result as the reference, plus ``prepacked``: :func:`prepack_conv_weight`'s output for ``weight`` (saves
    unpacking it on every call)."""
    if not x.is_floating_point() and _compiled_device(x):
        g = frac_bits if offset_frac_bits is None else offset_frac_bits
        return _compiled(torch.ops.mmaqd.quant_conv2d, x, weight, int(w_bits), [int(d) for d in w_shape], w_offset,
                         int(frac_bits), int(g), bias, multiplier, shift, int(zero_point), int(qmin), int(qmax),
                         int(out_levels), bool(out_signed), _pair(stride), _pair(padding), _pair(dilation),
                         int(groups), prepacked)
    return quant_conv2d_reference(x, weight, w_bits, w_shape, w_offset, frac_bits, offset_frac_bits, bias,
                                  multiplier, shift, zero_point, qmin, qmax, out_levels, out_signed, stride,
                                  padding, dilation, groups)


def prepack_conv_weight(weight: torch.Tensor, w_bits: int, w_shape: Sequence[int],
                        groups: int = 1) -> Optional[torch.Tensor]:
    """The packed weight codes in the compiled kernel's own layout for ``weight``'s device (the CPU kernels', or
    the CUDA tensor-core kernel's tiles), to pass to :func:`quant_conv2d` as ``prepacked`` (made once, e.g. when a
    model loads); ``None`` where no compiled op runs that device."""
    if not _compiled_device(weight):
        return None
    return torch.ops.mmaqd.quant_conv2d_prepack(weight, int(w_bits), [int(d) for d in w_shape], int(groups))


def quant_conv2d_reference(x: torch.Tensor, weight: torch.Tensor, w_bits: int, w_shape: Sequence[int],
                           w_offset: Optional[torch.Tensor] = None, frac_bits: int = 0,
                           offset_frac_bits: Optional[int] = None, bias: Optional[torch.Tensor] = None,
                           multiplier: Optional[torch.Tensor] = None, shift: Optional[torch.Tensor] = None,
                           zero_point: int = 0, qmin: int = 0, qmax: int = 255, out_levels: int = 255,
                           out_signed: bool = False, stride: _Pair = 1, padding: _Pair = 0, dilation: _Pair = 1,
                           groups: int = 1) -> torch.Tensor:
    """Integer conv + offset term + bias (+ requantization and clamp).

    Args:
        x: (N, C_in, H, W) integer input values (odd values on a signed grid, codes on an unsigned one).
        weight: (C_out, bytes) uint8, codes packed by :func:`mmaqd.ops.pack_codes` at ``w_bits``; the weight
            values are ``2c - q_w``.
        w_shape: (C_out, C_in/groups, kh, kw).
        w_offset: int32 (C_out,), ``mu~ = round(mu * 2^offset_frac_bits)``, or ``None`` for no offset.
        frac_bits: F, the fractional bits of the accumulator.
        offset_frac_bits: G >= F, the fractional bits of ``w_offset`` (default F).
        bias: int32 (C_out,) in accumulator units, or ``None``.
        multiplier, shift: int32 (C_out,) fixed-point requantization; ``None`` returns the accumulator.
        zero_point, qmin, qmax: output stage of :func:`requantize`.
        out_levels, out_signed: the output grid (q and whether codes become odd values ``2c - q``).
        stride, padding, dilation, groups: as ``torch.nn.functional.conv2d``; padding is with zeros.

    Returns:
        int32 (N, C_out, H', W'): output values, or ``acc + bias`` when ``multiplier`` is ``None``.
    """
    if x.is_floating_point():
        raise TypeError(f'quant_conv2d: x must be an integer tensor, got {x.dtype}')
    w = _weight_values(weight, w_bits, tuple(w_shape))  # (C_out, C_in/g, kh, kw)
    xf = x.to(torch.float64)
    k = w[0].numel()
    bound = k * float(xf.abs().max() if x.numel() else 0) * ((1 << w_bits) - 1)
    if bound >= 2 ** 53:
        raise OverflowError(f'quant_conv2d: integer sums up to {bound:.3g} are not exact in float64')
    acc = F.conv2d(xf, w, None, stride, padding, dilation, groups).to(torch.int64)  # A: (N, C_out, H', W')
    if frac_bits:
        acc = acc << frac_bits
    if w_offset is not None:
        g = frac_bits if offset_frac_bits is None else offset_frac_bits
        if g < frac_bits:
            raise ValueError(f'quant_conv2d: offset_frac_bits={g} must be >= frac_bits={frac_bits}')
        ones = torch.ones((groups,) + tuple(w.shape[1:]), dtype=torch.float64, device=x.device)
        s = F.conv2d(xf, ones, None, stride, padding, dilation, groups).to(torch.int64)  # S: (N, groups, H', W')
        s = s.repeat_interleave(w.shape[0] // groups, dim=1)  # (N, C_out, H', W')
        term = w_offset.to(torch.int64).view(1, -1, 1, 1) * s  # |.| < 2^31 * 2^22: exact in int64
        acc = acc + rounding_divide_by_pot(term, torch.tensor(g - frac_bits))
    if multiplier is None:
        acc = acc if bias is None else acc + bias.to(torch.int64).view(1, -1, 1, 1)
        check_int32(acc, 'quant_conv2d: accumulator + bias')
        return acc.to(torch.int32)
    codes = requantize(acc, multiplier, shift, bias, zero_point, qmin, qmax)
    return codes_to_values(codes, out_levels, out_signed)


def requantize_values(acc: torch.Tensor, multiplier: torch.Tensor, shift: torch.Tensor,
                      bias: Optional[torch.Tensor], zero_point: int, qmin: int, qmax: int, out_levels: int,
                      out_signed: bool) -> torch.Tensor:
    """The output stage of int32 accumulators (N, C, ...) with per-channel ``multiplier``/``shift``/``bias`` (C,):
    :func:`requantize` then :func:`mmaqd.ops.codes_to_values`, as the compiled op ``torch.ops.mmaqd.requantize``
    on CPU (and CUDA) tensors when the extension is built (the same integers)."""
    if acc.dtype == torch.int32 and acc.dim() >= 2 and _compiled_device(acc):
        return _compiled(torch.ops.mmaqd.requantize, acc, multiplier, shift, bias, int(zero_point), int(qmin),
                         int(qmax), int(out_levels), bool(out_signed))
    return codes_to_values(requantize(acc, multiplier, shift, bias, zero_point, qmin, qmax), out_levels, out_signed)


def quant_add(a: torch.Tensor, a_multiplier: torch.Tensor, a_shift: torch.Tensor, b: Optional[torch.Tensor],
              b_multiplier: Optional[torch.Tensor], b_shift: Optional[torch.Tensor], left_shift: int,
              bias: int, multiplier: torch.Tensor, shift: torch.Tensor, zero_point: int, qmin: int, qmax: int,
              out_levels: int, out_signed: bool) -> torch.Tensor:
    """Requantizing add of two integer tensors on different grids (``b=None``: rescale ``a`` alone).

    ``a' = round((a << left_shift) * M_a)``, ``b'`` likewise, then the output codes
    ``clamp(round((a' + b' + bias) * M) + zero_point, qmin, qmax)``, returned as values (``2c - q`` when
    ``out_signed``). Multipliers and shifts are int32 scalars (:func:`mmaqd.ops.quantize_multiplier`).

    Returns:
        int32, the broadcast shape of ``a`` and ``b``.
    """
    if a.is_floating_point() or (b is not None and b.is_floating_point()):
        raise TypeError('quant_add: operands must be integer tensors')
    if _compiled_device(a):  # the compiled op: the same integers
        return _compiled(torch.ops.mmaqd.quant_add, a, int(a_multiplier), int(a_shift), b,
                         int(b_multiplier) if b is not None else 0, int(b_shift) if b is not None else 0,
                         int(left_shift), int(bias), int(multiplier), int(shift), int(zero_point), int(qmin),
                         int(qmax), int(out_levels), bool(out_signed))
    return quant_add_reference(a, a_multiplier, a_shift, b, b_multiplier, b_shift, left_shift, bias, multiplier,
                               shift, zero_point, qmin, qmax, out_levels, out_signed)


def quant_add_reference(a: torch.Tensor, a_multiplier: torch.Tensor, a_shift: torch.Tensor,
                        b: Optional[torch.Tensor], b_multiplier: Optional[torch.Tensor],
                        b_shift: Optional[torch.Tensor], left_shift: int, bias: int, multiplier: torch.Tensor,
                        shift: torch.Tensor, zero_point: int, qmin: int, qmax: int, out_levels: int,
                        out_signed: bool) -> torch.Tensor:
    """:func:`quant_add` in PyTorch int64 arithmetic (the reference)."""
    t = multiply_by_quantized_multiplier(a.to(torch.int64) << left_shift, a_multiplier, a_shift)
    if b is not None:
        t = t + multiply_by_quantized_multiplier(b.to(torch.int64) << left_shift, b_multiplier, b_shift)
    codes = requantize(t, multiplier, shift, torch.as_tensor(bias), zero_point, qmin, qmax, channel_dim=0)
    return codes_to_values(codes, out_levels, out_signed)
