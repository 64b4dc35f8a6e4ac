"""The model zoo's metafiles (mim / model-index format): benchmark results in, paper numbers, a listing and a check.

    # the accuracy benchmark's rows into the metafiles (and the paper's COCO AP, and model-index.yml)
    python tools/misc/model_zoo.py update work_dirs/benchmark_accuracy/accuracy.json \\
        --command "python tools/benchmark/accuracy.py --seeds 0 1 2"
    python tools/misc/model_zoo.py update              # only the paper's COCO AP and model-index.yml
    python tools/misc/model_zoo.py list                # every model of every metafile: bits, dataset, AP, source
    python tools/misc/model_zoo.py list --dataset COCO --method AQD
    python tools/misc/model_zoo.py list --dataset synthetic --source ours
    python tools/misc/model_zoo.py check               # exit status 1 on a missing config or an unlisted metafile
    python tools/misc/model_zoo.py update --root /tmp/repo-copy A.json   # operate on another checkout

``update`` writes each benchmark row (``tools/benchmark/accuracy.py``'s ``accuracy.json``) into the metafile of
its config's folder (``configs/aqd/metafile.yml`` for ``configs/aqd/ablations/x.py``; ``configs/fcos``,
``configs/retinanet`` and ``configs/liq`` get one, with a ``Collections`` entry, when absent), as the model named
after the config file (``fcos_r18-c32_fpn_aqd-w2a2_synth``), created when missing. Its ``Metadata`` gets
Architecture, Weight Bits and Activation Bits (32 for full precision), ``Training Data: generated benchmark
(data/synthetic_coco)``, the Benchmark Variant and the Seed (a list when several); its ``Results`` one entry::

    - Task: Object Detection
      Dataset: synthetic COCO (generated benchmark)
      Metrics: {box AP: 40.1, box AP50: ..., box AP75: ..., box APs: ..., box APm: ..., box APl: ...,
                box AP std: 0.36, box AP min: 39.8, box AP max: 40.5}     # std/min/max with several seeds
      Seeds: [0, 1, 2]                                                     # with several seeds
      box AP per seed: [39.8, 40.5, 40.0]                                  # with several seeds
      Source: ours (tools/benchmark/accuracy.py)
      Machine: {platform: ..., cpu_count: 2, torch: ..., ...}              # the JSON's "machine"
      Command: python tools/benchmark/accuracy.py ...                      # --command, else rebuilt from the JSON

Metric values are numbers (the mean over the seeds); everything else of a result sits beside ``Metrics`` (mim's
model-index reads Task, Dataset and Metrics and ignores the rest). Rows of one config are pooled over all files;
one seed met twice counts once (the later file's row), and a row without a seed (files older than ``--seeds``) is
left out when the config has seeded rows. A failed row (``error``, or no metrics) is skipped with a
note and leaves the entry's earlier result in place. Every COCO config that the AQD paper (arXiv 2007.06919v1)
reports gets a result with ``Dataset: COCO``, its box AP and ``Source: paper (arXiv 2007.06919v1 Table N)``
(:data:`PAPER_AP`, the "AQD paper AP" columns of the configs' READMEs; an FP COCO config gets its entry in
``configs/fcos`` / ``configs/retinanet``). Existing entries and their other fields are kept; a result is replaced
only by one of the same dataset and source, so running ``update`` twice writes the same files. Then
``model-index.yml`` at the root imports every ``configs/*/metafile.yml``.
"""
import argparse
import glob
import json
import os
import os.path as osp
import re
import shlex
import statistics
import sys
from typing import Dict, List, Optional, Sequence, Tuple

import yaml

sys.path.append(osp.dirname(osp.dirname(osp.abspath(__file__))))  # tools/: mmaqd_tools
from mmaqd_tools.benchmark_rows import pool_rows  # noqa: E402

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
TASK = 'Object Detection'
BENCH_DATASET = 'synthetic COCO (generated benchmark)'
BENCH_TRAINING_DATA = 'generated benchmark (data/synthetic_coco)'
OURS = 'ours (tools/benchmark/accuracy.py)'
PAPER = 'arXiv 2007.06919v1'
#: accuracy.json metric -> metafile metric
METRICS = {'AP': 'box AP', 'AP50': 'box AP50', 'AP75': 'box AP75', 'APs': 'box APs', 'APm': 'box APm',
           'APl': 'box APl'}
