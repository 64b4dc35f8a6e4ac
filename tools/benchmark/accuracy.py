"""COCO AP of AQD on the generated benchmark: FP detectors, quantized fine-tunes, and the paper's shape as targets.

    python tools/benchmark/accuracy.py                     # the default set, about 40 minutes on 2 CPU cores
    python tools/benchmark/accuracy.py --set ablations     # the paper's ablations, FQN's and our levers
    python tools/benchmark/accuracy.py --variants aqd-w2a2 aqd-w2a2-shared-bn
    python tools/benchmark/accuracy.py --variants aqd-w2a2 --seeds 0 1 2   # one row per seed, and the spread
    python tools/benchmark/accuracy.py --list              # every variant with its config and set
    python tools/benchmark/accuracy.py --report work_dirs/benchmark_accuracy/accuracy.json   # its table again
    python tools/benchmark/accuracy.py --retrain aqd-w3a3  # the default set, training aqd-w3a3 again
    python tools/benchmark/accuracy.py --variants aqd-w4a4 aqd-w2a2 --finetune-scale 3   # 3x longer fine-tunes
    python tools/benchmark/accuracy.py --work-dir work_dirs/accuracy-gpu --iters-scale 4   # longer, e.g. on a GPU

Each FP detector needed is trained once (FCOS, and RetinaNet when a RetinaNet variant is selected); every
selected quantized variant is fine-tuned from its FP detector's weights with the one fine-tuning schedule of the
quantized benchmark configs (configs/aqd/_base_/schedule_synth_finetune.py; FQN keeps its paper's constant lr
over the same iterations); all are evaluated on the val split with pycocotools. Stages run in
``<work-dir>/<variant>`` with tools/pipeline.py's stage table (tools/mmaqd_tools/stages.py) and default work dir
(``fp``, ``fp-retinanet``, ``aqd-w4a4``), so finished stages of ``make demo`` are reused (only evaluated) and
interrupted ones resume (mmaqd_tools.experiment.run_stage). ``--retrain`` trains every selected stage again,
``--retrain fp-retinanet aqd-w3a3`` only those (and the variants that start from a retrained FP detector).

Every run is seeded (``--seeds``, default 0; mmengine's ``randomness.seed``) and its row records the seed its
weights were trained with (``-`` for a reused stage trained before seeds were recorded). With several seeds each
quantized variant runs once per seed (seed S other than 0 in ``<work-dir>/<variant>-seed<S>``; the FP detectors
once, with the first seed), the targets are checked on the mean AP over the seeds, and a spread table (mean, std,
min, max) follows the main one: a difference smaller than the spread is no win.

Writes ``accuracy.md`` (AP, AP50, AP75, APs, APm, APl, the AP gap to the variant's FP detector, the target
check, wall times, the machine) and ``accuracy.json`` to ``--out-dir``. Targets of the default set (issue: the
paper's claim carried to the benchmark; AQD arXiv 2007.06919v1 Tables 1-3): an AQD variant at 4 / 3 / 2 bits keeps
AP >= FP - 0 / 1 / 2, multi-level BN beats shared BN at 2 bits, and at 4 bits RetinaNet ranks AQD > Auxi > FQN
(Table 2; the baselines have no gap target). The ablation set checks the papers' orders instead: AQD Table 4
(backbone > + FPN > + heads at 2 bits), Table 5's quantizer order (LIQ > LSQ+ > LQ-Nets > PACT > DoReFa, an
ImageNet order), FQN Table 2a (each of F, P and C alone beats none). A missed target or a different order is
reported as MISSED (the exit status stays 0); a run that fails makes it 1.
"""
import argparse
import json
import os
import os.path as osp
import re
import statistics
import sys
import time
import traceback
from dataclasses import dataclass
from typing import Dict, List, Optional

from mmengine.config import DictAction

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.append(osp.join(ROOT, 'tools'))  # for mmaqd_tools
from mmaqd_tools.experiment import (METRICS, StageResult, ensure_dataset, fmt, machine_info,  # noqa: E402
                                    markdown_table, run_stage)
from mmaqd_tools.stages import BY_NAME, VARIANTS, Variant  # noqa: E402

#: the default set (no --variants): the paper's main tables in shape
DEFAULT = ['fp', 'aqd-w4a4', 'aqd-w3a3', 'aqd-w2a2', 'aqd-w2a2-shared-bn', 'fp-retinanet', 'aqd-w4a4-retinanet',
           'aqd-w3a3-retinanet', 'aqd-w2a2-retinanet', 'auxi-w4a4-retinanet', 'fqn-w4a4-retinanet']
