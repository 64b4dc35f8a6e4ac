"""Speed of mmaqd's quantized convolution (``mmaqd.ops.quant_conv2d``) against fbgemm int8 and FP32 PyTorch on the
CPU, and against cuDNN bf16 and cuBLAS int8 on a GPU (``--device cuda``).

    python tools/benchmark/quant_conv.py                      # both detectors' layers, 2/3/4/8 bits, 1 and 2 threads
    python tools/benchmark/quant_conv.py --detector synth --threads 1 --reps 5
    python tools/benchmark/quant_conv.py --device cuda        # COCO-size R18 FCOS layers, 2/4/8 bits, batch 1 and 8

For every layer shape of the benchmark FCOS (192x192 input, ResNet-18 at half width, 64-channel FPN and head) and
of the COCO-size ResNet-18 FCOS (800x1216 input, 256-channel FPN and head), at each bit width and thread count,
the median time (interleaved repetitions) of:

* mmaqd: ``quant_conv2d`` on integer codes, weights packed at the bit width, with its whole output stage (LIQ's
  weight-offset term, bias, per-channel fixed-point requantization, clamp) - what the integer detector runs;
* fbgemm: ``torch.ops.quantized.conv2d`` (quint8 activations x per-channel qint8 weights, prepacked, requantized
  output), the best int8 CPU convolution in PyTorch;
* fp32: ``torch.nn.functional.conv2d`` (oneDNN).

Every input is channels-last (NHWC), the layout each of them runs in a deployed network (the integer network
keeps its int32 tensors channels-last; fbgemm converts an NCHW input to NHWC on every call).

Prints one table per detector and thread count with the ratio fbgemm / mmaqd (> 1: mmaqd faster) and fp32 /
mmaqd, then the targets: geometric mean over the layers of fbgemm / mmaqd >= 1.0 at 8 bits, 1.3 at 4 bits and
1.8 at 2 bits; a missed target is printed as MISSED. The machine is printed too. Activations are unsigned codes
(after a ReLU) except the 8-bit stem's signed image values.

``--device cuda`` (needs a GPU and mmaqd._ext built with its CUDA kernels: ``FORCE_CUDA=1 pip install
--no-build-isolation --use-pep517 -e .``; tools/benchmark/cuda_check.sh does both) times, per layer of the
COCO-size R18 FCOS and batch size, with CUDA events (median of interleaved repetitions):

* mmaqd: ``quant_conv2d`` on CUDA tensors (int32 codes in and out, weights prepacked once), with its whole output
  stage; as the integer detector calls it (status checked: one device-to-host read per call) and without that read
  (``MMAQD_CUDA_CHECK=0``, "no sync"); which kernel ran (tensor cores or the generic CUDA-core kernel) is printed;
* cuDNN bf16: ``F.conv2d`` on channels-last bf16 tensors, ``torch.backends.cudnn.benchmark = True``;
* int8 GEMM: ``torch._int_mm`` (cuBLASLt int8 x int8 -> int32) over an im2col of the int8 NHWC input, with the
  im2col copy ("im2col+mm") and without it ("mm");

then the ratios cuDNN bf16 / mmaqd (> 1: mmaqd faster) and the target: mmaqd >= 1.5x cuDNN bf16 at 4 bits on the
large shapes (geometric mean over the layers at the largest batch, the 8-bit stem excluded), printed as met or
MISSED, for the op as the detector calls it and without the status read.
"""
import argparse
import math
import os
import platform
import statistics
import sys
import time
import warnings
from typing import Dict, List, NamedTuple

import torch
import torch.nn.functional as F

from mmaqd.ops import (active_path, cuda_ops_available, pack_codes, prepack_conv_weight, quant_conv2d,
                       quantize_multiplier)

TARGETS = {8: 1.0, 4: 1.3, 2: 1.8}
CUDA_TARGET = (4, 1.5)  # bits, speed-up over cuDNN bf16 on the large shapes (batch 8, stem excluded)


class Layer(NamedTuple):
    name: str
    c_in: int
    c_out: int
    k: int
    stride: int
    h: int  # input height
    w: int  # input width
    first: bool = False  # the stem: 8-bit signed input