FP_BITS = 32

_T1, _T2 = 'Table 1', 'Table 2'
#: COCO val box AP of the AQD paper (arXiv 2007.06919v1) per config, and its table: FCOS Table 1, RetinaNet with
#: the FQN and Auxi baselines Table 2, shared BN Table 3, the quantized parts Table 4 (the "AQD paper AP" columns of
#: configs/aqd/README.md, configs/fcos/README.md and configs/retinanet/README.md, and the paper AP of
#: configs/fqn/README.md and configs/auxi/README.md; tests/test_tools/test_model_zoo.py checks they agree)
PAPER_AP: Dict[str, Tuple[float, str]] = {
    'configs/fcos/fcos_r18_fpn_bn-head_90k_coco.py': (33.9, _T1),
    'configs/aqd/fcos_r18_fpn_aqd-w4a4_90k_coco.py': (34.9, _T1),
    'configs/aqd/fcos_r18_fpn_aqd-w3a3_90k_coco.py': (34.3, _T1),
    'configs/aqd/fcos_r18_fpn_aqd-w2a2_90k_coco.py': (32.2, _T1),
    'configs/fcos/fcos_r34_fpn_bn-head_90k_coco.py': (38.0, _T1),
    'configs/aqd/fcos_r34_fpn_aqd-w4a4_90k_coco.py': (38.3, _T1),
    'configs/aqd/fcos_r34_fpn_aqd-w3a3_90k_coco.py': (37.8, _T1),
    'configs/aqd/fcos_r34_fpn_aqd-w2a2_90k_coco.py': (35.7, _T1),
    'configs/fcos/fcos_r50_fpn_bn-head_90k_coco.py': (38.9, _T1),
    'configs/aqd/fcos_r50_fpn_aqd-w4a4_90k_coco.py': (38.8, _T1),
    'configs/aqd/fcos_r50_fpn_aqd-w3a3_90k_coco.py': (38.5, _T1),
    'configs/aqd/fcos_r50_fpn_aqd-w2a2_90k_coco.py': (36.0, _T1),
    'configs/retinanet/retinanet_r18_fpn_bn-head_90k_coco.py': (32.3, _T2),
    'configs/aqd/retinanet_r18_fpn_aqd-w4a4_90k_coco.py': (34.1, _T2),
    'configs/aqd/retinanet_r18_fpn_aqd-w3a3_90k_coco.py': (33.5, _T2),
    'configs/aqd/retinanet_r18_fpn_aqd-w2a2_90k_coco.py': (31.0, _T2),
    'configs/retinanet/retinanet_r34_fpn_bn-head_90k_coco.py': (36.3, _T2),
    'configs/aqd/retinanet_r34_fpn_aqd-w4a4_90k_coco.py': (37.1, _T2),
    'configs/aqd/retinanet_r34_fpn_aqd-w3a3_90k_coco.py': (36.5, _T2),
    'configs/aqd/retinanet_r34_fpn_aqd-w2a2_90k_coco.py': (34.3, _T2),
    'configs/retinanet/retinanet_r50_fpn_bn-head_90k_coco.py': (37.8, _T2),
    'configs/aqd/retinanet_r50_fpn_aqd-w4a4_90k_coco.py': (38.1, _T2),
    'configs/aqd/retinanet_r50_fpn_aqd-w3a3_90k_coco.py': (37.2, _T2),
    'configs/aqd/retinanet_r50_fpn_aqd-w2a2_90k_coco.py': (35.0, _T2),
    'configs/fqn/retinanet_r18_fpn_fqn-w4a4_80k_coco.py': (28.6, _T2),
    'configs/fqn/retinanet_r34_fpn_fqn-w4a4_80k_coco.py': (31.3, _T2),
    'configs/fqn/retinanet_r50_fpn_fqn-w4a4_80k_coco.py': (32.5, _T2),
    'configs/auxi/retinanet_r18_fpn_auxi-w4a4_90k_coco.py': (31.9, _T2),
    'configs/auxi/retinanet_r34_fpn_auxi-w4a4_90k_coco.py': (34.7, _T2),
    'configs/auxi/retinanet_r50_fpn_auxi-w4a4_90k_coco.py': (36.1, _T2),
    'configs/aqd/ablations/fcos_r18_fpn_aqd-w2a2-shared-bn_90k_coco.py': (29.4, 'Table 3'),
    'configs/aqd/ablations/fcos_r18_fpn_aqd-w2a2-backbone_90k_coco.py': (33.8, 'Table 4'),
    'configs/aqd/ablations/fcos_r18_fpn_aqd-w2a2-backbone-fpn_90k_coco.py': (33.2, 'Table 4'),
}