#: --set ablations: one part at 2 bits in a 4-bit FCOS (sensitivity), AQD Tables 4 and 5, the integer-deployable F8L8
#: variants, FQN Table 2a, and the levers
ABLATIONS = ['fp', 'aqd-w4a4', 'aqd-w4a4-backbone2', 'aqd-w4a4-neck2', 'aqd-w4a4-head2',
             'aqd-w2a2', 'aqd-w2a2-backbone', 'aqd-w2a2-backbone-fpn', 'aqd-w2a2-lsq', 'aqd-w2a2-lsqplus',
             'aqd-w2a2-lqnet', 'aqd-w2a2-pact', 'aqd-w2a2-dorefa', 'aqd-w4a4-f8l8', 'aqd-w2a2-f8l8', 'aqd-w2a2-distill',
             'aqd-w2a2-add8', 'aqd-w2a2-addfp',
             'fp-retinanet', 'fqn-w4a4-retinanet', 'fqn-w4a4-f0p0c0-retinanet', 'fqn-w4a4-f1p0c0-retinanet',
             'fqn-w4a4-f0p1c0-retinanet', 'fqn-w4a4-f0p0c1-retinanet', 'fqn-w4a4-l8-retinanet']
SETS = {'default': DEFAULT, 'ablations': ABLATIONS}

#: largest AP drop from the FP detector an AQD variant of that bit width may show (AQD paper Tables 1-2 in shape:
#: its 4- and 3-bit detectors match or beat FP, its 2-bit ones lose 1.3-2.9 AP)
GAP_TARGETS = {4: 0.0, 3: 1.0, 2: 2.0}
#: (better, worse, text): the first variant's AP must exceed the second's; shown on the second's row, checked when
#: both are selected
ORDER_TARGETS = [('aqd-w2a2', 'aqd-w2a2-shared-bn', 'multi-level BN > shared BN (aqd-w2a2)'),
                 ('aqd-w4a4-retinanet', 'auxi-w4a4-retinanet', 'AQD > Auxi (AQD paper Table 2)'),
                 ('auxi-w4a4-retinanet', 'fqn-w4a4-retinanet', 'Auxi > FQN (AQD paper Table 2)'),
                 ('aqd-w2a2-backbone', 'aqd-w2a2-backbone-fpn', 'backbone > backbone + FPN (AQD paper Table 4)'),
                 ('aqd-w2a2-backbone-fpn', 'aqd-w2a2', 'backbone + FPN > all quantized (AQD paper Table 4)'),
                 ('aqd-w2a2', 'aqd-w2a2-lsq', 'LIQ > LSQ'),
                 ('aqd-w2a2', 'aqd-w2a2-lsqplus', 'LIQ > LSQ+ (AQD paper Table 5)'),
                 ('aqd-w2a2-lsqplus', 'aqd-w2a2-lqnet', 'LSQ+ > LQ-Nets (AQD paper Table 5)'),
                 ('aqd-w2a2-lqnet', 'aqd-w2a2-pact', 'LQ-Nets > PACT (AQD paper Table 5)'),
                 ('aqd-w2a2-pact', 'aqd-w2a2-dorefa', 'PACT > DoReFa (AQD paper Table 5)'),
                 ('fqn-w4a4-f1p0c0-retinanet', 'fqn-w4a4-f0p0c0-retinanet', 'F > none (FQN Table 2a)'),
                 ('fqn-w4a4-f0p1c0-retinanet', 'fqn-w4a4-f0p0c0-retinanet', 'P > none (FQN Table 2a)'),
                 ('fqn-w4a4-f0p0c1-retinanet', 'fqn-w4a4-f0p0c0-retinanet', 'C > none (FQN Table 2a)'),
                 ('fqn-w4a4-retinanet', 'fqn-w4a4-f0p0c0-retinanet', 'FQN (F+P+C) > none (FQN Table 2a)')]


@dataclass
class Check:
    """One target: ``met`` is ``None`` when it could not be checked (a run is missing or failed)."""

    text: str
    met: Optional[bool]

    def __str__(self) -> str:
        return f"{self.text}: {'n/a' if self.met is None else 'met' if self.met else 'MISSED'}"