def fcos_layers(h: int, w: int, base: int, neck: int) -> List[Layer]:
    """Distinct conv shapes of an FCOS with a ResNet-18 (base width ``base``), FPN and head of ``neck`` channels."""
    s = lambda f: (math.ceil(h / f), math.ceil(w / f))  # noqa: E731
    return [
        Layer('stem 7x7/2', 3, base, 7, 2, h, w, first=True),
        Layer('layer1 3x3', base, base, 3, 1, *s(4)),
        Layer('layer2 3x3/2', base, 2 * base, 3, 2, *s(4)),
        Layer('layer2 3x3', 2 * base, 2 * base, 3, 1, *s(8)),
        Layer('layer3 3x3', 4 * base, 4 * base, 3, 1, *s(16)),
        Layer('layer4 3x3', 8 * base, 8 * base, 3, 1, *s(32)),
        Layer('lateral C3 1x1', 2 * base, neck, 1, 1, *s(8)),
        Layer('fpn P3 3x3', neck, neck, 3, 1, *s(8)),
        Layer('head P3 3x3', neck, neck, 3, 1, *s(8)),
        Layer('head P5 3x3', neck, neck, 3, 1, *s(32)),
    ]


DETECTORS = {'synth': ('benchmark FCOS, 192x192', fcos_layers(192, 192, 32, 64)),
             'coco': ('COCO-size R18 FCOS, 800x1216', fcos_layers(800, 1216, 64, 256))}


def _median_interleaved(fns: Dict[str, callable], reps: int) -> Dict[str, float]:
    for fn in fns.values():
        fn()  # warm-up
    times = {k: [] for k in fns}
    for _ in range(reps):
        for k, fn in fns.items():
            t = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in times.items()}


def bench_layer(layer: Layer, bits: int, reps: int) -> Dict[str, float]:
    gen = torch.Generator().manual_seed(0)
    x_bits = 8 if layer.first else bits
    q_x, q_w = (1 << x_bits) - 1, (1 << bits) - 1
    codes_x = torch.randint(0, q_x + 1, (1, layer.c_in, layer.h, layer.w), generator=gen)
    x = (2 * codes_x - q_x if layer.first else codes_x).to(torch.int32).contiguous(memory_format=torch.channels_last)
    codes_w = torch.randint(0, q_w + 1, (layer.c_out, layer.c_in * layer.k * layer.k), generator=gen)
    packed = pack_codes(codes_w, bits)
    m0, shift = quantize_multiplier(torch.full((layer.c_out,), 1e-4, dtype=torch.float64))
    pad = layer.k // 2
    shape = (layer.c_out, layer.c_in, layer.k, layer.k)
    offset = torch.full((layer.c_out,), 3, dtype=torch.int32)
    bias = torch.zeros(layer.c_out, dtype=torch.int32)

    prepacked = prepack_conv_weight(packed, bits, shape)  # once, as the integer model does at load

    def ours():
        quant_conv2d(x, packed, bits, shape, offset, 2, 10, bias, m0, shift, 7, 0, 15, 15, True, layer.stride, pad,
                     prepacked=prepacked)

    xf = x.float()
    wf = (2 * codes_w - q_w).float().view(shape)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')  # PyTorch's deprecation notice of quantized tensors
        qx = torch.quantize_per_tensor(xf, 1.0, 128 if layer.first else 0, torch.quint8)
        qw = torch.quantize_per_channel(wf, torch.ones(layer.c_out, dtype=torch.float64),
                                        torch.zeros(layer.c_out, dtype=torch.long), 0, torch.qint8)
        fb_packed = torch.ops.quantized.conv2d_prepack(qw, None, [layer.stride] * 2, [pad] * 2, [1, 1], 1)

    def fbgemm():
        torch.ops.quantized.conv2d(qx, fb_packed, 1000.0, 0)

    def fp32():
        F.conv2d(xf, wf, None, layer.stride, pad)

    return _median_interleaved(dict(mmaqd=ours, fbgemm=fbgemm, fp32=fp32), reps)


def geomean(values: List[float]) -> float:
    return math.exp(sum(math.log(v) for v in values) / len(values))