_GPUS = '8x GPUs'
#: the Collections entry of a metafile that ``update`` creates, by config folder (others: named after the folder)
COLLECTIONS: Dict[str, dict] = {
    'fcos': {'Name': 'FCOS',
             'Metadata': {'Training Data': 'COCO', 'Training Techniques': ['SGD with Momentum', 'Weight Decay'],
                          'Training Resources': _GPUS, 'Architecture': ['FPN', 'ResNet', 'BN head']},
             'Paper': {'URL': 'https://arxiv.org/abs/1904.01355',
                       'Title': 'FCOS: Fully Convolutional One-Stage Object Detection'},
             'README': 'configs/fcos/README.md'},
    'retinanet': {'Name': 'RetinaNet',
                  'Metadata': {'Training Data': 'COCO', 'Training Techniques': ['SGD with Momentum', 'Weight Decay'],
                               'Training Resources': _GPUS, 'Architecture': ['FPN', 'ResNet', 'Focal Loss',
                                                                             'BN head']},
                  'Paper': {'URL': 'https://arxiv.org/abs/1708.02002',
                            'Title': 'Focal Loss for Dense Object Detection'},
                  'README': 'configs/retinanet/README.md'},
    'liq': {'Name': 'LIQ',
            'Metadata': {'Training Data': 'COCO',
                         'Training Techniques': ['Quantization-aware Training', 'Fully quantized (LIQ)'],
                         'Architecture': ['FPN', 'ResNet', 'LIQ']},
            'Paper': {'URL': 'https://arxiv.org/abs/2007.06919',
                      'Title': 'AQD: Towards Accurate Quantized Object Detection'},
            'README': 'configs/aqd/README.md'},
}
DETECTORS = {'fcos': 'FCOS', 'retinanet': 'RetinaNet'}


# ---------------------------------------------------------------------------------------------------- YAML files
class _Dumper(yaml.SafeDumper):
    """Block style with list items indented under their key (the metafiles' style); lists of numbers in flow
    style (``Seed: [0, 1, 2]``)."""

    def increase_indent(self, flow=False, indentless=False):
        return super().increase_indent(flow, False)

    def ignore_aliases(self, data):  # a value met twice is written twice, never as an &anchor / *alias
        return True


def _represent_list(dumper, data):
    flow = bool(data) and all(x is None or isinstance(x, (int, float)) for x in data)
    return dumper.represent_sequence('tag:yaml.org,2002:seq', data, flow_style=flow)


_Dumper.add_representer(list, _represent_list)


def dump_yaml(data: dict) -> str:
    """``data`` as YAML, keys in their order, one blank line between the top-level keys."""
    parts = [yaml.dump({k: v}, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=1000,
                       default_flow_style=False) for k, v in data.items()]
    return '\n'.join(parts)


def load_yaml(path: str) -> dict:
    with open(path) as f:
        return yaml.safe_load(f) or {}


def write_if_changed(path: str, text: str) -> bool:
    """Write ``text`` to ``path`` unless it holds it already; True when written."""
    if osp.exists(path):
        with open(path) as f:
            if f.read() == text:
                return False
    os.makedirs(osp.dirname(path) or '.', exist_ok=True)
    with open(path, 'w') as f:
        f.write(text)
    return True


# ------------------------------------------------------------------------------------------------ model entries
def metafile_of(config: str) -> Optional[str]:
    """``configs/<folder>/metafile.yml`` of a config under ``configs/``; ``None`` for any other path."""
    parts = config.replace('\\', '/').split('/')
    if len(parts) < 3 or parts[0] != 'configs':
        return None
    return f'configs/{parts[1]}/metafile.yml'


