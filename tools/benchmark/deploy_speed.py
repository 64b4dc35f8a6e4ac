"""End-to-end speed of the integer detector (an artefact of tools/deploy.py) against the FP32 detector in mmdet,
the FP32 detector exported to ONNX and run by ONNX Runtime, and the quantized detector's QDQ ONNX export
(``tools/deploy.py --format onnx``) run by ONNX Runtime's integer kernels.

    python tools/benchmark/deploy_speed.py                 # the artefacts and checkpoints `make demo` writes
    python tools/benchmark/deploy_speed.py --artefact work_dirs/pipeline/aqd-w2a2-f8l8/integer --threads 1

All run batch 1 on the same test images with the same thread count: mmdet's data preprocessor (normalization,
padding), the network (FP32: backbone, FPN and head convs in float; integer: the IntegerNetwork from the quantized
image to the prediction convs' int32 accumulators, their dequantization and the head's post-conv step; ONNX: one
ONNX Runtime session, CPU execution provider, all graph optimizations) and the box decoding + NMS
(``predict_by_feat``). Prints the median milliseconds per image of each part and of the whole, each baseline's time
over the integer detector's (the best baseline named), the compiled-ops path in use and the machine; target at 4
bits: whole >= 2x the FP32 detector (a missed target is printed as MISSED). The ONNX rows need onnxruntime
(requirements/deploy.txt) and are skipped, with a line saying so, when the artefact has no model.onnx.

``--device cuda`` times the integer network alone (torch and mmaqd, no mmdet: an artefact made on the CPU side is
copied along) against its bf16 twin (:mod:`mmaqd.deploy.float_twin`: the same graph in bf16 on cuDNN) on random
images of ``--size``; target: the integer network >= 1.3x the bf16 one.
"""
import argparse
import io
import os.path as osp
import platform
import statistics
import sys
import time
from typing import Dict, List

import torch

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, osp.join(ROOT, 'tools'))
TARGET = 2.0


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--artefact', default='work_dirs/pipeline/aqd-w4a4-f8l8/integer', help='tools/deploy.py --out')
    p.add_argument('--fp-config', default='configs/fcos/fcos_r18-c32_fpn_bn-head_synth.py')
    p.add_argument('--fp-checkpoint', default='work_dirs/pipeline/fp/final.pth')
    p.add_argument('--num-images', type=int, default=30)
    p.add_argument('--threads', nargs='+', type=int, default=[1, 2])
    p.add_argument('--onnx', default=None, help='the QDQ model (default: ARTEFACT/model.onnx when it exists)')
    p.add_argument('--device', choices=['cpu', 'cuda'], default='cpu',
                   help='cuda: the integer network (torch and mmaqd only) against its bf16 twin on the GPU')
    p.add_argument('--size', nargs=2, type=int, default=[800, 1216], metavar=('H', 'W'),
                   help='with --device cuda: the input size (random images)')
    p.add_argument('--batch', nargs='+', type=int, default=[1, 8], help='with --device cuda: batch sizes')
    args = p.parse_args(argv)
    if args.device == 'cuda':
        if not osp.isdir(args.artefact):
            p.error(f'{args.artefact} does not exist (make one with tools/deploy.py on the CPU side and copy it)')
        return args
    for path in (args.artefact, args.fp_config, args.fp_checkpoint):
        if not osp.exists(path):
            p.error(f'{path} does not exist (run `make demo` first, or pass --artefact / --fp-* paths)')
    return args


def time_parts(model, batches: List[dict]) -> Dict[str, float]:
    """Median seconds per image of preprocessing, network and post-processing (and their sum)."""
    parts = {'preprocess': [], 'network': [], 'postprocess': [], 'whole': []}
    head = model.bbox_head
    with torch.no_grad():
        for i, batch in enumerate(batches):
            t0 = time.perf_counter()
            data = model.data_preprocessor(batch, False)
            t1 = time.perf_counter()
            outs = model._forward(data['inputs'])
            t2 = time.perf_counter()
            metas = [s.metainfo for s in data['data_samples']]
            head.predict_by_feat(*outs, batch_img_metas=metas, rescale=True)
            t3 = time.perf_counter()
            if i == 0:
                continue  # warm-up (prepacks the integer weights once)
            for key, value in (('preprocess', t1 - t0), ('network', t2 - t1), ('postprocess', t3 - t2),
                               ('whole', t3 - t0)):
                parts[key].append(value)
    return {k: statistics.median(v) for k, v in parts.items()}