# ------------------------------------------------------------------------------------------------- CUDA
def _median_cuda(fns: Dict[str, callable], reps: int) -> Dict[str, float]:
    """Median seconds per call of each function, timed with CUDA events; each repetition runs every function
    (interleaved) ``inner`` times back to back, ``inner`` chosen so that a repetition lasts about 20 ms."""
    inner = {}
    for k, fn in fns.items():
        fn()  # warm-up (cuDNN's algorithm search, the prepack)
        torch.cuda.synchronize()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        inner[k] = max(1, min(200, int(20.0 / max(start.elapsed_time(end), 1e-3))))
    times = {k: [] for k in fns}
    for _ in range(reps):
        for k, fn in fns.items():
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(inner[k]):
                fn()
            end.record()
            torch.cuda.synchronize()
            times[k].append(start.elapsed_time(end) / 1e3 / inner[k])
    return {k: statistics.median(v) for k, v in times.items()}


def _im2col_int8(x_nhwc: torch.Tensor, k: int, stride: int, pad: int) -> torch.Tensor:
    """(N * OH * OW, k * k * C) int8 rows of a padded NHWC int8 tensor (one strided copy)."""
    n, h, w, c = x_nhwc.shape
    xp = F.pad(x_nhwc, (0, 0, pad, pad, pad, pad))
    oh, ow = (h + 2 * pad - k) // stride + 1, (w + 2 * pad - k) // stride + 1
    s_n, s_h, s_w, s_c = xp.stride()
    cols = xp.as_strided((n, oh, ow, k, k, c), (s_n, s_h * stride, s_w * stride, s_h, s_w, s_c))
    return cols.reshape(n * oh * ow, k * k * c)


def bench_layer_cuda(layer: Layer, bits: int, batch: int, reps: int) -> Dict[str, float]:
    """Median seconds of mmaqd (checked and unsynchronised), and the path its conv took (1 tensor cores)."""
    gen = torch.Generator().manual_seed(0)
    x_bits = 8 if layer.first else bits
    q_x, q_w = (1 << x_bits) - 1, (1 << bits) - 1
    codes_x = torch.randint(0, q_x + 1, (batch, layer.c_in, layer.h, layer.w), dtype=torch.int32, device='cuda',
                            generator=torch.Generator(device='cuda').manual_seed(0))
    x = 2 * codes_x - q_x if layer.first else codes_x
    codes_w = torch.randint(0, q_w + 1, (layer.c_out, layer.c_in * layer.k * layer.k), generator=gen)
    packed = pack_codes(codes_w, bits).cuda()
    m0, shift = quantize_multiplier(torch.full((layer.c_out,), 1e-4, dtype=torch.float64))
    m0, shift = m0.cuda(), shift.cuda()
    pad = layer.k // 2
    shape = (layer.c_out, layer.c_in, layer.k, layer.k)
    offset = torch.full((layer.c_out,), 3, dtype=torch.int32, device='cuda')
    bias = torch.zeros(layer.c_out, dtype=torch.int32, device='cuda')
    prepacked = prepack_conv_weight(packed, bits, shape)

    def ours():
        quant_conv2d(x, packed, bits, shape, offset, 2, 10, bias, m0, shift, 7, 0, 15, 15, True, layer.stride, pad,
                     prepacked=prepacked)

    def ours_nosync():
        os.environ['MMAQD_CUDA_CHECK'] = '0'
        try:
            ours()
        finally:
            os.environ.pop('MMAQD_CUDA_CHECK')

    t = _median_cuda(dict(mmaqd=ours, mmaqd_nosync=ours_nosync), reps)
    ours()
    t['path'] = int(torch.ops.mmaqd.cuda_last_conv_path())
    return t


