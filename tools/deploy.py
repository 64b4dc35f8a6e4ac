"""Convert a trained AQD detector into an integer-only artefact, and check that it computes what was trained.

    python tools/deploy.py configs/aqd/fcos_r18-c32_fpn_aqd-w4a4-f8l8_synth.py CKPT --out work_dirs/int-w4
    python tools/deploy.py CONFIG CKPT --out DIR --verify --num-images 16      # + agreement table and both APs
    python tools/deploy.py CONFIG CKPT --out DIR --cfg-options test_dataloader.dataset.data_root=data/other/

Writes DIR/integer_model.py (an mmdet config), DIR/integer_model.pth (integer tensors only) and DIR/graph.json
(mmaqd.deploy.artefact). mmdet's own test tool evaluates the artefact like any model:

    python $MMDET_TOOLS/test.py DIR/integer_model.py DIR/integer_model.pth

``--verify`` runs the fake-quantized model and the integer model on ``--num-images`` images of the test split
and prints, per quantizer, the share of integer values equal to the fake-quantized model's (its output divided by
its step) and the share within one step (targets: >= 99.9 % and 100 %) in three comparisons: end to end against
the fake model in float64 with its exact grid weights (the trained model's arithmetic without float32 noise;
target), each integer op fed the float32 fake model's inputs (target), and end to end against the float32 fake
model as it ran in training (where one-step float32 rounding differences propagate; reported). Then the COCO AP of
the float32 fake model and of the integer model on the whole test split (target: equal within 0.1). Missed
targets are printed as MISSED; the results go to DIR/verify.json.
An existing artefact in DIR is never overwritten unless ``--force``.

``--format onnx`` also writes DIR/model.onnx (mmaqd.deploy.onnx_export: QuantizeLinear / DequantizeLinear around
the convs, which ONNX Runtime fuses into integer QLinearConv / QLinearAdd kernels), DIR/onnx_model.py (an mmdet
config whose detector runs it in ONNX Runtime) and DIR/onnx_report.json (per layer: exact or approximate, and
how many convs ONNX Runtime's optimized graph runs as integer kernels). With ``--verify`` ONNX Runtime then runs
beside the others: each op fed the exact reference's inputs, end to end against the integer network (values
and head outputs, in steps), and its COCO AP decoded by mmdet. Models trained with ``zero_level=True`` export
exactly; LIQ's default grid exports its weight offset approximately (reported).
"""
import argparse
import json
import os
import os.path as osp
import sys
import tempfile
import time
from typing import List, Optional

import torch
from mmengine.config import Config, DictAction

from mmaqd_tools.models import build_cpu_model

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
AP_TOLERANCE = 0.1


def log(msg: str) -> None:
    print(f'[deploy] {msg}', flush=True)


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('config', help='the quantized config the checkpoint was trained with')
    parser.add_argument('checkpoint', help='its trained checkpoint')
    parser.add_argument('--out', required=True, help='artefact directory to write')
    parser.add_argument('--force', action='store_true', help='overwrite an existing artefact in --out')
    parser.add_argument('--format', choices=['integer', 'onnx'], default='integer',
                        help='integer: the integer artefact; onnx: also model.onnx for ONNX Runtime')
    parser.add_argument('--onnx-int4', action='store_true',
                        help='with --format onnx: 2-4-bit zero-level weights as INT4 initializers (smaller; ONNX '
                        'Runtime\'s CPU provider then runs those convs in float)')
    parser.add_argument('--verify', action='store_true', help='compare integer and fake-quantized model')
    parser.add_argument('--num-images', type=int, default=16, help='images for the per-layer agreement')
    parser.add_argument('--no-ap', action='store_true', help='with --verify: skip the AP evaluation')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, help='overrides of the config, as mmdet')
    args = parser.parse_args(argv)
    if args.num_images < 1:
        parser.error(f'--num-images must be >= 1, got {args.num_images}')
    for path, what in ((args.config, 'config'), (args.checkpoint, 'checkpoint')):
        if not osp.isfile(path):
            parser.error(f'{what} {path} does not exist')
    return args


def load_config(path: str, cfg_options: Optional[dict]) -> Config:
    cfg = Config.fromfile(path)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    return cfg


