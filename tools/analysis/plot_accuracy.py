"""AP against bit width from the accuracy benchmark's ``accuracy.json``: one panel per detector, one line per method.

    python tools/analysis/plot_accuracy.py work_dirs/benchmark_accuracy/accuracy.json --out docs/accuracy_vs_bits.png
    # several runs (e.g. the default set and the ablations, or more seeds): their rows are pooled
    python tools/analysis/plot_accuracy.py work_dirs/benchmark_accuracy/accuracy.json \\
        work_dirs/benchmark_ablations/accuracy.json --out docs/accuracy_vs_bits.png --title "AQD, generated benchmark"
    python tools/analysis/plot_accuracy.py A.json --out docs/accuracy_vs_bits.png --force   # replace the PNG
    python tools/analysis/plot_accuracy.py A.json B.json --exclude 'aqd-w4a4-*2' 'fqn-*-f?p?c?-*'   # fewer lines

x: weight / activation bits (2, 3, 4), y: COCO box AP (%) on the generated benchmark's val split. Each method is one
line (AQD, AQD with a shared head BN, the other quantizers in AQD's place, FQN, Auxi, ...; the method and detector
are read from the variant name by :func:`describe`, a table of patterns; an unknown name is a method of its own).
A full-precision detector is a dashed horizontal line in its detector's panel. A variant run with several seeds is
drawn at the mean AP with an error bar from the lowest to the highest seed's AP, and its seeds are named in the
legend. The same variant and seed in two files counts once (the later file's row); a row without a seed (files
older than the benchmark's ``--seeds``) is left out when the variant has seeded rows. Rows that failed (``error``) or
have no metrics are skipped with a note. An existing output file is kept unless ``--force``.

:func:`series` returns the plotted numbers (per detector: the FP line and each method's points), for tests and for
reading the figure's values without matplotlib.
"""
import argparse
import fnmatch
import os
import os.path as osp
import re
import statistics
import sys
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

sys.path.append(osp.dirname(osp.dirname(osp.abspath(__file__))))  # tools/: mmaqd_tools
from mmaqd_tools.benchmark_rows import pool_rows  # noqa: E402

#: (pattern on the variant name, method label; ``{1}`` etc. are the pattern's groups): the first match wins. Bits
#: (``-w<W>a<A>``) and the detector (``-retinanet``) are read separately.
METHOD_PATTERNS: List[Tuple[str, str]] = [
    (r'^fp(-retinanet)?$', 'FP'),
    (r'^aqd-w\d+a\d+(-retinanet)?$', 'AQD'),
    (r'^aqd-w\d+a\d+-shared-bn(-retinanet)?$', 'AQD, shared BN'),
    (r'^aqd-w\d+a\d+-lsq(-retinanet)?$', 'LSQ'),
    (r'^aqd-w\d+a\d+-lsqplus(-retinanet)?$', 'LSQ+'),
    (r'^aqd-w\d+a\d+-dorefa(-retinanet)?$', 'DoReFa'),
    (r'^aqd-w\d+a\d+-pact(-retinanet)?$', 'PACT'),
    (r'^aqd-w\d+a\d+-lqnet(-retinanet)?$', 'LQ-Nets'),
    (r'^aqd-w\d+a\d+-backbone(-retinanet)?$', 'AQD, backbone quantized'),
    (r'^aqd-w\d+a\d+-backbone-fpn(-retinanet)?$', 'AQD, backbone + FPN quantized'),
    (r'^aqd-w\d+a\d+-distill(-retinanet)?$', 'AQD + distillation'),
    (r'^aqd-w\d+a\d+-add8(-retinanet)?$', 'AQD, adds at 8 bits'),
    (r'^aqd-w\d+a\d+-addfp(-retinanet)?$', 'AQD, adds FP (authors\' code)'),
    (r'^aqd-w\d+a\d+-(backbone|neck|head)2(-retinanet)?$', 'AQD, the {1} at 2 bits'),
    (r'^aqd-w\d+a\d+-f8l8-zl(-retinanet)?$', 'AQD, F8L8, zero level'),
    (r'^aqd-w\d+a\d+-f8l8(-retinanet)?$', 'AQD, F8L8'),
    (r'^auxi-w\d+a\d+(-retinanet)?$', 'Auxi'),
    (r'^fqn-w\d+a\d+(-retinanet)?$', 'FQN'),
    (r'^fqn-w\d+a\d+-(f\dp\dc\d)(-retinanet)?$', 'FQN {1}'),
    (r'^fqn-w\d+a\d+-(?:l8|out8)(-retinanet)?$', 'FQN, 8-bit outputs'),
    (r'^liq-w\d+a\d+(-retinanet)?$', 'LIQ, fully quantized'),
]
#: detector label by the first word of a config file name (or of the variant name's last part)
DETECTORS = {'fcos': 'FCOS', 'retinanet': 'RetinaNet'}
#: method drawing order (others follow in the order met) and their line styles
METHOD_ORDER = ['AQD', 'AQD, shared BN', 'LSQ', 'LSQ+', 'LQ-Nets', 'PACT', 'DoReFa', 'FQN', 'Auxi']
MARKERS = 'osD^v<>ph*xP'