def check_targets(aps: Dict[str, Optional[float]]) -> Dict[str, List[Check]]:
    """The targets of every variant in ``aps`` (variant name -> AP in percent, ``None`` if its run failed)."""
    checks: Dict[str, List[Check]] = {name: [] for name in aps}
    for name, ap in aps.items():
        v = BY_NAME[name]
        if v.bits is None or not v.target:
            continue
        tol = GAP_TARGETS[v.bits]
        fp_ap = aps.get(v.fp)
        met = None if ap is None or fp_ap is None else ap >= fp_ap - tol
        checks[name].append(Check('AP >= FP' if tol == 0 else f'AP >= FP - {tol:g}', met))
    for better, worse, text in ORDER_TARGETS:
        if worse in aps and better in aps:
            a, b = aps[better], aps[worse]
            checks[worse].append(Check(text, None if a is None or b is None else a > b))
    return checks


def select(names: Optional[List[str]], set_name: str = 'default') -> List[Variant]:
    """The variants to run for ``names`` (default: the set ``set_name``) and the FP detectors they start from, in
    ``VARIANTS`` order."""
    names = list(SETS[set_name] if not names else names)
    unknown = [n for n in names if n not in BY_NAME]
    if unknown:
        raise KeyError(f'unknown variant(s) {unknown}; known variants: {list(BY_NAME)}')
    needed = set(names) | {BY_NAME[n].fp for n in names if BY_NAME[n].fp}
    return [v for v in VARIANTS if v.name in needed]


def stage_dir(v: Variant, finetune_scale: float, seed: int = 0) -> str:
    """The stage's folder under ``--work-dir``: its name; a quantized variant fine-tuned ``finetune_scale`` times as
    long as its config says gets ``<name>-ft<scale>``, and one trained with a seed other than 0 ``-seed<S>``, so
    that runs of different lengths and seeds keep their own results."""
    name = v.name
    if v.fp is not None and finetune_scale != 1.0:
        name += f'-ft{finetune_scale:g}'
    return name if seed == 0 else f'{name}-seed{seed}'


def log(msg: str) -> None:
    print(f'[accuracy] {msg}', flush=True)


def runs_by_variant(rows: List[dict]) -> Dict[str, List[dict]]:
    """Variant name -> its rows that gave an AP (one per seed), in order; every variant of ``rows`` is a key."""
    out: Dict[str, List[dict]] = {}
    for r in rows:
        out.setdefault(r['name'], [])
        if not r['error'] and (r['metrics'] or {}).get('AP') is not None:
            out[r['name']].append(r)
    return out


def mean_aps(rows: List[dict]) -> Dict[str, Optional[float]]:
    """Variant name -> mean AP over its rows (its seeds); ``None`` when none of its runs gave an AP."""
    return {n: round(statistics.fmean(r['metrics']['AP'] for r in runs), 2) if runs else None
            for n, runs in runs_by_variant(rows).items()}


def spread(rows: List[dict]) -> Dict[str, dict]:
    """For every variant with more than one seeded AP: its seeds, APs, mean, sample std, min and max."""
    out = {}
    for name, runs in runs_by_variant(rows).items():
        if len(runs) < 2:
            continue
        aps = [r['metrics']['AP'] for r in runs]
        out[name] = dict(seeds=[r.get('seed') for r in runs], AP=aps, mean=round(statistics.fmean(aps), 2),
                         std=round(statistics.stdev(aps), 2), min=min(aps), max=max(aps))
    return out


def score(rows: List[dict]) -> List[dict]:
    """Each row's ``gap`` (its AP - its FP detector's mean AP) and ``targets`` (checked on the variants' mean APs),
    in place; returns ``rows``."""
    aps = mean_aps(rows)
    checks = check_targets(aps)
    for row in rows:
        fp_ap = aps.get(row['fp']) if row['fp'] else None
        ap = (row['metrics'] or {}).get('AP')
        row['gap'] = None if fp_ap is None or ap is None or row['error'] else round(ap - fp_ap, 2)
        row['targets'] = [dict(text=c.text, met=c.met) for c in checks[row['name']]]
    return rows