def build_trained_model(cfg: Config, checkpoint: str) -> torch.nn.Module:
    """The config's model on the CPU, eval mode, with the checkpoint loaded; mismatched keys are an error."""
    model = build_cpu_model(cfg, init_weights=False)  # the checkpoint has the weights
    ckpt = torch.load(checkpoint, map_location='cpu', weights_only=True)
    state = ckpt.get('state_dict', ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict):
        raise ValueError(f'{checkpoint} holds no state_dict')
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as e:  # shapes that differ
        detail = ' '.join(str(e).split('\n')[1:3]).strip()
        raise ValueError(f'{checkpoint} does not fit {cfg.filename}: {detail}; is it a checkpoint of another '
                         'config?') from e
    if result.missing_keys or result.unexpected_keys:
        raise ValueError(f'{checkpoint} does not fit {cfg.filename}: {len(result.missing_keys)} missing keys '
                         f'(e.g. {result.missing_keys[:3]}) and {len(result.unexpected_keys)} unexpected keys '
                         f'(e.g. {result.unexpected_keys[:3]}); is it a checkpoint of another config?')
    return model.eval()


def artefact_config(cfg: Config, kind: str, source: dict, backend: str = 'integer') -> Config:
    """The mmdet config of the integer model (``backend='onnx'``: of the ONNX model run by ONNX Runtime): the
    trained config's data and evaluation, the deployed detector."""
    from mmaqd.deploy.artefact import GRAPH_NAME
    from mmaqd.deploy.detectors import detector_type, head_config
    out = Config(cfg.to_dict())
    model = cfg.model
    out.model = dict(type=detector_type(kind, backend), data_preprocessor=model.data_preprocessor.to_dict(),
                     bbox_head=head_config(model.bbox_head.to_dict(), kind), test_cfg=model.test_cfg.to_dict())
    if backend == 'onnx':
        out.model['onnx'] = '{{ fileDirname }}/model.onnx'
    else:
        out.model['net'] = dict(graph='{{ fileDirname }}/' + GRAPH_NAME)
    out.load_from = None
    out.resume = False
    out.custom_hooks = []
    out.pop('work_dir', None)
    imports = list(out.get('custom_imports', {}).get('imports', []))
    out.custom_imports = dict(imports=sorted(set(imports) | {'mmaqd'}), allow_failed_imports=False)
    out.mmaqd_source = source
    return out


def model_bytes(model: torch.nn.Module) -> int:
    """Bytes of the FP32 float weights of the trained model (its state_dict without quantizer state)."""
    return sum(t.numel() * 4 for k, t in model.state_dict().items()
               if '_quantizer.' not in k and t.is_floating_point())


def convert(args: argparse.Namespace):
    from mmaqd.deploy.artefact import CHECKPOINT_NAME, CONFIG_NAME, check_out_dir, write_network_files
    from mmaqd.deploy.converter import convert_detector
    check_out_dir(args.out, args.force)
    cfg = load_config(args.config, args.cfg_options)
    model = build_trained_model(cfg, args.checkpoint)
    start = time.time()
    conv = convert_detector(model)
    source = dict(config=osp.abspath(args.config), checkpoint=osp.abspath(args.checkpoint))
    sizes = dict(fp32_weights_bytes=model_bytes(model), training_checkpoint_bytes=os.path.getsize(args.checkpoint))
    graph = dict(kind=conv.kind, source=source, spec=conv.spec, report=conv.report,
                 float_islands=conv.float_islands, sizes=sizes)
    ckpt = write_network_files(args.out, conv.network, graph, dict(source=source))
    sizes['artefact_bytes'] = os.path.getsize(ckpt)
    artefact_config(cfg, conv.kind, source).dump(osp.join(args.out, CONFIG_NAME))
    n_int = sum(1 for s in conv.spec['layers'] if s['type'] == 'conv')
    fracs = [s['frac_bits'] for s in conv.spec['layers'] if s['type'] == 'conv']
    log(f'converted in {time.time() - start:.1f} s: {n_int} integer convs (F {min(fracs)}..{max(fracs)}), '
        f'{sum(1 for s in conv.spec["layers"] if s["type"] == "add")} integer adds / rescales, float islands: '
        f'{conv.float_islands or "none"}')
    log(f'artefact {args.out}: {CONFIG_NAME}, {CHECKPOINT_NAME} {sizes["artefact_bytes"] / 1e6:.2f} MB '
        f'(FP32 weights {sizes["fp32_weights_bytes"] / 1e6:.2f} MB, '
        f'{sizes["fp32_weights_bytes"] / sizes["artefact_bytes"]:.1f}x), graph.json')
    return cfg, model, conv, sizes


