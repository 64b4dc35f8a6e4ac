"""The compiled ops (mmaqd/ops/csrc) against their PyTorch references, bit for bit, on the CPU and on CUDA:
quant_conv2d over random shapes, bits, strides, padding, dilation, groups, odd sizes and empty batches, with and
without prepacked weights; requantize and quant_add; the schemas (torch.library.opcheck); the vector and scalar
CPU paths against each other, and the CUDA tensor-core and generic kernels; and a whole integer detector with and
without the extension, and on CUDA against the CPU. Skipped, with the reason, when the extension is not built
(MMAQD_WITH_OPS=0); the CUDA cases when no GPU is visible or the extension was built without its CUDA kernels
(FORCE_CUDA=1 builds them; tools/benchmark/cuda_check.sh runs these tests on a GPU machine)."""
import os
import subprocess
import sys

import pytest
import torch

import mmaqd.ops.quant_conv as qc
from mmaqd.ops import (active_path, codes_to_values, cuda_ops_available, extension_available, pack_codes,
                       prepack_conv_weight, quant_add, quant_add_reference, quant_conv2d, quant_conv2d_reference,
                       quantize_multiplier, requantize, requantize_values)

pytestmark = pytest.mark.skipif(not extension_available(), reason=f'compiled ops not loaded: {active_path()}')

NEEDS_CUDA = pytest.mark.skipif(not cuda_ops_available(),
                                reason='no GPU visible, or mmaqd._ext was built without its CUDA kernels '
                                       f'(FORCE_CUDA=1): {active_path()}')
DEVICES = ['cpu', pytest.param('cuda', marks=NEEDS_CUDA)]

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
# what the CUDA tensor-core path handles beyond CASES: 8-bit weights (two int8 GEMM columns per channel) with 4-bit
# and 8-bit unsigned inputs, 8-bit unsigned inputs (zero point 128) with sub-byte weights, several N tiles with a
# ragged last one, K not a multiple of 64, 1x1 convs, dilation with padding, 5- and 6-bit weights (int8 values),
# more than one M tile, stride 2 with a ragged output
TC_CASES = [
    (1, 16, 9, 13, 70, 3, 1, 1, 1, 1, 8, 4, False, True, True),
    (2, 24, 7, 9, 33, 3, 2, 1, 1, 1, 4, 8, False, True, False),
    (1, 32, 12, 12, 150, 1, 1, 0, 1, 1, 3, 3, True, True, True),
    (1, 16, 11, 10, 20, 3, 1, 2, 2, 1, 2, 2, False, True, True),
    (1, 8, 6, 6, 10, 3, 1, 1, 1, 1, 6, 4, False, True, True),
    (1, 40, 9, 9, 24, 3, 1, 1, 1, 1, 5, 4, True, False, True),
    (2, 16, 11, 13, 16, 3, 1, 1, 1, 1, 4, 4, False, True, True),
    (1, 24, 13, 11, 40, 3, 2, 1, 1, 1, 8, 8, False, True, True),
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


def _requantize_args(with_bias):
    """``(acc, m0, shift, bias)`` for requantize: int32 accumulators (2, 5, 7, 3) up to 2^28, per-channel
    multipliers of scales about 1e-6, and an int32 bias (``None`` unless ``with_bias``)."""
    gen = torch.Generator().manual_seed(3)
    acc = torch.randint(-(1 << 28), 1 << 28, (2, 5, 7, 3), generator=gen, dtype=torch.int32)
    m0, sh = quantize_multiplier(torch.rand(5, generator=gen, dtype=torch.float64) * 1e-6 + 1e-8)
    bias = torch.randint(-1000, 1000, (5,), generator=gen, dtype=torch.int32) if with_bias else None
    return acc, m0, sh, bias


def _on(device, args, kwargs):
    """The arguments of _args with every tensor on ``device``."""
    move = lambda v: v.to(device) if isinstance(v, torch.Tensor) else v  # noqa: E731
    return tuple(move(a) for a in args), {k: move(v) for k, v in kwargs.items()}


@pytest.mark.parametrize('device', DEVICES)
@pytest.mark.parametrize('case', CASES + TC_CASES)
@pytest.mark.parametrize('seed', [0, 1])
def test_compiled_op_equals_the_reference_bit_for_bit(case, seed, device):
    args, kwargs = _args(case, seed)
    ref = quant_conv2d_reference(*args, **kwargs)
    args, kwargs = _on(device, args, kwargs)
    ours = quant_conv2d(*args, **kwargs)
    assert ours.device.type == device
    assert ours.dtype == ref.dtype == torch.int32 and ours.shape == ref.shape
    assert torch.equal(ours.cpu(), ref)


@pytest.mark.parametrize('device', DEVICES)
def test_opcheck(device):
    args, kwargs = _on(device, *_args(CASES[0]))
    x, packed, wb, shape = args
    torch.library.opcheck(torch.ops.mmaqd.quant_conv2d.default, (
        x, packed, wb, list(shape), kwargs['w_offset'], 4, 12, kwargs['bias'], kwargs['multiplier'], kwargs['shift'],
        7, 0, 15, 15, True, [1, 1], [1, 1], [1, 1], 1))


@pytest.mark.parametrize('device', DEVICES)
def test_errors_match_the_reference(device):
    packed = pack_codes(torch.full((1, 4), 255), 8).to(device)
    x = torch.full((1, 4, 1, 1), 255, device=device)
    for fn in (quant_conv2d, quant_conv2d_reference):
        with pytest.raises(OverflowError, match='leaves int32'):
            fn(x, packed, 8, (1, 4, 1, 1), frac_bits=16)
        with pytest.raises(TypeError):
            fn(x.float(), packed, 8, (1, 4, 1, 1))
        with pytest.raises(RuntimeError, match='stride'):  # checked before the compiled op divides by it
            fn(x, packed, 8, (1, 4, 1, 1), stride=0)


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
    pytest.importorskip('mmdet', reason='needs mmdet to build a tiny detector')
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), 'test_deploy'))
    from mmaqd.deploy.converter import convert_detector
    from tiny_models import FCOS_F8L8, tiny_quantized
    model, x = tiny_quantized(FCOS_F8L8, bits=2)
    net = convert_detector(model).network
    with torch.no_grad():
        compiled = net(x)
        monkeypatch.setattr(qc, 'extension_available', lambda: False)
        reference = net(x)
    for name in compiled:
        assert all(torch.equal(a, b) for a, b in zip(compiled[name], reference[name]))