def bench_baselines_cuda(layer: Layer, batch: int, reps: int) -> Dict[str, float]:
    """Median seconds of cuDNN bf16 (channels-last) and of cuBLASLt int8 over an im2col, for one layer shape."""
    gen = torch.Generator(device='cuda').manual_seed(1)
    pad = layer.k // 2
    x8 = torch.randint(-8, 8, (batch, layer.h, layer.w, layer.c_in), generator=gen, dtype=torch.int8, device='cuda')
    w8 = torch.randint(-8, 8, (layer.c_out, layer.k * layer.k * layer.c_in), generator=gen, dtype=torch.int8,
                       device='cuda')
    xb = x8.permute(0, 3, 1, 2).to(torch.bfloat16).contiguous(memory_format=torch.channels_last)
    wb = w8.view(layer.c_out, layer.k, layer.k, layer.c_in).permute(0, 3, 1, 2).to(torch.bfloat16)
    wb = wb.contiguous(memory_format=torch.channels_last)
    fns = dict(bf16=lambda: F.conv2d(xb, wb, None, layer.stride, pad))
    cols = _im2col_int8(x8, layer.k, layer.stride, pad)
    if cols.shape[1] % 8 == 0 and layer.c_out % 8 == 0 and cols.shape[0] > 16:  # torch._int_mm's shape rules
        wt = w8.t()  # (K, C_out), column-major
        try:
            torch._int_mm(cols, wt)
        except RuntimeError as e:  # a layout this torch's _int_mm refuses: try a row-major B
            print(f'  (torch._int_mm with a column-major B: {str(e).splitlines()[0]}; using a row-major copy)')
            wt = wt.contiguous()
        fns['int8_im2col_mm'] = lambda: torch._int_mm(_im2col_int8(x8, layer.k, layer.stride, pad), wt)
        fns['int8_mm'] = lambda: torch._int_mm(cols, wt)
    return _median_cuda(fns, reps)


