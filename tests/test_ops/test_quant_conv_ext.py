"""The compiled ops (mmaqd/ops/csrc) against their PyTorch references, bit for bit: quant_conv2d over random
shapes, bits, strides, padding, dilation, groups, odd sizes and empty batches, with and without prepacked weights;
requantize and quant_add; the schemas (torch.library.opcheck); the vector and scalar paths against each other; and
a whole integer detector with and without the extension. Skipped, with the reason, when the extension is not
built (MMAQD_WITH_OPS=0)."""
import os
import subprocess
import sys

import pytest
import torch

import mmaqd.ops.quant_conv as qc
from mmaqd.ops import (active_path, codes_to_values, extension_available, pack_codes, prepack_conv_weight, quant_add,
                       quant_add_reference, quant_conv2d, quant_conv2d_reference, requantize, requantize_values,
                       quantize_multiplier)

pytestmark = pytest.mark.skipif(not extension_available(), reason=f'compiled ops not loaded: {active_path()}')

CASES = [  # (N, C_in, H, W, C_out, k, stride, padding, dilation, groups, w_bits, x_bits, x_signed, offset, requant)
    (2, 8, 9, 7, 16, 3, 1, 1, 1, 1, 4, 4, False, True, True),
    (1, 8, 10, 10, 8, 3, 2, 1, 1, 1, 2, 2, True, True, True),
    (3, 6, 5, 11, 4, 1, 1, 0, 1, 1, 3, 3, False, False, False),
    (2, 8, 12, 9, 12, 3, 1, 2, 2, 2, 4, 4, True, True, True),
    (1, 3, 17, 13, 5, 7, 2, 3, 1, 1, 8, 8, True, True, True),  # the 8-bit first layer: signed +-255 inputs
    (2, 16, 6, 6, 9, 3, 1, 1, 1, 1, 8, 8, False, True, False),  # an 8-bit prediction conv: accumulators out
    (0, 8, 6, 6, 8, 3, 1, 1, 1, 1, 4, 4, False, True, True),   # empty batch
    (1, 4, 1, 1, 3, 1, 1, 0, 1, 1, 2, 4, False, False, True),
    (2, 12, 8, 8, 12, 3, 1, 1, 1, 3, 4, 4, False, True, True),
    (1, 6, 7, 7, 6, 3, 1, 1, 1, 2, 4, 4, False, True, True),   # groups with 3 channels each: the im2col kernels
    (1, 5, 9, 9, 20, 3, 1, 1, 1, 1, 2, 2, True, True, True),   # 5 channels padded to 8 for the direct kernels
]


def _args(case, seed=0):
    n, c, h, w, o, k, s, p, d, g, wb, xb, xs, offset, requant = case
    gen = torch.Generator().manual_seed(seed)
    q_w, q_x = (1 << wb) - 1, (1 << xb) - 1
    codes = torch.randint(0, q_w + 1, (o, c // g * k * k), generator=gen)
    xc = torch.randint(0, q_x + 1, (n, c, h, w), generator=gen)
    x = (2 * xc - q_x if xs else xc).to(torch.int32)
    kwargs = dict(w_offset=torch.randint(-3000, 3000, (o,), generator=gen, dtype=torch.int32) if offset else None,
                  frac_bits=4, offset_frac_bits=12 if offset else None,
                  bias=torch.randint(-5000, 5000, (o,), generator=gen, dtype=torch.int32), stride=s, padding=p,
                  dilation=d, groups=g)
    if requant:
        m0, sh = quantize_multiplier(torch.rand(o, generator=gen, dtype=torch.float64) * 1e-4 + 1e-6)
        kwargs.update(multiplier=m0, shift=sh, zero_point=7, qmin=0, qmax=15, out_levels=15, out_signed=True)
    return (x, pack_codes(codes, wb), wb, (o, c // g, k, k)), kwargs


@pytest.mark.parametrize('case', CASES)
@pytest.mark.parametrize('seed', [0, 1])
def test_compiled_op_equals_the_reference_bit_for_bit(case, seed):
    args, kwargs = _args(case, seed)
    ours = quant_conv2d(*args, **kwargs)
    ref = quant_conv2d_reference(*args, **kwargs)
    assert ours.dtype == ref.dtype == torch.int32 and ours.shape == ref.shape
    assert torch.equal(ours, ref)


def test_opcheck():
    args, kwargs = _args(CASES[0])
    x, packed, wb, shape = args
    torch.library.opcheck(torch.ops.mmaqd.quant_conv2d.default, (
        x, packed, wb, list(shape), kwargs['w_offset'], 4, 12, kwargs['bias'], kwargs['multiplier'], kwargs['shift'],
        7, 0, 15, 15, True, [1, 1], [1, 1], [1, 1], 1))


def test_errors_match_the_reference():
    packed = pack_codes(torch.full((1, 4), 255), 8)
    x = torch.full((1, 4, 1, 1), 255)
    for fn in (quant_conv2d, quant_conv2d_reference):
        with pytest.raises(OverflowError, match='leaves int32'):
            fn(x, packed, 8, (1, 4, 1, 1), frac_bits=16)
        with pytest.raises(TypeError):
            fn(x.float(), packed, 8, (1, 4, 1, 1))


@pytest.mark.parametrize('env', [dict(MMAQD_FORCE_SCALAR='1'), dict(MMAQD_ISA='avx2')],
                         ids=['scalar', 'avx2'])
def test_vector_and_scalar_paths_agree(tmp_path, env):
    outs = {}
    for case in CASES:
        args, kwargs = _args(case)
        outs[case] = quant_conv2d(*args, **kwargs)
    torch.save(outs, tmp_path / 'avx2.pt')
    code = f"""
import torch, sys
sys.path.insert(0, {os.path.dirname(__file__)!r})
from test_quant_conv_ext import CASES, _args
from mmaqd.ops import quant_conv2d, active_path
assert active_path().startswith('compiled'), active_path()
want = torch.load({str(tmp_path / 'avx2.pt')!r})
ok = all(torch.equal(quant_conv2d(*a, **k), want[c]) for c in CASES for a, k in [_args(c)])
print('OK' if ok else 'DIFFERENT')
"""
    env = dict(os.environ, **env)
    result = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, env=env, timeout=300)
    assert result.stdout.strip().endswith('OK'), result.stdout + result.stderr


def test_integer_detector_is_the_same_with_and_without_the_extension(monkeypatch):
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), 'test_deploy'))
    from tiny_models import FCOS_F8L8, tiny_quantized
    from mmaqd.deploy.converter import convert_detector
    model, x = tiny_quantized(FCOS_F8L8, bits=2)
    net = convert_detector(model).network
    with torch.no_grad():
        compiled = net(x)
        monkeypatch.setattr(qc, 'extension_available', lambda: False)
        reference = net(x)
    for name in compiled:
        assert all(torch.equal(a, b) for a, b in zip(compiled[name], reference[name]))