@pytest.mark.parametrize('device', DEVICES)
@pytest.mark.parametrize('case', [CASES[0], CASES[3], CASES[4], CASES[5], TC_CASES[0]])
def test_prepacked_weights_give_the_same_integers(case, device):
    args, kwargs = _args(case)
    ref = quant_conv2d_reference(*args, **kwargs)
    args, kwargs = _on(device, args, kwargs)
    x, packed, wb, shape = args
    prepacked = prepack_conv_weight(packed, wb, shape, kwargs['groups'])
    assert prepacked is not None and prepacked.dim() == 1 and prepacked.device == packed.device
    fake = torch.library.opcheck(torch.ops.mmaqd.quant_conv2d_prepack.default,
                                 (packed, wb, list(shape), kwargs['groups']))
    assert fake is not None
    assert torch.equal(quant_conv2d(*args, **kwargs, prepacked=prepacked).cpu(), ref)


@pytest.mark.parametrize('device', DEVICES)
@pytest.mark.parametrize('signed', [False, True])
@pytest.mark.parametrize('with_bias', [False, True])
def test_compiled_requantize_equals_the_reference(signed, with_bias, device):
    acc, m0, sh, bias = _requantize_args(with_bias)
    want = codes_to_values(requantize(acc, m0, sh, bias, 7 if signed else 0, 0, 15), 15, signed)
    on = lambda t: None if t is None else t.to(device)  # noqa: E731
    args = (on(acc), on(m0), on(sh), on(bias), 7 if signed else 0, 0, 15, 15, signed)
    ours = requantize_values(*args)
    assert ours.dtype == torch.int32 and ours.device.type == device and torch.equal(ours.cpu(), want)
    assert len(ours.unique()) > 5  # the values spread over the grid: the test sees the rounding
    torch.library.opcheck(torch.ops.mmaqd.requantize.default, args)


@pytest.mark.parametrize('device', DEVICES)
@pytest.mark.parametrize('two', [False, True])
def test_compiled_quant_add_equals_the_reference(two, device):
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
    want = quant_add_reference(*args)
    ours = quant_add(a.to(device), *args[1:3], None if b is None else b.to(device), *args[4:])
    assert ours.device.type == device and torch.equal(ours.cpu(), want)
    assert len(ours.unique()) > 4
    op_args = (a.to(device), int(am), int(ash), None if b is None else b.to(device), int(bm) if two else 0,
               int(bsh) if two else 0, 20, bias, int(om), int(osh), 7, 0, 15, 15, True)
    torch.library.opcheck(torch.ops.mmaqd.quant_add.default, op_args)