def load_artefact_detector(out_dir: str):
    """Build the integer detector from the artefact's own config and checkpoint (the round trip users make)."""
    from mmdet.registry import MODELS
    from mmengine.registry import init_default_scope

    from mmaqd.deploy.artefact import CHECKPOINT_NAME, CONFIG_NAME
    cfg = Config.fromfile(osp.join(out_dir, CONFIG_NAME))
    init_default_scope(cfg.get('default_scope', 'mmdet'))
    det = MODELS.build(cfg.model)
    state = torch.load(osp.join(out_dir, CHECKPOINT_NAME), map_location='cpu', weights_only=True)['state_dict']
    det.load_state_dict(state, strict=True)
    return det.eval(), cfg


def print_agreement(title: str, counts) -> dict:
    """Print one agreement table (worst quantizers first) and return its JSON summary."""
    from mmaqd.deploy.verify import TARGET_EQUAL, summarize
    rows, ok = summarize(counts)
    print(f'\n{title}')
    print(f'{"quantizer":<48} {"values":>9} {"equal %":>9} {"<=1 step %":>10} {"max steps":>9}')
    for name, n, eq, within, worst in rows:
        print(f'{name:<48} {n:>9} {eq:>9.3f} {within:>10.3f} {worst:>9}')
    worst_eq, worst_within = min(r[2] for r in rows), min(r[3] for r in rows)
    print(f'lowest: {worst_eq:.3f} % equal, {worst_within:.3f} % within one step -> target >= '
          f'{100 * TARGET_EQUAL:.1f} % / 100 % at every quantizer: {"met" if ok else "MISSED"}')
    return dict(quantizers=[dict(zip(['quantizer', 'values', 'equal_pct', 'within_one_pct', 'max_steps'], r))
                            for r in rows], lowest_equal_pct=worst_eq, lowest_within_one_pct=worst_within,
                target_met=ok)


def test_images(cfg: Config, model, num_images: int):
    """Preprocessed batches (N, 3, H, W) of the config's test split, until ``num_images`` images were given."""
    from mmengine.runner import Runner
    loader_cfg = cfg.test_dataloader.copy()
    loader_cfg.update(num_workers=0, persistent_workers=False)
    seen = 0
    for batch in Runner.build_dataloader(loader_cfg):
        x = model.data_preprocessor(batch, False)['inputs']
        yield x
        seen += x.shape[0]
        if seen >= num_images:
            return


def verify_agreement(cfg: Config, model, det, num_images: int) -> dict:
    """Run the three comparisons of --verify on ``num_images`` test images and print their tables."""
    from mmaqd.deploy.verify import agreement, exact_reference, fake_values
    exact = exact_reference(model)
    counts = dict(exact=None, float32=None, per_op=None)
    seen, out_diff = 0, {}
    with torch.no_grad():
        for x in test_images(cfg, model, num_images):
            counts['exact'] = agreement(exact, det.net, x.double(), counts['exact'])
            fake = fake_values(model, det.net, x)  # one float32 run serves both comparisons
            counts['float32'] = agreement(model, det.net, x, counts['float32'], fake=fake)
            counts['per_op'] = agreement(model, det.net, x, counts['per_op'], per_op=True, fake=fake)
            for name, a, b in zip(det.net.output_names, model(x, mode='tensor'), det._forward(x)):
                for fa, ob in zip(a, b):
                    prev = out_diff.get(name, (0.0, 0.0))
                    out_diff[name] = (max(prev[0], float((fa - ob).abs().max())), max(prev[1], float(fa.abs().max())))
            seen += x.shape[0]
    result = dict(images=seen)
    result['end_to_end_exact'] = print_agreement(
        f'Integer vs fake-quantized values on {seen} images, per quantizer; both run end to end, the fake model in '
        'float64 with its exact grid weights (the trained model without float32 rounding noise):', counts['exact'])
    result['per_op'] = print_agreement(
        'Each integer op fed the float32 fake-quantized model\'s inputs (the op\'s own arithmetic):',
        counts['per_op'])
    result['end_to_end_float32'] = print_agreement(
        'Both run end to end, the fake model in float32 as in training (its rounding noise propagates; reported, '
        'not a target):', counts['float32'])
    result['target_met'] = result['end_to_end_exact']['target_met'] and result['per_op']['target_met']
    print('\nprediction outputs vs the float32 fake model (end to end, after the head post-processing), '
          'max |fake - integer| / max |fake|:')
    for name, (d, top) in out_diff.items():
        print(f'  {name}: {d:.4g} / {top:.4g}')
    result['outputs'] = {k: dict(max_abs_diff=v[0], max_abs=v[1]) for k, v in out_diff.items()}
    return result