class _OnnxFP32:
    """The FP32 detector's convs exported to ONNX (torch's exporter) in ONNX Runtime, with the FP32 detector's own
    pre- and post-processing: the ``model`` interface :func:`time_parts` times."""

    def __init__(self, fp_model, threads: int, model: bytes):
        from mmaqd.deploy.onnx_runtime import ort_session
        self.data_preprocessor, self.bbox_head = fp_model.data_preprocessor, fp_model.bbox_head
        self.session = ort_session(model, threads)
        self.groups = len(fp_model.bbox_head.prior_generator.strides)

    def _forward(self, x):
        outs = [torch.from_numpy(o) for o in self.session.run(None, {'image': x.numpy()})]
        return tuple(outs[i:i + self.groups] for i in range(0, len(outs), self.groups))


def export_fp32(fp_model) -> bytes:
    """The FP32 detector's ``forward(mode='tensor')`` as a serialized ONNX model (opset 17, dynamic batch and
    size)."""

    class Flat(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, x):
            return tuple(t for group in self.model(x, mode='tensor') for t in group)

    x, buffer = torch.randn(1, 3, 320, 320), io.BytesIO()
    torch.onnx.export(Flat(fp_model).eval(), (x,), buffer, dynamo=False, opset_version=17, input_names=['image'],
                      dynamic_axes={'image': {0: 'batch', 2: 'height', 3: 'width'}})
    return buffer.getvalue()


CUDA_TARGET = 1.3


def cuda_time(fn, x, reps: int = 20) -> float:
    """Median seconds of ``fn(x)`` on the GPU (CUDA events; 3 warm-up calls)."""
    for _ in range(3):
        fn(x)
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn(x)
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return statistics.median(times)