CHANNELS_LAST = torch.channels_last


@pytest.mark.parametrize('case', CASES + TC_CASES[:3])
@pytest.mark.parametrize('dtype', [torch.int32, torch.int16, torch.int64])
def test_channels_last_in_channels_last_out_with_the_same_integers(case, dtype):
    """The integer network keeps its tensors channels-last: the CPU op reads them without a transpose and writes
    its output channels-last too (an NCHW input keeps an NCHW output), with the reference's integers."""
    args, kwargs = _args(case)
    ref = quant_conv2d_reference(*args, **kwargs)
    x = args[0].to(dtype).contiguous(memory_format=CHANNELS_LAST)
    ours = quant_conv2d(x, *args[1:], **kwargs)
    assert torch.equal(ours, ref)
    if ref.numel() and ref.shape[1] > 1 and ref.shape[2] * ref.shape[3] > 1:  # else both formats are one layout
        assert ours.is_contiguous(memory_format=CHANNELS_LAST) and not ours.is_contiguous()
        nchw = quant_conv2d(args[0], *args[1:], **kwargs)
        assert nchw.is_contiguous() and torch.equal(nchw, ref)


def test_channels_last_requantize_per_channel_with_left_shifts():
    """Channels-last accumulators are requantized per pixel, 8 channels per vector with per-lane multipliers;
    channels whose multiplier exceeds 1 (a left shift) and a channel tail go through the scalar loop."""
    gen = torch.Generator().manual_seed(5)
    acc = torch.randint(-(1 << 20), 1 << 20, (2, 19, 5, 7), generator=gen, dtype=torch.int32)
    scales = torch.rand(19, generator=gen, dtype=torch.float64) * 1e-4 + 1e-6
    scales[[2, 11]] = torch.tensor([3.0, 1.5], dtype=torch.float64) / (1 << 10)  # and two multipliers > 1 below
    acc[:, [2, 11]] //= 1 << 12
    scales[[5]] = 2.5
    acc[:, 5] = torch.randint(-100, 100, (2, 5, 7), generator=gen, dtype=torch.int32)
    m0, sh = quantize_multiplier(scales)
    assert (sh > 0).any() and (sh < 0).any()
    bias = torch.randint(-1000, 1000, (19,), generator=gen, dtype=torch.int32)
    want = codes_to_values(requantize(acc, m0, sh, bias, 7, 0, 15), 15, True)
    ours = requantize_values(acc.contiguous(memory_format=CHANNELS_LAST), m0, sh, bias, 7, 0, 15, 15, True)
    assert ours.is_contiguous(memory_format=CHANNELS_LAST) and torch.equal(ours, want)
    assert len(ours.unique()) > 5


@pytest.mark.parametrize('b_format', [CHANNELS_LAST, torch.contiguous_format])
def test_channels_last_quant_add_keeps_the_format(b_format):
    gen = torch.Generator().manual_seed(6)
    a = torch.randint(-15, 16, (2, 6, 5, 4), generator=gen, dtype=torch.int32)
    b = torch.randint(0, 16, (2, 6, 5, 4), generator=gen, dtype=torch.int32)
    am, ash = quantize_multiplier(torch.tensor(0.4, dtype=torch.float64))
    bm, bsh = quantize_multiplier(torch.tensor(0.3, dtype=torch.float64))
    om, osh = quantize_multiplier(torch.tensor(1e-5, dtype=torch.float64))
    args = (am, ash, b, bm, bsh, 20, 100, om, osh, 7, 0, 15, 15, True)
    want = quant_add_reference(a, *args)
    ours = quant_add(a.contiguous(memory_format=CHANNELS_LAST), am, ash, b.contiguous(memory_format=b_format),
                     *args[3:])
    assert ours.is_contiguous(memory_format=CHANNELS_LAST) and torch.equal(ours, want)
    assert len(want.unique()) > 4