def run_all(variants: List[Variant], args) -> List[dict]:
    """Train/evaluate ``variants`` in order, each quantized one once per seed of ``args.seeds`` (the FP detectors
    with the first); one row per run (``error`` set when it failed)."""
    rows: List[dict] = []
    failed: Dict[str, bool] = {}
    for v in variants:
        seeds = args.seeds if v.fp else args.seeds[:1]
        for seed in seeds:
            row = dict(name=v.name, config=v.config, fp=v.fp, bits=v.bits, metrics=None, error=None, seed=seed)
            rows.append(row)
            load_from = osp.join(args.work_dir, v.fp, 'final.pth') if v.fp else None
            if v.fp and failed.get(v.fp):
                row['error'] = f'its FP detector {v.fp} failed'
                continue
            scale = args.iters_scale * (args.finetune_scale if v.fp else 1.0)
            try:
                work_dir = osp.join(args.work_dir, stage_dir(v, args.finetune_scale, seed))
                options = dict(args.cfg_options or {}, **(args.quantized_cfg_options or {})) if v.fp else \
                    args.cfg_options
                result: StageResult = run_stage(v.name, v.config, work_dir, load_from, options or None,
                                                v.name in args.retrain, data_root=args.data_root, rescale=True,
                                                iters_scale=scale, log=log, seed=seed)
            except Exception as e:  # one failed run must not lose the others' results
                traceback.print_exc()
                row['error'] = f'{type(e).__name__}: {e}'
                log(f'{v.name} (seed {seed}) FAILED: {row["error"]}')
                continue
            row.update(result.to_dict())
            log(f"{v.name} (seed {row['seed']}): AP {fmt(result.metrics['AP'])} ({result.seconds:.0f} s)")
        failed[v.name] = all(r['error'] for r in rows if r['name'] == v.name)
    return score(rows)


def short_error(error: str) -> str:
    """A table cell for a failed run: the error's first clause and, for a divergence, the tensor that left its
    range (the whole text is in accuracy.json)."""
    head = error.split('; ')[0][:160]
    culprit = re.search(r"quantizer '[^']+', tensor '[^']+' = \S+", error)
    return f'{head} ({culprit.group(0)})' if culprit else head