@dataclass(frozen=True)
class VariantInfo:
    """What a benchmark variant is: its method (a label), its detector, and its weight / activation bits (``None``
    for a full-precision detector or when unknown)."""

    method: str
    detector: str
    weight_bits: Optional[int]
    act_bits: Optional[int]

    @property
    def is_fp(self) -> bool:
        return self.method == 'FP'


def describe(name: str, config: Optional[str] = None, bits: Optional[int] = None) -> VariantInfo:
    """Method, detector and bits of the variant ``name`` (``config`` and the row's ``bits`` help for names the
    pattern table does not know: such a variant is a method of its own, named as it is). Never raises."""
    name = str(name)
    method = None
    for pattern, label in METHOD_PATTERNS:
        m = re.match(pattern, name)
        if m:
            method = label.format(*([m.group(0)] + [g or '' for g in m.groups()]))
            break
    wa = re.search(r'(?:^|[-_])w(\d+)a(\d+)(?:$|[-_])', name)
    if wa is None and config:
        wa = re.search(r'(?:^|[-_])w(\d+)a(\d+)(?:$|[-_])', osp.basename(str(config)))
    w, a = (int(wa.group(1)), int(wa.group(2))) if wa else (bits, bits)
    if method is None:
        method = 'FP' if bits is None and wa is None and re.match(r'^fp\b', name) else name
    if method == 'FP':
        w = a = None
    detector = None
    if config:
        first = osp.basename(str(config)).split('_')[0].split('-')[0].lower()
        detector = DETECTORS.get(first, first or None)
    if detector is None:
        detector = 'RetinaNet' if re.search(r'(^|-)retinanet($|-)', name) else 'FCOS'
    return VariantInfo(method, detector, w, a)


@dataclass
class Point:
    """One variant's AP over its seeds (one value when run once)."""

    name: str
    bits: Optional[int]
    aps: List[float]
    seeds: List[Optional[int]]
    mean: float = field(init=False)
    min: float = field(init=False)
    max: float = field(init=False)

    def __post_init__(self):
        self.mean = round(statistics.fmean(self.aps), 2)
        self.min = min(self.aps)
        self.max = max(self.aps)


@dataclass
class DetectorSeries:
    """A panel: the detector's FP line (``None`` without an FP row) and each method's points, sorted by bits."""

    detector: str
    fp: Optional[Point] = None
    methods: Dict[str, List[Point]] = field(default_factory=dict)


def load_rows(paths: Sequence[str], log=print) -> List[dict]:
    """The rows of every file, each with ``_file``, ``_set`` (the file's set, ``default`` when not recorded) and
    ``_machine``, pooled by variant (:func:`mmaqd_tools.benchmark_rows.pool_rows`): a variant and seed met again
    replaces the earlier row (with a note), and a row without a seed (an older file) is left out when the variant
    has seeded rows."""
    return pool_rows(paths, key=lambda row: row.get('name'), log=log,
                     annotate=lambda data, path: dict(_set=data.get('set') or 'default', _machine=data.get('machine')))


