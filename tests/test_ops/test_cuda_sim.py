"""mmaqd's CUDA kernels run in the host simulator (tests/test_ops/cuda_sim), against the PyTorch references bit for
bit, on a machine without a GPU.

The simulator compiles the very kernel headers that the CUDA build compiles (csrc/cuda/*.cuh) with a C++ compiler,
runs every CUDA thread as a fiber and the tensor-core instructions (mma.sync m16n8k32 s8, ldmatrix) as the PTX
ISA's fragment layouts say: so it checks the implicit-GEMM tiling, the sub-byte weight unpacking, the 8-bit weight
split, the activation zero point, the epilogue and the launch sequence (which kernel runs, on the device, for
which input range). It does not stand in for a GPU run (tests/test_ops/test_quant_conv_ext.py's CUDA cases, run
by tools/benchmark/cuda_check.sh): the asm, cp.async timing and speed are only checked there. Needs ``g++``;
skipped without it. Small shapes: each case runs in about a second.
"""
import os
import os.path as osp
import shutil
import struct
import subprocess
import sys

import numpy as np
import pytest
import torch

from mmaqd.ops import (codes_to_values, pack_codes, quant_add_reference, quant_conv2d_reference, quantize_multiplier,
                       requantize)
from mmaqd.ops.extension import cuda_prepack_bytes

sys.path.insert(0, osp.dirname(__file__))
from test_quant_conv_ext import CASES, TC_CASES, _args, _requantize_args  # noqa: E402

HERE = osp.dirname(osp.abspath(__file__))
CSRC = osp.join(osp.dirname(osp.dirname(HERE)), 'mmaqd', 'ops', 'csrc')
CXX = shutil.which(os.environ.get('CXX', 'g++')) or shutil.which('g++')

pytestmark = pytest.mark.skipif(CXX is None, reason='no C++ compiler for the CUDA kernel simulator')


@pytest.fixture(scope='module')
def driver(tmp_path_factory):
    exe = str(tmp_path_factory.mktemp('cuda_sim') / 'sim_driver')
    cmd = [CXX, '-std=c++20', '-O1', '-DMMAQD_CUDA_SIM', '-Wno-unknown-pragmas', '-I', osp.join(CSRC, 'common'),
           '-I', osp.join(CSRC, 'cuda'), '-I', osp.join(HERE, 'cuda_sim'), osp.join(HERE, 'cuda_sim', 'sim_driver.cpp'),
           '-o', exe]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    return exe