def bits_of(stem: str) -> Tuple[int, int]:
    """Weight and activation bits in a config name (``..._aqd-w4a4_...``); 32 / 32 (FP) without ``-w<W>a<A>``."""
    m = re.search(r'(?:^|[-_])w(\d+)a(\d+)(?:$|[-_])', stem)
    return (int(m.group(1)), int(m.group(2))) if m else (FP_BITS, FP_BITS)


def backbone_of(stem: str) -> Optional[str]:
    """``ResNet-18 (half width)`` for ``..._r18-c32_...``; ``None`` when the name has no ResNet part."""
    parts = stem.split('_')
    m = re.match(r'^r(\d+)(-caffe)?(?:-c(\d+))?$', parts[1]) if len(parts) > 1 else None
    if not m:
        return None
    text = f'ResNet-{m.group(1)}' + (' (caffe)' if m.group(2) else '')
    if m.group(3):
        text += ' (half width)' if m.group(3) == '32' else f' (base width {m.group(3)})'
    return text


def derived_metadata(stem: str) -> dict:
    """Architecture, Backbone and bits read from a config name."""
    meta = {}
    arch = DETECTORS.get(stem.split('_')[0].split('-')[0])
    if arch:
        meta['Architecture'] = arch
    backbone = backbone_of(stem)
    if backbone:
        meta['Backbone'] = backbone
    meta['Weight Bits'], meta['Activation Bits'] = bits_of(stem)
    return meta


class Metafiles:
    """The metafiles under ``root``, loaded on first use, written by :meth:`save`."""

    def __init__(self, root: str, log=print):
        self.root = root
        self.log = log
        self.files: Dict[str, dict] = {}

    def get(self, rel: str) -> dict:
        if rel not in self.files:
            path = osp.join(self.root, rel)
            if osp.exists(path):
                self.files[rel] = load_yaml(path)
            else:
                folder = rel.split('/')[1]
                collection = COLLECTIONS.get(folder, {'Name': folder})
                self.files[rel] = {'Collections': [json.loads(json.dumps(collection))], 'Models': []}
                self.log(f'{rel}: new metafile, collection {collection["Name"]}')
        return self.files[rel]

    def entry(self, config: str, create_meta: dict) -> dict:
        """The model entry of ``config`` (found by its Config path, else by its name), created when missing."""
        data = self.get(metafile_of(config))
        models = data.setdefault('Models', []) or []
        data['Models'] = models
        stem = osp.splitext(osp.basename(config))[0]
        found = [m for m in models if m.get('Config') == config] or [m for m in models if m.get('Name') == stem]
        if found:
            entry = found[0]
            entry['Config'] = config
            return entry
        collection = (data.get('Collections') or [{}])[0].get('Name', config.split('/')[1])
        entry = {'Name': stem, 'In Collection': collection, 'Config': config, 'Metadata': dict(create_meta)}
        models.append(entry)
        return entry

    def save(self) -> List[str]:
        """Write the changed metafiles; their paths."""
        written = []
        for rel, data in sorted(self.files.items()):
            if write_if_changed(osp.join(self.root, rel), dump_yaml(data)):
                written.append(rel)
        return written


def source_kind(result: dict) -> Optional[str]:
    source = str(result.get('Source', ''))
    return 'paper' if source.startswith('paper') else 'ours' if source.startswith('ours') else None


def upsert_result(entry: dict, result: dict) -> None:
    """Put ``result`` into the entry's Results, replacing the one of the same dataset and source."""
    results = entry.get('Results') or []
    entry['Results'] = results
    for i, old in enumerate(results):
        if old.get('Dataset') == result['Dataset'] and source_kind(old) == source_kind(result):
            results[i] = result
            return
    results.append(result)