def format_report(rows: List[dict], machine: dict, cfg_options, iters_scale: float,
                  finetune_scale: float = 1.0) -> str:
    """The markdown table of ``run_all`` rows, then the machine and the overrides the runs used."""
    header = ['variant', 'config', 'bits', 'seed'] + [label for label, _ in METRICS] + ['gap', 'target',
                                                                                        'train (s)', 'eval (s)']
    table = []
    for r in rows:
        metrics = r['metrics'] or {}
        targets = '; '.join(str(Check(**t)) for t in r.get('targets', [])) or '-'
        if r['error']:
            targets = f"FAILED: {short_error(r['error'])}"
        train, evals = r.get('train_seconds'), None
        if r.get('seconds') is not None:
            evals = r['seconds'] - (train or 0) if r.get('trained') else r['seconds']
        train_cell = '-' if train is None else f'{train:.0f}' + ('' if r.get('trained') else ' (reused)')
        gap = r.get('gap')
        table.append([r['name'], osp.basename(r['config']), r['bits'] or 'FP', r.get('seed')]
                     + [metrics.get(label) for label, _ in METRICS]
                     + ['-' if gap is None else f'{gap:+.1f}', targets, train_cell,
                        '-' if evals is None else f'{evals:.0f}'])
    lines = [markdown_table(header, table)]
    spreads = spread(rows)
    if spreads:
        lines += ['', 'Spread over seeds (targets are checked on the mean):', '',
                  markdown_table(['variant', 'seeds', 'AP per seed', 'mean', 'std', 'min', 'max'],
                                 [[n, ' '.join(map(str, s['seeds'])), ' / '.join(fmt(a) for a in s['AP']), s['mean'],
                                   s['std'], s['min'], s['max']] for n, s in spreads.items()])]
    lines += ['', 'Machine: ' + ', '.join(f'{k} {v}' for k, v in machine.items())]
    if cfg_options or iters_scale != 1.0 or finetune_scale != 1.0:
        lines.append(f'Overrides: --cfg-options {cfg_options or {}} --iters-scale {iters_scale:g} '
                     f'--finetune-scale {finetune_scale:g}')
    return '\n'.join(lines)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--variants', nargs='+', help=f'variants to run (default: the --set, {" ".join(DEFAULT)}); '
                        '--list shows them all')
    parser.add_argument('--set', default='default', choices=sorted(SETS),
                        help='the variants run without --variants: the default set or the ablations')
    parser.add_argument('--seeds', nargs='+', type=int, default=[0], metavar='SEED',
                        help='train every selected quantized variant once per seed (the FP detectors with the first)')
    parser.add_argument('--list', action='store_true', help='print the known variants and exit')
    parser.add_argument('--report', metavar='ACCURACY_JSON',
                        help='print the table of an earlier run from its accuracy.json (runs nothing) and exit')
    parser.add_argument('--work-dir', default='work_dirs/pipeline',
                        help="stage work dirs (<work-dir>/<variant>); tools/pipeline.py's by default")
    parser.add_argument('--out-dir', default='work_dirs/benchmark_accuracy', help='accuracy.md / accuracy.json')
    parser.add_argument('--data-root', default='data/synthetic_coco',
                        help='the generated dataset (written when missing); every run reads it')
    parser.add_argument('--dataset-preset', default='benchmark',
                        help="the generator preset expected at --data-root ('tiny' for a smoke test)")
    parser.add_argument('--retrain', nargs='*', metavar='VARIANT',
                        help='train stages again even if they finished: the named ones (which must be selected), '
                        'or every selected one when no name follows')
    parser.add_argument('--iters-scale', type=float, default=1.0,
                        help="multiply every run's max_iters (lr schedule stretched to match)")
    parser.add_argument('--finetune-scale', type=float, default=1.0,
                        help="multiply only the quantized variants' max_iters (lr schedule stretched to match); "
                        'they run in <work-dir>/<variant>-ft<scale>, the FP detectors are reused as they are')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='overrides applied to every run (FP and quantized); a changed '
                        'train_cfg.max_iters stretches the lr schedule')
    parser.add_argument('--quantized-cfg-options', nargs='+', action=DictAction,
                        help='overrides applied to the quantized variants only (after --cfg-options), e.g. '
                        'model.distill_cfg.feature_weight=0.1, which an FP config does not have')
    args = parser.parse_args(argv)
    if args.finetune_scale <= 0 or args.iters_scale <= 0:
        parser.error(f'--iters-scale and --finetune-scale must be > 0, got {args.iters_scale} and '
                     f'{args.finetune_scale}')
    if any(seed < 0 for seed in args.seeds) or len(set(args.seeds)) != len(args.seeds):
        parser.error(f'--seeds must be distinct non-negative integers, got {args.seeds}')
    try:
        args.selected = select(args.variants, args.set)
    except KeyError as e:
        parser.error(e.args[0])
    selected = [v.name for v in args.selected]
    if args.retrain is None:
        args.retrain = set()
    elif not args.retrain:
        args.retrain = set(selected)
    else:
        stray = [n for n in args.retrain if n not in selected]
        if stray:
            parser.error(f'--retrain names variant(s) {stray} that are not selected; selected: {selected}')
        args.retrain = set(args.retrain)
    # a variant fine-tuned from a detector that is trained again must be fine-tuned again too
    args.retrain |= {v.name for v in args.selected if v.fp in args.retrain}
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.list:
        for v in VARIANTS:
            sets = ''.join(f'({name}) ' for name, members in SETS.items() if v.name in members)
            print(f"{v.name:26s} {sets}{v.what}\n{'':26s} {v.config}")
        return 0
    if args.report:
        with open(args.report) as f:
            done = json.load(f)
        rows = score(done['variants'])  # the current targets and gaps, on the saved APs
        print(format_report(rows, done['machine'], done.get('cfg_options'), done.get('iters_scale', 1.0),
                            done.get('finetune_scale', 1.0)))
        return 0
    os.chdir(ROOT)
    start = time.time()
    machine = machine_info()
    ensure_dataset(args.data_root, log, args.dataset_preset)
    rows = run_all(args.selected, args)
    report = format_report(rows, machine, dict(args.cfg_options or {}, **{
        f'(quantized) {k}': v for k, v in (args.quantized_cfg_options or {}).items()}), args.iters_scale,
        args.finetune_scale)
    os.makedirs(args.out_dir, exist_ok=True)
    with open(osp.join(args.out_dir, 'accuracy.md'), 'w') as f:
        f.write(report + '\n')
    checks = [t['met'] for r in rows for t in r.get('targets', [])]
    summary = dict(machine=machine, set=None if args.variants else args.set, seeds=args.seeds,
                   spread=spread(rows), work_dir=args.work_dir, data_root=args.data_root,
                   dataset_preset=args.dataset_preset, cfg_options=args.cfg_options,
                   quantized_cfg_options=args.quantized_cfg_options,
                   iters_scale=args.iters_scale, finetune_scale=args.finetune_scale,
                   total_seconds=round(time.time() - start, 1),
                   targets_met=checks.count(True), targets_missed=checks.count(False),
                   targets_unchecked=checks.count(None), variants=rows)
    with open(osp.join(args.out_dir, 'accuracy.json'), 'w') as f:
        json.dump(summary, f, indent=2, default=str)
    print('\nCOCO bbox AP on the generated benchmark (val split), gap = AP - FP AP:\n' + report, flush=True)
    print(f'\ntargets: {checks.count(True)} met, {checks.count(False)} missed, {checks.count(None)} not checked; '
          f'written to {args.out_dir}/accuracy.md and accuracy.json ({time.time() - start:.0f} s)', flush=True)
    return 1 if any(r['error'] for r in rows) else 0


if __name__ == '__main__':
    sys.exit(main())