def main_cuda(args) -> int:
    if not torch.cuda.is_available():
        print('quant_conv.py --device cuda: no GPU visible to torch (torch.cuda.is_available() is False; torch '
              f'{torch.__version__}, CUDA {torch.version.cuda}). Run it on a GPU machine, e.g. through '
              'tools/benchmark/cuda_check.sh.', file=sys.stderr)
        return 2
    if not cuda_ops_available():
        print(f'quant_conv.py --device cuda: mmaqd\'s CUDA kernels are not loaded ({active_path()}). Build them '
              'with FORCE_CUDA=1 pip install --no-build-isolation --use-pep517 --no-deps -e .', file=sys.stderr)
        return 2
    torch.backends.cudnn.benchmark = True
    props = torch.cuda.get_device_properties(0)
    print(f'machine: {props.name} (sm_{props.major}{props.minor}, {props.multi_processor_count} SMs, '
          f'{props.total_memory / 2 ** 30:.0f} GiB), {platform.platform()}, torch {torch.__version__}, '
          f'CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}')
    print(f'mmaqd ops: {active_path()}\n')
    title, layers = DETECTORS['coco']
    summary = {}
    paths = {1: 'TC', 2: 'generic'}
    for batch in args.batch:
        print(f'## {title}, batch {batch}: median ms; (cuDNN bf16 / mmaqd) with the status check, [no sync]; '
              'the kernel that ran (TC: tensor cores)')
        print('| layer | C_in->C_out | input | ' + ' | '.join(f'{b}-bit' for b in args.bits)
              + ' | cuDNN bf16 | int8 im2col+mm | int8 mm |')
        print('|---|---|---|' + '---|' * len(args.bits) + '---|---|---|')
        for layer in layers:
            base = bench_baselines_cuda(layer, batch, args.reps)
            cells = []
            for bits in args.bits:
                t = bench_layer_cuda(layer, bits, batch, args.reps)
                vs = base['bf16'] / t['mmaqd']
                vs_nosync = base['bf16'] / t['mmaqd_nosync']
                if not layer.first:
                    summary.setdefault((batch, bits), []).append(vs_nosync)
                    summary.setdefault((batch, bits, 'checked'), []).append(vs)
                cells.append(f'{1e3 * t["mmaqd"]:.3f} ({vs:.2f}x) [{1e3 * t["mmaqd_nosync"]:.3f}, {vs_nosync:.2f}x] '
                             f'{paths.get(t["path"], "?")}')
            mm = ' | '.join(f'{1e3 * base[k]:.3f}' if k in base else '-' for k in ('int8_im2col_mm', 'int8_mm'))
            print(f'| {layer.name} | {layer.c_in}->{layer.c_out} | {layer.h}x{layer.w} | ' + ' | '.join(cells)
                  + f' | {1e3 * base["bf16"]:.3f} | {mm} |')
            torch.cuda.empty_cache()
        print()
    print('Speed-up over cuDNN bf16 (geometric mean over the layers, stem excluded; no sync / checked):')
    bits_t, target = CUDA_TARGET
    for (batch, bits), ratios in ((k, v) for k, v in summary.items() if len(k) == 2):
        checked = geomean(summary[(batch, bits, 'checked')])
        line = f'  batch {batch}, {bits}-bit: {geomean(ratios):.2f}x / {checked:.2f}x'
        if bits == bits_t and batch == max(args.batch):
            verdict = lambda r: 'met' if r >= target else 'MISSED'  # noqa: E731
            line += (f' (target >= {target}x on the large shapes: {verdict(checked)} as the detector calls it, '
                     f'{verdict(geomean(ratios))} without the status read)')
        print(line)
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--device', default='cpu', choices=['cpu', 'cuda'])
    parser.add_argument('--detector', nargs='+', default=list(DETECTORS), choices=list(DETECTORS))
    parser.add_argument('--bits', nargs='+', type=int, default=None, choices=[2, 3, 4, 5, 6, 7, 8],
                        help='default: 2 3 4 8 (CPU), 2 4 8 (CUDA)')
    parser.add_argument('--threads', nargs='+', type=int, default=[1, 2])
    parser.add_argument('--batch', nargs='+', type=int, default=[1, 8], help='batch sizes (CUDA)')
    parser.add_argument('--reps', type=int, default=None, help='timed repetitions per layer (median; default 7 on '
                        'the CPU, 10 on CUDA)')
    args = parser.parse_args(argv)
    if args.device == 'cuda':
        args.bits = args.bits or [2, 4, 8]
        args.reps = args.reps or 10
        return main_cuda(args)
    args.bits = args.bits or [2, 3, 4, 8]
    args.reps = args.reps or 7
    torch.backends.quantized.engine = 'fbgemm'
    print(f'machine: {platform.platform()}, {platform.processor() or platform.machine()}, '
          f'torch {torch.__version__}, CPU capability {torch.backends.cpu.get_cpu_capability()}')
    isa = {0: 'scalar', 1: 'AVX2', 2: 'AVX-512 VNNI'}.get(int(torch.ops.mmaqd.cpu_isa()), '?') \
        if active_path().startswith('compiled') else '-'
    print(f'mmaqd ops: {active_path()}, kernels: {isa}\n')
    summary = {}
    for det in args.detector:
        title, layers = DETECTORS[det]
        for threads in args.threads:
            torch.set_num_threads(threads)
            print(f'## {title}, {threads} thread(s): median ms (fbgemm / mmaqd, fp32 / mmaqd)')
            print('| layer | C_in->C_out | input | ' + ' | '.join(f'{b}-bit' for b in args.bits) + ' | fbgemm | fp32 |')
            print('|---|---|---|' + '---|' * len(args.bits) + '---|---|')
            for layer in layers:
                cells, ref = [], None
                for bits in args.bits:
                    t = bench_layer(layer, bits, args.reps)
                    ref = ref or t
                    vs_fb, vs_fp = t['fbgemm'] / t['mmaqd'], t['fp32'] / t['mmaqd']
                    summary.setdefault((det, threads, bits), []).append(vs_fb)
                    cells.append(f'{1e3 * t["mmaqd"]:.2f} ({vs_fb:.2f}x, {vs_fp:.2f}x)')
                print(f'| {layer.name} | {layer.c_in}->{layer.c_out} | {layer.h}x{layer.w} | ' + ' | '.join(cells)
                      + f' | {1e3 * ref["fbgemm"]:.2f} | {1e3 * ref["fp32"]:.2f} |')
            print()
    print('Targets (geometric mean over the layers of fbgemm time / mmaqd time):')
    for (det, threads, bits), ratios in summary.items():
        target = TARGETS.get(bits)
        verdict = '-' if target is None else ('met' if geomean(ratios) >= target else 'MISSED')
        print(f'  {det}, {threads} thread(s), {bits}-bit: {geomean(ratios):.2f}x'
              + (f' (target >= {target}x: {verdict})' if target else ''))
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
