"""The compiled ops (``mmaqd._ext``, built from ``mmaqd/ops/csrc`` by setup.py), loaded once if present.

Every compiled op has an exact PyTorch reference in :mod:`mmaqd.ops`; the Python functions call
``torch.ops.mmaqd.<op>`` when the extension is loaded (and the tensors are on a device it is registered for), the
reference otherwise. The extension registers its ops with ``TORCH_LIBRARY``, so it is loaded with
``torch.ops.load_library`` rather than imported. ``MMAQD_DISABLE_EXT=1`` keeps the reference path even when the
extension is built. Which path is active is logged once (logger ``mmaqd``) and returned by :func:`active_path`;
:func:`cuda_ops_available` says whether the extension was built with its CUDA kernels (``FORCE_CUDA=1`` or a CUDA
torch at build time) and CUDA tensors can reach them.
"""
import importlib.util
import logging
import os
from typing import Optional

import torch

__all__ = ['extension_available', 'active_path', 'cuda_ops_available', 'cuda_prepack_bytes']

_logger = logging.getLogger('mmaqd')
_state: Optional[str] = None


def _load() -> str:
    global _state
    if _state is not None:
        return _state
    if os.getenv('MMAQD_DISABLE_EXT', '0') not in ('', '0'):
        _state = 'reference (MMAQD_DISABLE_EXT is set)'
    else:
        spec = importlib.util.find_spec('mmaqd._ext')
        if spec is None or spec.origin is None:
            _state = 'reference (mmaqd._ext is not built: MMAQD_WITH_OPS=0 or an install without a compiler)'
        else:
            try:
                torch.ops.load_library(spec.origin)
                _register_fake()
                _state = f'compiled ({spec.origin})'
                if _has_cuda_kernels():
                    _state += ' with CUDA kernels' + ('' if torch.cuda.is_available() else ' (no GPU visible)')
            except (OSError, RuntimeError) as e:  # e.g. built against another torch
                _state = f'reference (mmaqd._ext failed to load: {e})'
    _logger.info('mmaqd ops: %s', _state)
    return _state


def _conv_out(size: int, k: int, s: int, p: int, d: int) -> int:
    return (size + 2 * p - d * (k - 1) - 1) // s + 1


def _register_fake() -> None:
    """Shape functions of the compiled ops (FakeTensor / torch.compile / ``torch.library.opcheck``)."""
    @torch.library.register_fake('mmaqd::quant_conv2d')
    def _(x, weight, w_bits, w_shape, w_offset, frac_bits, offset_frac_bits, bias, multiplier, shift, zero_point,
          qmin, qmax, out_levels, out_signed, stride, padding, dilation, groups, prepacked=None):
        h = _conv_out(x.shape[2], w_shape[2], stride[0], padding[0], dilation[0])
        w = _conv_out(x.shape[3], w_shape[3], stride[1], padding[1], dilation[1])
        return x.new_empty((x.shape[0], w_shape[0], h, w), dtype=torch.int32)

    @torch.library.register_fake('mmaqd::requantize')
    def _(acc, m0, shift, bias, zero_point, qmin, qmax, out_levels, out_signed):
        return torch.empty_like(acc)

    @torch.library.register_fake('mmaqd::quant_add')
    def _(a, a_m0, a_shift, b, b_m0, b_shift, left_shift, bias, m0, shift, zero_point, qmin, qmax, out_levels,
          out_signed):
        shape = a.shape if b is None else torch.broadcast_shapes(a.shape, b.shape)
        return a.new_empty(shape, dtype=torch.int32)

    @torch.library.register_fake('mmaqd::quant_conv2d_prepack')
    def _(weight, w_bits, w_shape, groups):
        if weight.device.type == 'cuda':  # the tensor-core kernel's tiles (cuda/quant_conv2d_kernels.cuh)
            return weight.new_empty((cuda_prepack_bytes(w_bits, w_shape, groups),), dtype=torch.uint8)
        # rows and the micro-kernel copy, as cpu/quant_conv2d_cpu.cpp's weight_layout lays them out
        cg, taps, og = w_shape[1], w_shape[2] * w_shape[3], w_shape[0] // groups
        og_pad = -(-og // 16) * 16
        small = w_bits <= 7
        if _isa_is_scalar() or (groups > 1 and cg % 4):
            k = taps * cg
            kp = -(-k // 4) * 4 if small else -(-k // 2) * 2
        else:
            kp = taps * -(-cg // 4) * 4
        return weight.new_empty((2 * groups * og_pad * kp,), dtype=torch.uint8 if small else torch.int16)


def cuda_prepack_bytes(w_bits: int, w_shape, groups: int) -> int:
    """Bytes of the CUDA tensor-core kernel's prepacked weights (``tc_layout`` in
    ``csrc/cuda/quant_conv2d_kernels.cuh``): 0 where that kernel does not apply (several groups)."""
    c_out, cg, kh, kw = (int(d) for d in w_shape)
    fb = 2 if w_bits <= 2 else 4 if w_bits <= 4 else 8
    cgp, taps = -(-cg // 16) * 16, kh * kw
    k_tiles = -(-(taps * cgp) // 64)
    n_cols = c_out * (2 if w_bits == 8 else 1)
    bn = 64 if n_cols <= 64 else 128
    n_tiles = -(-n_cols // bn)
    b_bytes = n_tiles * k_tiles * bn * (64 * fb // 8)
    eligible = groups == 1 and 1 <= w_bits <= 8 and c_out > 0 and cg > 0 and taps * cgp <= 65536
    return -(-b_bytes // 16) * 16 + 4 * n_tiles * bn if eligible else 0


def _has_cuda_kernels() -> bool:
    return torch._C._dispatch_has_kernel_for_dispatch_key('mmaqd::quant_conv2d', 'CUDA')


def _isa_is_scalar() -> bool:
    return int(torch.ops.mmaqd.cpu_isa()) == 0


def extension_available() -> bool:
    """Whether the compiled ops are loaded (loads them on the first call)."""
    return _load().startswith('compiled')


def cuda_ops_available() -> bool:
    """Whether the compiled ops run CUDA tensors (the extension built with its CUDA kernels, and a GPU visible)."""
    return extension_available() and _has_cuda_kernels() and torch.cuda.is_available()


def active_path() -> str:
    """``'compiled (...)'`` or ``'reference (why)'``."""
    return _load()