def add_paper_results(files: Metafiles) -> int:
    """A COCO result with the paper's box AP in the entry of every config of :data:`PAPER_AP` (an entry is created
    only for a config file that exists); the number of entries touched."""
    n = 0
    for config, (ap, table) in PAPER_AP.items():
        stem = osp.splitext(osp.basename(config))[0]
        if not osp.exists(osp.join(files.root, config)):
            data = files.get(metafile_of(config)) if osp.exists(osp.join(files.root, metafile_of(config))) else {}
            if not any(m.get('Config') == config or m.get('Name') == stem for m in data.get('Models') or []):
                files.log(f'note: {config} not found under {files.root}: no paper entry')
                continue
        entry = files.entry(config, dict(derived_metadata(stem), **{'Training Data': 'COCO'}))
        meta = entry.get('Metadata') or {}
        entry['Metadata'] = meta
        for key, value in derived_metadata(stem).items():
            meta.setdefault(key, value)
        upsert_result(entry, {'Task': TASK, 'Dataset': 'COCO', 'Metrics': {'box AP': ap},
                              'Source': f'paper ({PAPER} {table})'})
        n += 1
    return n


# ------------------------------------------------------------------------------------------- benchmark results
def rebuilt_command(data: dict, path: str, root: str) -> str:
    """The accuracy benchmark command that wrote ``data`` (as far as the JSON says), marked as rebuilt."""
    cmd = ['python', 'tools/benchmark/accuracy.py']
    names = list(dict.fromkeys(r.get('name') for r in data.get('variants', []) if r.get('name')))
    set_name = data.get('set')
    if not set_name:  # --variants (or an old file without "set"): the rows' variants select the same runs
        cmd += ['--variants'] + names
    elif set_name != 'default':
        cmd += ['--set', set_name]
    seeds = data.get('seeds')
    if seeds and list(seeds) != [0]:
        cmd += ['--seeds'] + [str(s) for s in seeds]
    if data.get('work_dir') and data['work_dir'] != 'work_dirs/pipeline':
        cmd += ['--work-dir', data['work_dir']]
    out_dir = osp.dirname(osp.abspath(path))
    rel = osp.relpath(out_dir, root)
    out_dir = out_dir if rel.startswith('..') else rel
    if out_dir != 'work_dirs/benchmark_accuracy':
        cmd += ['--out-dir', out_dir]
    for key, flag in (('iters_scale', '--iters-scale'), ('finetune_scale', '--finetune-scale')):
        if data.get(key) not in (None, 1, 1.0):
            cmd += [flag, f'{data[key]:g}']
    if data.get('cfg_options'):
        cmd += ['--cfg-options'] + [f'{k}={v}' for k, v in data['cfg_options'].items()]
    return ' '.join(shlex.quote(str(c)) for c in cmd) + '  # rebuilt from accuracy.json'


def load_benchmark(paths: Sequence[str], root: str, command: Optional[str], log=print) -> Dict[str, List[dict]]:
    """Config -> its usable rows over all files (one per seed, the later file's; :func:`mmaqd_tools.benchmark_rows.
    pool_rows`), sorted by seed, each with ``_machine`` and ``_command``; failed rows are left out with a note."""
    def usable(row: dict, path: str) -> bool:
        name, config = row.get('name', '?'), row.get('config')
        if row.get('error') or (row.get('metrics') or {}).get('AP') is None:
            why = f"error: {row['error']}" if row.get('error') else 'no metrics'
            log(f'skipped {name} (seed {row.get("seed", "-")}) of {path}: {why}')
            return False
        if not config or metafile_of(config) is None:
            log(f'skipped {name} of {path}: its config {config!r} is not under configs/')
            return False
        return True

    rows = pool_rows(paths, key=lambda row: row['config'], keep=usable, log=log,
                     annotate=lambda data, path: dict(_machine=data.get('machine'),
                                                      _command=command or rebuilt_command(data, path, root)))
    groups: Dict[str, List[dict]] = {}
    for row in sorted(rows, key=lambda r: (r.get('seed') is None, r.get('seed') or 0)):
        groups.setdefault(row['config'], []).append(row)
    return groups


def _one_or_list(values: list):
    distinct = []
    for v in values:
        if v not in distinct:
            distinct.append(v)
    return distinct[0] if len(distinct) == 1 else distinct