def _run(driver, tmp_path, header, arrays):
    header = list(header) + [0] * (64 - len(header))
    src, dst = tmp_path / 'in.bin', tmp_path / 'out.bin'
    with open(src, 'wb') as f:
        f.write(struct.pack('<64q', *header))
        for a in arrays:
            f.write(np.ascontiguousarray(a).tobytes())
    result = subprocess.run([driver, str(src), str(dst)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    raw = dst.read_bytes()
    head = struct.unpack('<8q', raw[:64])
    return head, torch.from_numpy(np.frombuffer(raw[64:], dtype=np.int32).copy())


def _sim_conv(driver, tmp_path, args, kwargs, force_fallback=False):
    x, packed, wb, shape = args
    n, c_in, h, w = x.shape
    c_out, cg, kh, kw = shape
    pair = lambda v: (v, v) if isinstance(v, int) else tuple(v)  # noqa: E731
    (sh, sw), (ph, pw), (dh, dw) = pair(kwargs['stride']), pair(kwargs['padding']), pair(kwargs['dilation'])
    frac = kwargs.get('frac_bits', 0)
    g = kwargs.get('offset_frac_bits') or frac
    offset, bias, m0, shift = (kwargs.get(k) for k in ('w_offset', 'bias', 'multiplier', 'shift'))
    x64 = x.dtype == torch.int64
    header = [0, n, c_in, h, w, c_out, kh, kw, sh, sw, ph, pw, dh, dw, kwargs['groups'], wb, frac, g,
              offset is not None, bias is not None, m0 is not None, kwargs.get('zero_point', 0),
              kwargs.get('qmin', 0), kwargs.get('qmax', 255), kwargs.get('out_levels', 255),
              int(kwargs.get('out_signed', False)), int(force_fallback), packed.shape[1], int(x64)]
    arrays = [x.to(torch.int64 if x64 else torch.int32).numpy(), packed.numpy()]
    arrays += [t.to(torch.int32).numpy() for t in (offset, bias, m0, shift) if t is not None]
    head, out = _run(driver, tmp_path, header, arrays)
    oh = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    ow = (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    return head, out.view(n, c_out, oh, ow)


@pytest.mark.parametrize('case', CASES + TC_CASES)
def test_simulated_cuda_conv_equals_the_reference(driver, tmp_path, case):
    args, kwargs = _args(case)
    head, ours = _sim_conv(driver, tmp_path, args, kwargs)
    status, zero_point, tensor_cores, prepacked_bytes = head[:4]
    assert status == 0
    ref = quant_conv2d_reference(*args, **kwargs)
    assert torch.equal(ours, ref)
    x = args[0]
    fits = x.numel() == 0 or (x.min() >= -128 and x.max() <= 127) or (x.min() >= 0 and x.max() <= 255)
    assert bool(tensor_cores) == (kwargs['groups'] == 1 and bool(fits))  # the device-side choice of kernel
    if tensor_cores and x.numel():
        assert zero_point == (0 if x.min() >= -128 and x.max() <= 127 else 128)
    assert prepacked_bytes == cuda_prepack_bytes(args[2], args[3], kwargs['groups'])


@pytest.mark.parametrize('case', [CASES[0], CASES[4], TC_CASES[0], TC_CASES[1]])
def test_simulated_generic_kernel_equals_the_reference(driver, tmp_path, case):
    args, kwargs = _args(case)
    head, ours = _sim_conv(driver, tmp_path, args, kwargs, force_fallback=True)
    assert head[0] == 0 and head[2] == 0
    assert torch.equal(ours, quant_conv2d_reference(*args, **kwargs))


def test_simulated_int64_input_and_overflow_flag(driver, tmp_path):
    args, kwargs = _args(CASES[0])
    args = (args[0].to(torch.int64),) + args[1:]
    head, ours = _sim_conv(driver, tmp_path, args, kwargs)
    assert head[0] == 0 and torch.equal(ours, quant_conv2d_reference(*args, **kwargs))
    # an accumulator beyond int32: the reference raises, the kernels set the status word the op raises on
    packed = pack_codes(torch.full((1, 4), 255), 8)
    x = torch.full((1, 4, 1, 1), 255, dtype=torch.int32)
    for fallback in (False, True):
        head, _ = _sim_conv(driver, tmp_path, (x, packed, 8, (1, 4, 1, 1)),
                            dict(frac_bits=16, stride=1, padding=0, dilation=1, groups=1), force_fallback=fallback)
        assert head[0] == 1
    with pytest.raises(OverflowError):
        quant_conv2d_reference(x, packed, 8, (1, 4, 1, 1), frac_bits=16)


@pytest.mark.parametrize('with_bias', [False, True])
def test_simulated_requantize_equals_the_reference(driver, tmp_path, with_bias):
    acc, m0, sh, bias = _requantize_args(with_bias)
    header = [1, 2, 5, 21, int(with_bias), 7, 0, 15, 15, 1]
    arrays = [acc.numpy(), m0.numpy(), sh.numpy()] + ([bias.numpy()] if with_bias else [])
    head, ours = _run(driver, tmp_path, header, arrays)
    want = codes_to_values(requantize(acc, m0, sh, bias, 7, 0, 15), 15, True)
    assert head[0] == 0 and torch.equal(ours.view(acc.shape), want)


@pytest.mark.parametrize('two', [False, True])
def test_simulated_quant_add_equals_the_reference(driver, tmp_path, two):
    gen = torch.Generator().manual_seed(4)
    a = 2 * torch.randint(0, 16, (2, 4, 6, 6), generator=gen, dtype=torch.int32) - 15
    b = torch.randint(0, 16, (2, 4, 6, 6), generator=gen, dtype=torch.int32)
    am, ash = quantize_multiplier(torch.tensor(0.11 / 0.22, dtype=torch.float64))
    bm, bsh = quantize_multiplier(torch.tensor(0.07 / 0.22, dtype=torch.float64))
    om, osh = quantize_multiplier(torch.tensor(0.22 / (2 ** 20 * 0.18), dtype=torch.float64))
    bias = round(0.5 / (0.22 / (2 ** 20 * 0.18)))
    header = [2, a.numel(), int(two), int(am), int(ash), int(bm), int(bsh), 20, bias, int(om), int(osh), 7, 0, 15, 15,
              1]
    head, ours = _run(driver, tmp_path, header, [a.numpy()] + ([b.numpy()] if two else []))
    want = quant_add_reference(a, am, ash, b if two else None, bm if two else None, bsh if two else None, 20, bias,
                               om, osh, 7, 0, 15, 15, True)
    assert head[0] == 0 and torch.equal(ours.view(a.shape), want)