# ------------------------------------------------------------------------------------------ CUDA only
@NEEDS_CUDA
@pytest.mark.parametrize('case', CASES + TC_CASES)
def test_cuda_tensor_core_and_generic_kernels_agree(case, monkeypatch):
    """Both CUDA conv kernels give the reference's integers; the tensor cores take every one-group conv whose
    input fits int8 values or 8-bit codes (mmaqd::cuda_last_conv_path says which kernel ran)."""
    args, kwargs = _args(case)
    ref = quant_conv2d_reference(*args, **kwargs)
    args, kwargs = _on('cuda', args, kwargs)
    x = args[0]
    assert torch.equal(quant_conv2d(*args, **kwargs).cpu(), ref)
    if x.numel():
        fits = (x.min() >= -128 and x.max() <= 127) or (x.min() >= 0 and x.max() <= 255)
        want = 1 if kwargs['groups'] == 1 and fits else 2
        assert torch.ops.mmaqd.cuda_last_conv_path() == want
    monkeypatch.setenv('MMAQD_CUDA_FORCE_GENERIC', '1')
    assert torch.equal(quant_conv2d(*args, **kwargs).cpu(), ref)
    if x.numel():
        assert torch.ops.mmaqd.cuda_last_conv_path() == 2


@NEEDS_CUDA
@pytest.mark.parametrize('dtype', [torch.uint8, torch.int8, torch.int16, torch.int64])
def test_cuda_input_dtypes_and_layouts(dtype):
    args, kwargs = _args(CASES[0])
    ref = quant_conv2d_reference(*args, **kwargs)
    args, kwargs = _on('cuda', args, kwargs)
    x = args[0].to(dtype)
    assert torch.equal(quant_conv2d(x, *args[1:], **kwargs).cpu(), ref)
    x_cl = x.contiguous(memory_format=torch.channels_last)  # a strided input
    assert torch.equal(quant_conv2d(x_cl, *args[1:], **kwargs).cpu(), ref)


@NEEDS_CUDA
def test_cuda_unchecked_mode_gives_the_same_integers(monkeypatch):
    monkeypatch.setenv('MMAQD_CUDA_CHECK', '0')  # no synchronisation: overflow not reported, results unchanged
    args, kwargs = _args(TC_CASES[0])
    ref = quant_conv2d_reference(*args, **kwargs)
    args, kwargs = _on('cuda', args, kwargs)
    assert torch.equal(quant_conv2d(*args, **kwargs).cpu(), ref)


def _integer_network():
    """An integer network on the CPU: the artefact at MMAQD_TEST_ARTEFACT (made on a CPU machine, so a GPU box
    without mmdet can run this), else a tiny converted FCOS (needs mmdet)."""
    artefact = os.getenv('MMAQD_TEST_ARTEFACT')
    if artefact:
        from mmaqd.deploy.artefact import load_network
        net = load_network(artefact)
        x = torch.randn(2, 3, 64, 96, generator=torch.Generator().manual_seed(0))
        return net, x
    pytest.importorskip('mmdet', reason='needs mmdet to build a tiny detector (or MMAQD_TEST_ARTEFACT=<artefact dir>)')
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), 'test_deploy'))
    from mmaqd.deploy.converter import convert_detector
    from tiny_models import FCOS_F8L8, tiny_quantized
    model, x = tiny_quantized(FCOS_F8L8, bits=4)
    return convert_detector(model).network, x


@NEEDS_CUDA
def test_integer_detector_on_cuda_equals_the_cpu():
    """The whole integer network on CUDA gives the CPU's integers. The float -> integer input quantizers' outputs
    are taken from the CPU run (teacher forcing), so that a last-bit difference of float arithmetic between the
    devices cannot move a rounding tie; everything after them is integer and must match exactly."""
    from mmaqd.deploy.network import Quantize, layer_key
    net, x = _integer_network()
    quantized = [name for node in net.nodes if node['op'] == 'layer'
                 and isinstance(net.layers[layer_key(node['layer'])], Quantize) for name in node['outputs']]
    with torch.no_grad():
        cpu = net(x, keep=quantized)
        kept = cpu.pop('_kept')
        gpu = net.to('cuda')(x.to('cuda'), override={k: v.to('cuda') for k, v in kept.items()})
    assert set(cpu) == set(gpu) and cpu
    for name in cpu:
        for a, b in zip(cpu[name], gpu[name]):
            assert b.device.type == 'cuda' and a.dtype == b.dtype and a.shape == b.shape
            if a.is_floating_point():  # a float island's output
                assert torch.allclose(a, b.cpu(), rtol=1e-4, atol=1e-4)
            else:
                assert torch.equal(a, b.cpu())