def benchmark_result(rows: List[dict]) -> Tuple[dict, object]:
    """The Results entry of one config's rows (mean over seeds, spread with several) and its Seed metadata."""
    metrics = {}
    for key, label in METRICS.items():
        values = [r['metrics'][key] for r in rows if r['metrics'].get(key) is not None]
        if len(values) == len(rows):
            metrics[label] = round(statistics.fmean(values), 2)
    seeds = [r.get('seed') for r in rows]
    result = {'Task': TASK, 'Dataset': BENCH_DATASET, 'Metrics': metrics}
    if len(rows) > 1:
        aps = [r['metrics']['AP'] for r in rows]
        metrics.update({'box AP std': round(statistics.stdev(aps), 2), 'box AP min': min(aps),
                        'box AP max': max(aps)})
        result['Seeds'] = seeds
        result['box AP per seed'] = aps
    result['Source'] = OURS
    result['Machine'] = _one_or_list([r['_machine'] for r in rows])
    result['Command'] = _one_or_list([r['_command'] for r in rows])
    seed_meta = seeds if len(seeds) > 1 else ('not recorded' if seeds[0] is None else seeds[0])
    return result, seed_meta


def add_benchmark_results(files: Metafiles, groups: Dict[str, List[dict]]) -> List[str]:
    """Write every config's benchmark result into its entry; one line per entry written."""
    lines = []
    for config, rows in groups.items():
        if not osp.exists(osp.join(files.root, config)):
            files.log(f'skipped {config}: no such config under {files.root}')
            continue
        stem = osp.splitext(osp.basename(config))[0]
        entry = files.entry(config, {})
        meta = entry.get('Metadata') or {}
        entry['Metadata'] = meta
        derived = derived_metadata(stem)
        result, seed = benchmark_result(rows)
        if 'Architecture' in derived:
            meta['Architecture'] = derived['Architecture']
        if 'Backbone' in derived:
            meta.setdefault('Backbone', derived['Backbone'])
        meta['Weight Bits'], meta['Activation Bits'] = derived['Weight Bits'], derived['Activation Bits']
        meta['Training Data'] = BENCH_TRAINING_DATA
        meta['Benchmark Variant'] = _one_or_list([r.get('name') for r in rows])
        meta['Seed'] = seed
        upsert_result(entry, result)
        spread = ''
        if 'box AP min' in result['Metrics']:
            spread = (f" ({result['Metrics']['box AP min']}..{result['Metrics']['box AP max']}, seeds "
                      f"{','.join('-' if s is None else str(s) for s in result['Seeds'])})")
        lines.append(f"{metafile_of(config)}: {stem} box AP {result['Metrics']['box AP']}{spread}")
    return lines


# ------------------------------------------------------------------------------------------------- model index
def metafile_paths(root: str) -> List[str]:
    """Every ``configs/*/metafile.yml`` under ``root``, relative to it, sorted."""
    paths = glob.glob(osp.join(root, 'configs', '*', 'metafile.yml'))
    return sorted(osp.relpath(p, root).replace(os.sep, '/') for p in paths)


def write_model_index(root: str) -> bool:
    return write_if_changed(osp.join(root, 'model-index.yml'), dump_yaml({'Import': metafile_paths(root)}))


def imported_metafiles(root: str) -> List[str]:
    path = osp.join(root, 'model-index.yml')
    if not osp.exists(path):
        raise SystemExit(f'{path} does not exist: run `python tools/misc/model_zoo.py update` first')
    return list(load_yaml(path).get('Import') or [])


def update(args) -> int:
    files = Metafiles(args.root)
    missing = [p for p in args.json if not osp.isfile(p)]
    if missing:
        raise SystemExit(f'no such file: {", ".join(missing)}')
    n_paper = add_paper_results(files)
    groups = load_benchmark(args.json, args.root, args.command)
    for line in add_benchmark_results(files, groups):
        print(line)
    written = files.save()
    print(f'paper results in {n_paper} entries; ' + (f'wrote {", ".join(written)}' if written else
                                                     'metafiles unchanged'))
    print('wrote model-index.yml' if write_model_index(args.root) else 'model-index.yml unchanged')
    return 0