ONNX_NAME, ONNX_CONFIG_NAME, ONNX_REPORT_NAME = 'model.onnx', 'onnx_model.py', 'onnx_report.json'


def export_onnx_files(args: argparse.Namespace, cfg: Config, conv) -> dict:
    """Write model.onnx, its mmdet config and its report into ``args.out``; print and return the report."""
    import onnx

    from mmaqd.deploy.onnx_export import export_onnx
    from mmaqd.deploy.onnx_runtime import kernel_counts, ort_session
    start = time.time()
    exported = export_onnx(conv, int4_weights=args.onnx_int4)
    path = osp.join(args.out, ONNX_NAME)
    onnx.save(exported.model, path)
    with tempfile.TemporaryDirectory() as tmp:
        ort_session(path, optimized_path=osp.join(tmp, 'optimized.onnx'))
        kernels = kernel_counts(osp.join(tmp, 'optimized.onnx'))
    source = dict(config=osp.abspath(args.config), checkpoint=osp.abspath(args.checkpoint))
    onnx_cfg = artefact_config(cfg, conv.kind, source, backend='onnx')
    onnx_cfg.dump(osp.join(args.out, ONNX_CONFIG_NAME))
    approx = [r for r in exported.report if not r['exact']]
    report = dict(layers=exported.report, summary=exported.summary(), kernels=kernels,
                  bytes=os.path.getsize(path))
    with open(osp.join(args.out, ONNX_REPORT_NAME), 'w') as f:
        json.dump(report, f, indent=1)
    log(f'{path}: {report["bytes"] / 1e6:.2f} MB in {time.time() - start:.1f} s; ONNX Runtime runs '
        f'{kernels["integer"]} convs as integer kernels (QLinearConv) and {kernels["float"]} in float '
        f'(prediction convs and any layer without an integer form); {kernels["ops"].get("QLinearAdd", 0)} '
        'QLinearAdd')
    if approx:
        worst = max(approx, key=lambda r: r.get('weight_error_steps', 0))
        log(f'{len(approx)} of {len(exported.report)} layers export approximately (LIQ\'s default grid: weight '
            f'offset rounded), the largest weight error {worst["weight_error_steps"]:.3g} steps in {worst["layer"]}; '
            'train with zero_level=True for an exact export')
    else:
        log('every layer exports exactly (up to float32 rounding in ONNX Runtime)')
    return report


def verify_onnx(cfg: Config, model, conv, num_images: int) -> dict:
    """ONNX Runtime beside the exact reference and the integer network on ``num_images`` test images."""
    from collections import defaultdict
    from functools import partial

    from mmaqd.deploy.onnx_export import export_onnx
    from mmaqd.deploy.onnx_runtime import (grouped_outputs, head_outputs, onnx_agreement, ort_session, output_layout,
                                           output_units, teacher_feeds)
    from mmaqd.deploy.verify import exact_reference, fake_values, value_step
    net = conv.network
    teacher, probed = export_onnx(conv, probes='teacher'), export_onnx(conv, probes='outputs')
    s_teacher, s_probed = ort_session(teacher.model), ort_session(probed.model)
    layout = output_layout(s_probed)
    exact = exact_reference(model)
    step_of = partial(value_step, model)
    per_op, end_to_end, seen = None, None, 0
    units = output_units(net)
    out_steps, out_rel = defaultdict(float), defaultdict(float)
    with torch.no_grad():
        for x in test_images(cfg, model, num_images):
            ref = fake_values(exact, net, x.double())
            per_op = onnx_agreement(teacher, head_outputs(s_teacher, x, teacher_feeds(teacher, ref)), ref, per_op,
                                    step_of)
            ints = net(x, keep=list(net.probes.values()))
            int_values = {p: ints['_kept'][t] for p, t in net.probes.items()}
            results = head_outputs(s_probed, x)  # one run: its integer values and its head outputs
            end_to_end = onnx_agreement(probed, results, int_values, end_to_end, step_of)
            ort_out = grouped_outputs(results, layout)
            for name, levels in net.dequantize(ints).items():
                for lv, (ours, theirs) in enumerate(zip(levels, ort_out[name])):
                    unit = units[name][lv]
                    diff = (ours - theirs).abs()
                    rel = float(diff.max()) / max(float(ours.abs().max()), 1e-12)
                    if unit is not None:
                        diff = diff / unit.view(1, -1, 1, 1).float()
                    out_steps[name] = max(out_steps[name], float(diff.max()))
                    out_rel[name] = max(out_rel[name], rel)
            seen += x.shape[0]
    result = dict(images=seen)
    result['per_op'] = print_agreement(
        f'ONNX Runtime vs the exact reference on {seen} images, each op fed the reference\'s values of its inputs '
        '(ONNX Runtime\'s own arithmetic: float32 requantization, int32 bias):', per_op)
    result['end_to_end_vs_integer'] = print_agreement(
        'ONNX Runtime vs the integer network, both end to end (one-step differences propagate):', end_to_end)
    print('\nhead outputs, ONNX Runtime vs the integer network, max |difference| in steps of the prediction '
          'conv\'s integer product (s_x s_w):')
    for name, d in out_steps.items():
        print(f'  {name}: {d:.3g} steps ({out_rel[name]:.3g} of max |output|) -> target <= 1 step: '
              f'{"met" if d <= 1 else "MISSED"}')
    result['output_steps'], result['output_relative'] = dict(out_steps), dict(out_rel)
    return result


