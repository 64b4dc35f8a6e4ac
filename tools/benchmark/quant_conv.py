"""Speed of mmaqd's quantized convolution (``mmaqd.ops.quant_conv2d``) against fbgemm int8 and FP32 PyTorch.

    python tools/benchmark/quant_conv.py                      # both detectors' layers, 2/3/4/8 bits, 1 and 2 threads
    python tools/benchmark/quant_conv.py --detector synth --threads 1 --reps 5

For every layer shape of the benchmark FCOS (192x192 input, ResNet-18 at half width, 64-channel FPN and head) and
of the COCO-size ResNet-18 FCOS (800x1216 input, 256-channel FPN and head), at each bit width and thread count,
the median time (interleaved repetitions) of:

* mmaqd: ``quant_conv2d`` on integer codes, weights packed at the bit width, with its whole output stage (LIQ's
  weight-offset term, bias, per-channel fixed-point requantization, clamp) - what the integer detector runs;
* fbgemm: ``torch.ops.quantized.conv2d`` (quint8 activations x per-channel qint8 weights, prepacked, requantized
  output), the best int8 CPU convolution in PyTorch;
* fp32: ``torch.nn.functional.conv2d`` (oneDNN).

Prints one table per detector and thread count with the ratio fbgemm / mmaqd (> 1: mmaqd faster) and fp32 /
mmaqd, then the targets: geometric mean over the layers of fbgemm / mmaqd >= 1.0 at 8 bits, 1.3 at 4 bits and
1.8 at 2 bits; a missed target is printed as MISSED. The machine is printed too. Activations are unsigned codes
(after a ReLU) except the 8-bit stem's signed image values.
"""
import argparse
import math
import platform
import statistics
import time
import warnings
from typing import Dict, List, NamedTuple

import torch
import torch.nn.functional as F

from mmaqd.ops import active_path, pack_codes, prepack_conv_weight, quant_conv2d, quantize_multiplier

TARGETS = {8: 1.0, 4: 1.3, 2: 1.8}


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
    x = (2 * codes_x - q_x if layer.first else codes_x).to(torch.int32)
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


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--detector', nargs='+', default=list(DETECTORS), choices=list(DETECTORS))
    parser.add_argument('--bits', nargs='+', type=int, default=[2, 3, 4, 8], choices=[2, 3, 4, 5, 6, 7, 8])
    parser.add_argument('--threads', nargs='+', type=int, default=[1, 2])
    parser.add_argument('--reps', type=int, default=7, help='timed repetitions per layer (median)')
    args = parser.parse_args(argv)
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