# ------------------------------------------------------------------------------------------------- list, check
def model_rows(root: str) -> List[dict]:
    """One row per result of every model of every imported metafile (a model without results: one row)."""
    out = []
    for rel in imported_metafiles(root):
        path = osp.join(root, rel)
        if not osp.exists(path):
            continue
        for m in load_yaml(path).get('Models') or []:
            meta = m.get('Metadata') or {}
            w, a = meta.get('Weight Bits'), meta.get('Activation Bits')
            bits = '-' if w is None else 'FP' if (w, a) == (FP_BITS, FP_BITS) else f'{w}/{a}'
            base = dict(name=m.get('Name', '?'), method=m.get('In Collection', '-'), bits=bits)
            for r in m.get('Results') or [None]:
                r = r or {}
                ap = (r.get('Metrics') or {}).get('box AP')
                out.append(dict(base, dataset=r.get('Dataset', '-'), ap='-' if ap is None else ap,
                                source=source_kind(r) or '-'))
    return out


def list_models(args) -> int:
    rows = model_rows(args.root)
    if args.method:
        rows = [r for r in rows if r['method'].lower() == args.method.lower()]
    if args.dataset:
        want = args.dataset.lower()
        exact = [r for r in rows if r['dataset'].lower() == want]
        rows = exact or [r for r in rows if want in r['dataset'].lower()]
    if args.source:
        rows = [r for r in rows if r['source'] == args.source]
    header = ['name', 'method', 'bits', 'dataset', 'AP', 'source']
    table = [header] + [[str(r[k.lower()]) for k in header] for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for i, row in enumerate(table):
        print('  '.join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
        if i == 0:
            print('  '.join('-' * w for w in widths))
    print(f'{len(rows)} row(s)')
    return 0


def check(args) -> int:
    root = args.root
    problems = []
    path = osp.join(root, 'model-index.yml')
    imported = list(load_yaml(path).get('Import') or []) if osp.exists(path) else None
    if imported is None:
        problems.append('model-index.yml is missing')
        imported = []
    for rel in metafile_paths(root):
        if rel not in imported:
            problems.append(f'{rel} is not imported by model-index.yml')
    names: Dict[str, str] = {}
    for rel in imported:
        if not osp.exists(osp.join(root, rel)):
            problems.append(f'model-index.yml imports {rel}, which does not exist')
            continue
        for m in load_yaml(osp.join(root, rel)).get('Models') or []:
            name, config = m.get('Name', '?'), m.get('Config')
            if not config:
                problems.append(f'{rel}: {name} has no Config')
            elif not osp.exists(osp.join(root, config)):
                problems.append(f'{rel}: {name}: Config {config} does not exist')
            if name in names:
                problems.append(f'{rel}: {name} is also a model of {names[name]}')
            names[name] = rel
    for p in problems:
        print(p)
    status = f'{len(problems)} problem(s)' if problems else 'OK'
    print(f'{len(names)} models in {len(imported)} metafiles: {status}')
    return 1 if problems else 0


def parse_args(argv=None) -> argparse.Namespace:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument('--root', default=ROOT, help='repository root to operate on (default: this checkout)')
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest='cmd', required=True)
    u = sub.add_parser('update', parents=[common], help='benchmark rows and paper AP into the metafiles')
    u.add_argument('json', nargs='*', help='accuracy.json files of tools/benchmark/accuracy.py')
    u.add_argument('--command', help='the command that produced the JSON (default: rebuilt from the JSON)')
    u.set_defaults(func=update)
    ls = sub.add_parser('list', parents=[common], help='print every model entry and result')
    ls.add_argument('--dataset', help="dataset name (case-insensitive; a part of it when none has it whole, e.g. "
                    "'synthetic')")
    ls.add_argument('--method', help='collection, e.g. AQD, FQN, Auxi, FCOS, RetinaNet')
    ls.add_argument('--source', choices=['ours', 'paper'], help='only our measurements or the paper numbers')
    ls.set_defaults(func=list_models)
    c = sub.add_parser('check', parents=[common], help='configs exist, every metafile is imported')
    c.set_defaults(func=check)
    args = p.parse_args(argv)
    args.root = osp.abspath(args.root)
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    return args.func(args)


if __name__ == '__main__':
    sys.exit(main())