def evaluate(cfg: Config, checkpoint: str, work_dir: str) -> dict:
    """COCO AP (percent) of ``cfg``'s model with ``checkpoint`` on its test split, through mmengine's Runner."""
    from mmengine.runner import Runner

    from mmaqd_tools.experiment import coco_ap
    cfg = Config(cfg.to_dict())
    cfg.work_dir = work_dir
    cfg.load_from = checkpoint
    cfg.resume = False
    cfg.test_dataloader.update(num_workers=0, persistent_workers=False)
    if cfg.model.get('backbone', {}).get('init_cfg') is not None:
        cfg.model.backbone.init_cfg = None
    return coco_ap(Runner.from_cfg(cfg).test())


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    try:
        cfg, model, conv, sizes = convert(args)
    except (ValueError, FileExistsError, NotADirectoryError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    onnx_result = export_onnx_files(args, cfg, conv) if args.format == 'onnx' else None
    if not args.verify:
        return 0
    from mmaqd.deploy.artefact import CHECKPOINT_NAME
    det, int_cfg = load_artefact_detector(args.out)
    result = dict(sizes=sizes, float_islands=conv.float_islands)
    result['agreement'] = verify_agreement(cfg, model, det, args.num_images)
    if onnx_result is not None:
        onnx_result.update(verify_onnx(cfg, model, conv, args.num_images))
        result['onnx'] = onnx_result
    if not args.no_ap:
        with tempfile.TemporaryDirectory() as tmp:  # one folder: mmengine's visualizer outlives its runner
            fake_ap = evaluate(cfg, args.checkpoint, osp.join(tmp, 'fake'))
            int_ap = evaluate(int_cfg, osp.join(args.out, CHECKPOINT_NAME), osp.join(tmp, 'integer'))
            if onnx_result is not None:
                onnx_ap = evaluate(Config.fromfile(osp.join(args.out, ONNX_CONFIG_NAME)), None, osp.join(tmp, 'onnx'))
        gap = round(int_ap['AP'] - fake_ap['AP'], 2)
        ok = abs(gap) <= AP_TOLERANCE
        print('\nCOCO bbox AP on the test split:')
        print(f'  fake-quantized model: {fake_ap}\n  integer model:        {int_ap}')
        print(f'  integer - fake = {gap:+.2f} AP -> target |gap| <= {AP_TOLERANCE}: {"met" if ok else "MISSED"}')
        result.update(fake_ap=fake_ap, integer_ap=int_ap, ap_gap=gap, ap_target_met=ok)
        if onnx_result is not None:
            onnx_gap = round(onnx_ap['AP'] - int_ap['AP'], 2)
            onnx_ok = abs(onnx_gap) <= AP_TOLERANCE
            print(f'  ONNX Runtime:         {onnx_ap}\n  ONNX Runtime - integer = {onnx_gap:+.2f} AP -> target '
                  f'|gap| <= {AP_TOLERANCE}: {"met" if onnx_ok else "MISSED"}')
            onnx_result.update(ap=onnx_ap, ap_gap_to_integer=onnx_gap, ap_target_met=onnx_ok)
    with open(osp.join(args.out, 'verify.json'), 'w') as f:
        json.dump(result, f, indent=1)
    log(f'results in {osp.join(args.out, "verify.json")}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