def row_ap(row: dict) -> Optional[float]:
    """The row's AP, ``None`` when the run failed or has no AP."""
    if row.get('error') or not row.get('metrics'):
        return None
    ap = row['metrics'].get('AP')
    return None if ap is None else float(ap)


def series(rows: Sequence[dict], log=print) -> Dict[str, DetectorSeries]:
    """Detector label -> its panel's numbers. Rows that failed or have no AP are left out (``log`` says which)."""
    groups: Dict[Tuple[str, str, Optional[int], str], List[dict]] = {}
    for row in rows:
        name = row.get('name', '?')
        ap = row_ap(row)
        if ap is None:
            why = f"error: {row['error']}" if row.get('error') else 'no metrics'
            log(f'skipped {name} (seed {row.get("seed", "-")}): {why}')
            continue
        info = describe(name, row.get('config'), row.get('bits'))
        bits = None if info.is_fp else (info.weight_bits if info.weight_bits is not None else row.get('bits'))
        if not info.is_fp and bits is None:
            log(f'skipped {name}: no bit width in its name or row')
            continue
        groups.setdefault((info.detector, info.method, bits, name), []).append(row)
    out: Dict[str, DetectorSeries] = {}
    for (detector, method, bits, name), members in groups.items():
        members.sort(key=lambda r: (r.get('seed') is None, r.get('seed') or 0))
        point = Point(name, bits, [row_ap(r) for r in members], [r.get('seed') for r in members])
        panel = out.setdefault(detector, DetectorSeries(detector))
        if method == 'FP':
            if panel.fp is not None:  # two FP rows of one detector (different names): pool them
                point = Point(panel.fp.name, None, panel.fp.aps + point.aps, panel.fp.seeds + point.seeds)
            panel.fp = point
        else:
            panel.methods.setdefault(method, []).append(point)
    for panel in out.values():
        for points in panel.methods.values():
            points.sort(key=lambda p: (p.bits, p.name))
        order = {m: i for i, m in enumerate(METHOD_ORDER)}
        panel.methods = dict(sorted(panel.methods.items(), key=lambda kv: order.get(kv[0], len(order))))
    first = ['FCOS', 'RetinaNet']
    return dict(sorted(out.items(), key=lambda kv: (first.index(kv[0]) if kv[0] in first else 2, kv[0])))


def _seed_text(points: Sequence[Point]) -> str:
    """', seeds 0,1,2' when a point of the line pools several runs; '' otherwise."""
    if all(len(p.aps) < 2 for p in points):
        return ''
    seeds = sorted({s for p in points for s in p.seeds}, key=lambda s: (s is None, s or 0))
    return ', seeds ' + ','.join('-' if s is None else str(s) for s in seeds)