@pytest.mark.parametrize('case', [CASES[0], CASES[3], CASES[4], CASES[5]])
def test_prepacked_weights_give_the_same_integers(case):
    args, kwargs = _args(case)
    x, packed, wb, shape = args
    prepacked = prepack_conv_weight(packed, wb, shape, kwargs['groups'])
    assert prepacked is not None and prepacked.dim() == 1
    fake = torch.library.opcheck(torch.ops.mmaqd.quant_conv2d_prepack.default, (packed, wb, list(shape),
                                                                                 kwargs['groups']))
    assert fake is not None
    assert torch.equal(quant_conv2d(*args, **kwargs, prepacked=prepacked), quant_conv2d_reference(*args, **kwargs))


@pytest.mark.parametrize('signed', [False, True])
@pytest.mark.parametrize('with_bias', [False, True])
def test_compiled_requantize_equals_the_reference(signed, with_bias):
    gen = torch.Generator().manual_seed(3)
    acc = torch.randint(-(1 << 28), 1 << 28, (2, 5, 7, 3), generator=gen, dtype=torch.int32)
    m0, sh = quantize_multiplier(torch.rand(5, generator=gen, dtype=torch.float64) * 1e-6 + 1e-8)
    bias = torch.randint(-1000, 1000, (5,), generator=gen, dtype=torch.int32) if with_bias else None
    args = (acc, m0, sh, bias, 7 if signed else 0, 0, 15, 15, signed)
    ours = requantize_values(*args)
    monkey = codes_to_values(requantize(acc, m0, sh, bias, args[4], 0, 15), 15, signed)
    assert ours.dtype == torch.int32 and torch.equal(ours, monkey)
    assert len(ours.unique()) > 5  # the values spread over the grid: the test sees the rounding
    torch.library.opcheck(torch.ops.mmaqd.requantize.default, args)


@pytest.mark.parametrize('two', [False, True])
def test_compiled_quant_add_equals_the_reference(two):
    gen = torch.Generator().manual_seed(4)
    a = 2 * torch.randint(0, 16, (2, 4, 6, 6), generator=gen, dtype=torch.int32) - 15
    b = torch.randint(0, 16, (2, 4, 6, 6), generator=gen, dtype=torch.int32) if two else None
    s_a, s_b, s_out = 0.11, 0.07, 0.09
    smax = max(s_a, s_b)
    am, ash = quantize_multiplier(torch.tensor(s_a / (2 * smax), dtype=torch.float64))
    bm, bsh = quantize_multiplier(torch.tensor(s_b / (2 * smax), dtype=torch.float64))
    om, osh = quantize_multiplier(torch.tensor(2 * smax / (2 ** 20 * 2 * s_out), dtype=torch.float64))
    bias = round(0.5 / (2 * smax / (2 ** 20 * 2 * s_out)))
    args = (a, am, ash, b, bm if two else None, bsh if two else None, 20, bias, om, osh, 7, 0, 15, 15, True)
    ours = quant_add(*args)
    assert torch.equal(ours, quant_add_reference(*args))
    assert len(ours.unique()) > 4