def main_cuda(args) -> int:
    """The integer network of ``args.artefact`` against its bf16 twin (mmaqd.deploy.float_twin) on the GPU: torch
    and mmaqd only, so a GPU machine without mmdet runs it; random normalized images of ``args.size``."""
    if not torch.cuda.is_available():
        print('deploy_speed.py --device cuda: no CUDA device visible to torch', file=sys.stderr)
        return 2
    from mmaqd.deploy.artefact import load_network
    from mmaqd.deploy.float_twin import FloatTwin
    from mmaqd.ops import active_path, cuda_ops_available
    if not cuda_ops_available():
        print('deploy_speed.py --device cuda: mmaqd was built without its CUDA ops (FORCE_CUDA=1 pip install -e . '
              'or tools/benchmark/cuda_check.sh)', file=sys.stderr)
        return 2
    torch.backends.cudnn.benchmark = True
    net = load_network(args.artefact).cuda()
    twin = FloatTwin(net, torch.bfloat16).cuda().to(memory_format=torch.channels_last)
    h, w = args.size
    print(f'GPU {torch.cuda.get_device_name()}, torch {torch.__version__}; mmaqd ops: {active_path()}')
    print(f'integer network {args.artefact} vs its bf16 twin (cuDNN, channels-last), {h}x{w}, median of 20\n')
    print('| batch | integer (ms) | bf16 (ms) | bf16 / integer | target |')
    print('|---|---|---|---|---|')
    for n in args.batch:
        x = torch.randn(n, 3, h, w, device='cuda')
        with torch.no_grad():
            t_int = cuda_time(net, x)
            t_bf16 = cuda_time(twin, x.contiguous(memory_format=torch.channels_last))
        ratio = t_bf16 / t_int
        print(f'| {n} | {1e3 * t_int:.2f} | {1e3 * t_bf16:.2f} | {ratio:.2f}x | >= {CUDA_TARGET}x: '
              f'{"met" if ratio >= CUDA_TARGET else "MISSED"} |')
    return 0


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.device == 'cuda':
        return main_cuda(args)
    from mmengine.runner import Runner

    import mmaqd  # noqa: F401  (registers the plugin)
    from deploy import build_trained_model, load_artefact_detector, load_config  # tools/deploy.py
    from mmaqd.deploy.artefact import read_graph
    from mmaqd.ops import active_path
    int_det, int_cfg = load_artefact_detector(args.artefact)
    fp_cfg = load_config(args.fp_config, None)
    fp_model = build_trained_model(fp_cfg, args.fp_checkpoint)
    loader_cfg = int_cfg.test_dataloader.copy()
    loader_cfg.update(batch_size=1, num_workers=0, persistent_workers=False)
    batches = []
    for batch in Runner.build_dataloader(loader_cfg):
        batches.append(batch)
        if len(batches) > args.num_images:
            break
    graph = read_graph(args.artefact)
    bits = sorted({s['w_bits'] for s in graph['spec']['layers'] if s['type'] == 'conv'})
    print(f'machine: {platform.platform()}, torch {torch.__version__}, CPU capability '
          f'{torch.backends.cpu.get_cpu_capability()}; mmaqd ops: {active_path()}')
    print(f'integer artefact {args.artefact} (weight bits {bits}, kind {graph["kind"]}) vs FP32 {args.fp_config}; '
          f'{len(batches) - 1} images, batch 1, median ms per image\n')
    qdq = args.onnx or osp.join(args.artefact, 'model.onnx')
    onnx_ok = osp.isfile(qdq)
    if onnx_ok:
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            onnx_ok = False
    if not onnx_ok:
        print(f'ONNX rows skipped: no {qdq} (tools/deploy.py --format onnx) or no onnxruntime '
              '(pip install -r requirements/deploy.txt)\n')
    if onnx_ok:
        from mmdet.registry import MODELS
        from mmengine.config import Config
        from mmengine.registry import init_default_scope
        fp_onnx = export_fp32(fp_model)
        onnx_cfg = Config.fromfile(osp.join(osp.dirname(qdq), 'onnx_model.py'))
        onnx_cfg.model.onnx = qdq
        init_default_scope('mmdet')
    parts = ('preprocess', 'network', 'postprocess', 'whole')
    print('| threads | model | preprocess | network | postprocess | whole | whole / integer |')
    print('|---|---|---|---|---|---|---|')
    verdicts = []
    for threads in args.threads:
        torch.set_num_threads(threads)
        times = {'FP32 (mmdet, PyTorch)': time_parts(fp_model, batches)}
        if onnx_ok:
            times['FP32 (ONNX Runtime)'] = time_parts(_OnnxFP32(fp_model, threads, fp_onnx), batches)
            onnx_cfg.model.threads = threads
            times['QDQ int8 (ONNX Runtime)'] = time_parts(MODELS.build(onnx_cfg.model).eval(), batches)
        it = times['integer (mmaqd)'] = time_parts(int_det, batches)
        for name, t in times.items():
            print(f'| {threads} | {name} | ' + ' | '.join(f'{1e3 * t[k]:.1f}' for k in parts)
                  + f' | {t["whole"] / it["whole"]:.2f}x |')
        best = min((n for n in times if n != 'integer (mmaqd)'), key=lambda n: times[n]['whole'])
        verdicts.append((threads, times['FP32 (mmdet, PyTorch)']['whole'] / it['whole'], best,
                         times[best]['whole'] / it['whole']))
    print()
    four_bit = max(bits) <= 8 and 4 in bits
    for threads, ratio, best, best_ratio in verdicts:
        line = f'{threads} thread(s): integer detector {ratio:.2f}x the FP32 detector'
        if four_bit:
            line += f' (target at 4 bits >= {TARGET}x: {"met" if ratio >= TARGET else "MISSED"})'
        print(line + f'; the fastest baseline, {best}, takes {best_ratio:.2f}x the integer detector\'s time')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