def plot(panels: Dict[str, DetectorSeries], out: str, title: Optional[str] = None, caption: str = '') -> str:
    """Draw the panels into the PNG ``out`` (headless) and return its path."""
    try:
        import matplotlib
    except ImportError as e:  # pragma: no cover - matplotlib is a requirement of the tools
        raise SystemExit(f'plot_accuracy.py needs matplotlib: pip install matplotlib ({e})')
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    n = max(len(panels), 1)
    # one colour and marker per method in every panel
    methods = list(dict.fromkeys(m for panel in panels.values() for m in panel.methods))
    style = {m: dict(color=f'C{i % 10}', marker=MARKERS[i % len(MARKERS)]) for i, m in enumerate(methods)}
    fig, axes = plt.subplots(1, n, figsize=(6.4 * n, 5.2), squeeze=False)
    for ax, panel in zip(axes[0], panels.values()):
        all_bits = sorted({p.bits for pts in panel.methods.values() for p in pts} | {2, 3, 4})
        for method, points in panel.methods.items():
            xs = [p.bits for p in points]
            ys = [p.mean for p in points]
            err = [[p.mean - p.min for p in points], [p.max - p.mean for p in points]]
            ax.errorbar(xs, ys, yerr=err, capsize=4, linewidth=1.5, label=method + _seed_text(points),
                        **style[method])
        if panel.fp is not None:
            fp = panel.fp
            label = f'FP ({fp.mean:.1f}' + (f', {fp.min:.1f}..{fp.max:.1f}' if len(fp.aps) > 1 else '') + ')'
            ax.axhline(fp.mean, color='black', linestyle='--', linewidth=1.2, label=label + _seed_text([fp]))
            if len(fp.aps) > 1:
                ax.axhspan(fp.min, fp.max, color='black', alpha=0.08)
        ax.set_xticks(all_bits)
        ax.set_xlim(min(all_bits) - 0.3, max(all_bits) + 0.3)
        ax.set_xlabel('bits (weights / activations)')
        ax.set_ylabel('box AP (%)')
        ax.set_title(panel.detector)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc='best')
    if not panels:
        axes[0][0].text(0.5, 0.5, 'no rows with an AP', ha='center', va='center')
    fig.suptitle(title or 'COCO box AP on the generated benchmark (val split) against bit width')
    if caption:
        fig.text(0.01, 0.01, caption, fontsize=7, va='bottom', wrap=True)
    fig.tight_layout(rect=(0, 0.06 if caption else 0, 1, 1))
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def _point_text(p: Point) -> str:
    """'2b 40.1 (39.8..40.5, seeds 0,1,2)', or '4b 51.0' for one run."""
    if len(p.aps) < 2:
        return f'{p.bits}b {p.mean}'
    return f'{p.bits}b {p.mean} ({p.min}..{p.max}, seeds {",".join(map(str, p.seeds))})'


def caption_text(rows: Sequence[dict], paths: Sequence[str]) -> str:
    """Where the numbers come from: the files and their sets, and how several seeds are drawn."""
    sets = {}
    for r in rows:
        sets.setdefault(r['_file'], r['_set'])
    files = '; '.join(f'{p} (set {sets.get(p, "-")})' for p in paths)
    text = f'from {files}.'
    if any(len([r for r in rows if r.get('name') == n]) > 1 for n in {r.get('name') for r in rows}):
        text += ' Several seeds: mean, error bar min..max.'
    return text


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('json', nargs='+', help="accuracy.json files written by tools/benchmark/accuracy.py")
    p.add_argument('--out', default='docs/accuracy_vs_bits.png', help='output PNG (default: %(default)s)')
    p.add_argument('--title', help='figure title')
    p.add_argument('--force', action='store_true', help='replace an existing output file')
    p.add_argument('--exclude', nargs='+', default=[], metavar='PATTERN',
                   help="leave out the variants whose name matches one of these fnmatch patterns, e.g. 'aqd-w4a4-*2'")
    return p.parse_args(argv)


def main(argv=None) -> str:
    args = parse_args(argv)
    if osp.exists(args.out) and not args.force:
        raise SystemExit(f'{args.out} exists: pass --force to replace it, or another --out')
    missing = [p for p in args.json if not osp.isfile(p)]
    if missing:
        raise SystemExit(f'no such file: {", ".join(missing)}')
    rows = [r for r in load_rows(args.json)
            if not any(fnmatch.fnmatchcase(str(r.get('name')), pat) for pat in args.exclude)]
    panels = series(rows)
    if osp.dirname(args.out):
        os.makedirs(osp.dirname(args.out), exist_ok=True)
    plot(panels, args.out, args.title, caption_text(rows, args.json))
    for panel in panels.values():
        fp = f'FP {panel.fp.mean}' if panel.fp else 'no FP row'
        lines = '; '.join(f'{m}: ' + ', '.join(_point_text(p) for p in pts) for m, pts in panel.methods.items())
        print(f'{panel.detector}: {fp}; {lines}')
    print(f'wrote {args.out}')
    return args.out


if __name__ == '__main__':
    main(sys.argv[1:])
