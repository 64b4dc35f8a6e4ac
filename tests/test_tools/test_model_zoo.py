"""tools/misc/model_zoo.py: benchmark rows and paper AP into the metafiles, model-index.yml, list and check.

Every test works on a copy of configs/ in tmp_path (``--root``): the real metafiles are never written."""
import json
import os
import os.path as osp
import re
import shutil

import pytest
import yaml

from conftest import ROOT, load_tool

AQD = 'configs/aqd/'
W2A2 = AQD + 'fcos_r18-c32_fpn_aqd-w2a2_synth.py'
MACHINE = dict(platform='Linux-test', python='3.11.7', cpu_count=2, torch='2.13.0+cpu', device='cpu')
BENCH = 'synthetic COCO (generated benchmark)'


@pytest.fixture(scope='module')
def tool():
    return load_tool('misc/model_zoo.py')


@pytest.fixture
def root(tmp_path):
    """A repository root holding a copy of configs/ (its configs, READMEs and metafiles), whose metafiles keep
    their entries but none of the benchmark results the repository's metafiles carry: the tests see only the
    results they write."""
    dst = tmp_path / 'repo'
    shutil.copytree(osp.join(ROOT, 'configs'), dst / 'configs', ignore=shutil.ignore_patterns('__pycache__'))
    for path in (dst / 'configs').glob('*/metafile.yml'):
        data = yaml.safe_load(path.read_text())
        for model in data.get('Models') or []:
            kept = [r for r in model.get('Results') or [] if not str(r.get('Source', '')).startswith('ours')]
            if kept:
                model['Results'] = kept
            else:
                model.pop('Results', None)
        path.write_text(yaml.safe_dump(data, sort_keys=False))
    return str(dst)


def row(name, config, bits, ap, seed=0, error=None):
    metrics = None if ap is None else dict(AP=ap, AP50=ap + 20, AP75=ap + 1, APs=ap - 10, APm=ap + 3, APl=ap + 15)
    r = dict(name=name, config=config, fp=None if bits is None else 'fp', bits=bits, metrics=metrics, error=error,
             gap=None, targets=[], seed=seed, trained=True, train_seconds=1.0, seconds=2.0, checkpoint='x.pth')
    if seed == 'absent':
        del r['seed']
    return r


def write_json(path, rows, **top):
    data = dict(machine=MACHINE, work_dir='work_dirs/pipeline', total_seconds=1.0, variants=rows)
    data.update(top)
    path.write_text(json.dumps(data))
    return str(path)


@pytest.fixture
def bench_json(tmp_path):
    rows = [row('fp', 'configs/fcos/fcos_r18-c32_fpn_bn-head_synth.py', None, 52.2),
            row('aqd-w2a2', W2A2, 2, 39.8, seed=0), row('aqd-w2a2', W2A2, 2, 40.5, seed=1),
            row('aqd-w2a2', W2A2, 2, 40.0, seed=2),
            row('aqd-w4a4', AQD + 'fcos_r18-c32_fpn_aqd-w4a4_synth.py', 4, 51.0),
            row('aqd-w2a2-pact', AQD + 'ablations/fcos_r18-c32_fpn_aqd-w2a2-pact_synth.py', 2, None,
                error='RuntimeError: boom'),
            row('fqn-w4a4-retinanet', 'configs/fqn/retinanet_r18-c32_fpn_fqn-w4a4_synth.py', 4, 7.0),
            row('liq-w4a4', 'configs/liq/fcos_r18-c32_fpn_bn-head_liq-w4a4_synth.py', 4, 45.0)]
    return write_json(tmp_path / 'accuracy.json', rows, set='default', seeds=[0, 1, 2])


def load(root, rel):
    with open(osp.join(root, rel)) as f:
        return yaml.safe_load(f)


def entry(root, rel, name):
    found = [m for m in load(root, rel)['Models'] if m['Name'] == name]
    assert len(found) == 1, f'{name}: {len(found)} entries in {rel}'
    return found[0]


def result(e, source):
    found = [r for r in e.get('Results') or [] if r.get('Source', '').startswith(source)]
    assert len(found) <= 1
    return found[0] if found else None


def snapshot(root):
    files = sorted(p for p in (osp.join(root, 'configs', d, 'metafile.yml') for d in
                               ('aqd', 'auxi', 'fcos', 'fqn', 'liq', 'retinanet')) if osp.exists(p))
    files.append(osp.join(root, 'model-index.yml'))
    return {p: open(p).read() for p in files}


def test_update_writes_benchmark_rows(tool, root, bench_json, capsys):
    assert tool.main(['update', '--root', root, bench_json, '--command', 'python tools/benchmark/accuracy.py X']) == 0
    printed = capsys.readouterr().out
    assert 'fcos_r18-c32_fpn_aqd-w2a2_synth box AP 40.1 (39.8..40.5, seeds 0,1,2)' in printed
    assert 'skipped aqd-w2a2-pact' in printed and 'boom' in printed
    # three seeds: one entry, the mean, the spread and each seed's AP
    e = entry(root, 'configs/aqd/metafile.yml', 'fcos_r18-c32_fpn_aqd-w2a2_synth')
    ours = result(e, 'ours')
    assert ours['Task'] == 'Object Detection' and ours['Dataset'] == BENCH
    assert ours['Metrics']['box AP'] == 40.1 and ours['Metrics']['box AP50'] == 60.1
    assert (ours['Metrics']['box AP min'], ours['Metrics']['box AP max']) == (39.8, 40.5)
    assert ours['Metrics']['box AP std'] == pytest.approx(0.36, abs=0.005)
    assert all(isinstance(v, (int, float)) for v in ours['Metrics'].values())
    assert ours['Seeds'] == [0, 1, 2] and ours['box AP per seed'] == [39.8, 40.5, 40.0]
    assert ours['Machine'] == MACHINE and ours['Command'] == 'python tools/benchmark/accuracy.py X'
    meta = e['Metadata']
    assert meta['Seed'] == [0, 1, 2] and meta['Weight Bits'] == 2 and meta['Activation Bits'] == 2
    assert meta['Architecture'] == 'FCOS' and meta['Training Data'] == 'generated benchmark (data/synthetic_coco)'
    assert meta['Benchmark Variant'] == 'aqd-w2a2'
    assert meta['First/Last Layer Bits'] == 'FP'  # an existing field, kept
    # one seed
    e = entry(root, 'configs/aqd/metafile.yml', 'fcos_r18-c32_fpn_aqd-w4a4_synth')
    assert result(e, 'ours')['Metrics']['box AP'] == 51.0 and e['Metadata']['Seed'] == 0
    assert 'box AP min' not in result(e, 'ours')['Metrics'] and 'Seeds' not in result(e, 'ours')
    e = entry(root, 'configs/fqn/metafile.yml', 'retinanet_r18-c32_fpn_fqn-w4a4_synth')
    assert result(e, 'ours')['Metrics']['box AP'] == 7.0 and e['Metadata']['Architecture'] == 'RetinaNet'
    assert e['Metadata']['Iterations'] == 350  # kept
    # the failed row wrote nothing
    e = entry(root, 'configs/aqd/metafile.yml', 'fcos_r18-c32_fpn_aqd-w2a2-pact_synth')
    assert result(e, 'ours') is None
    # FP and LIQ rows: metafiles created with their collection
    fcos = load(root, 'configs/fcos/metafile.yml')
    assert fcos['Collections'][0]['Name'] == 'FCOS'
    e = entry(root, 'configs/fcos/metafile.yml', 'fcos_r18-c32_fpn_bn-head_synth')
    assert e['In Collection'] == 'FCOS' and e['Config'] == 'configs/fcos/fcos_r18-c32_fpn_bn-head_synth.py'
    assert e['Metadata']['Weight Bits'] == 32 and result(e, 'ours')['Metrics']['box AP'] == 52.2
    assert load(root, 'configs/liq/metafile.yml')['Collections'][0]['Name'] == 'LIQ'
    e = entry(root, 'configs/liq/metafile.yml', 'fcos_r18-c32_fpn_bn-head_liq-w4a4_synth')
    assert e['In Collection'] == 'LIQ' and result(e, 'ours')['Metrics']['box AP'] == 45.0
    # model-index.yml imports every metafile
    assert load(root, 'model-index.yml') == {'Import': [f'configs/{d}/metafile.yml' for d in
                                                        ('aqd', 'auxi', 'fcos', 'fqn', 'liq', 'retinanet')]}


def test_update_adds_paper_results(tool, root, capsys):
    assert tool.main(['update', '--root', root]) == 0  # no JSON: the paper's AP and model-index.yml only
    e = entry(root, 'configs/aqd/metafile.yml', 'fcos_r18_fpn_aqd-w4a4_90k_coco')
    assert e['Results'] == [{'Task': 'Object Detection', 'Dataset': 'COCO', 'Metrics': {'box AP': 34.9},
                             'Source': 'paper (arXiv 2007.06919v1 Table 1)'}]
    assert result(entry(root, 'configs/aqd/metafile.yml', 'retinanet_r50_fpn_aqd-w2a2_90k_coco'),
                  'paper')['Metrics'] == {'box AP': 35.0}
    assert result(entry(root, 'configs/aqd/metafile.yml', 'fcos_r18_fpn_aqd-w2a2-shared-bn_90k_coco'),
                  'paper')['Source'] == 'paper (arXiv 2007.06919v1 Table 3)'
    assert result(entry(root, 'configs/fqn/metafile.yml', 'retinanet_r18_fpn_fqn-w4a4_80k_coco'),
                  'paper')['Metrics'] == {'box AP': 28.6}
    assert result(entry(root, 'configs/auxi/metafile.yml', 'retinanet_r50_fpn_auxi-w4a4_90k_coco'),
                  'paper')['Metrics'] == {'box AP': 36.1}
    e = entry(root, 'configs/retinanet/metafile.yml', 'retinanet_r34_fpn_bn-head_90k_coco')
    assert result(e, 'paper')['Metrics'] == {'box AP': 36.3} and e['Metadata']['Backbone'] == 'ResNet-34'
    # no paper number: no result
    assert 'Results' not in entry(root, 'configs/aqd/metafile.yml', 'fcos_r50-caffe_fpn_aqd-w4a4_90k_coco')
    assert not osp.exists(osp.join(root, 'configs/liq/metafile.yml'))


def test_existing_entries_kept(tool, root, bench_json):
    # hand-written fields that update would derive otherwise: kept as they are
    aqd = load(root, 'configs/aqd/metafile.yml')
    for m in aqd['Models']:
        if m['Name'] in ('fcos_r18_fpn_aqd-w4a4_90k_coco', 'fcos_r18-c32_fpn_aqd-w2a2_synth'):
            m['Metadata']['Backbone'] = 'ResNet-18 (hand-written)'
    with open(osp.join(root, 'configs/aqd/metafile.yml'), 'w') as f:
        yaml.safe_dump(aqd, f, sort_keys=False)
    before = {d: load(root, f'configs/{d}/metafile.yml') for d in ('aqd', 'fqn', 'auxi')}
    tool.main(['update', '--root', root, bench_json])
    for name in ('fcos_r18_fpn_aqd-w4a4_90k_coco', 'fcos_r18-c32_fpn_aqd-w2a2_synth'):
        assert entry(root, 'configs/aqd/metafile.yml', name)['Metadata']['Backbone'] == 'ResNet-18 (hand-written)'
    for d, old in before.items():
        new = load(root, f'configs/{d}/metafile.yml')
        assert new['Collections'] == old['Collections']
        models = {m['Name']: m for m in new['Models']}
        assert [m['Name'] for m in new['Models']][:len(old['Models'])] == [m['Name'] for m in old['Models']]
        for m in old['Models']:
            got = models[m['Name']]
            assert got['Config'] == m['Config'] and got['In Collection'] == m['In Collection']
            changed = {'Training Data', 'Architecture', 'Weight Bits', 'Activation Bits', 'Seed',
                       'Benchmark Variant'}
            for key, value in m['Metadata'].items():
                if key not in changed:
                    assert got['Metadata'][key] == value, (m['Name'], key)
            if not result(got, 'ours'):  # not a benchmark row of the JSON: its metadata untouched
                assert {k: got['Metadata'][k] for k in m['Metadata']} == m['Metadata']


def test_update_is_idempotent_and_replaces(tool, root, bench_json, tmp_path):
    tool.main(['update', '--root', root, bench_json])
    first = snapshot(root)
    tool.main(['update', '--root', root, bench_json])
    assert snapshot(root) == first
    # a new measurement replaces ours (one result per source and dataset), a failed one keeps it
    newer = write_json(tmp_path / 'newer.json', [
        row('aqd-w4a4', AQD + 'fcos_r18-c32_fpn_aqd-w4a4_synth.py', 4, 50.5, seed=3),
        row('fqn-w4a4-retinanet', 'configs/fqn/retinanet_r18-c32_fpn_fqn-w4a4_synth.py', 4, None, error='x')],
        set='ablations', seeds=[3])
    tool.main(['update', '--root', root, newer])
    e = entry(root, 'configs/aqd/metafile.yml', 'fcos_r18-c32_fpn_aqd-w4a4_synth')
    assert [r['Source'][:5] for r in e['Results']] == ['ours ']
    assert result(e, 'ours')['Metrics']['box AP'] == 50.5 and e['Metadata']['Seed'] == 3
    assert result(e, 'ours')['Command'].startswith('python tools/benchmark/accuracy.py --set ablations --seeds 3 ')
    e = entry(root, 'configs/fqn/metafile.yml', 'retinanet_r18-c32_fpn_fqn-w4a4_synth')
    assert result(e, 'ours')['Metrics']['box AP'] == 7.0
    e = entry(root, 'configs/aqd/metafile.yml', 'fcos_r18_fpn_aqd-w4a4_90k_coco')
    assert len(e['Results']) == 1  # the paper result, not added again


def test_rows_pooled_over_files(tool, root, bench_json, tmp_path):
    """The same config in two files: the seeds pooled, a seed met twice counted once (the later file's), and an
    unseeded row of an older file left out beside seeded rows."""
    old = write_json(tmp_path / 'old.json', [row('aqd-w2a2', W2A2, 2, 30.0, seed='absent')])
    later = write_json(tmp_path / 'later.json', [row('aqd-w2a2', W2A2, 2, 41.0, seed=2),
                                                 row('aqd-w2a2', W2A2, 2, 42.0, seed=5)], seeds=[2, 5])
    tool.main(['update', '--root', root, old, bench_json, later])
    ours = result(entry(root, 'configs/aqd/metafile.yml', 'fcos_r18-c32_fpn_aqd-w2a2_synth'), 'ours')
    assert ours['Seeds'] == [0, 1, 2, 5] and ours['box AP per seed'] == [39.8, 40.5, 41.0, 42.0]
    assert ours['Metrics']['box AP'] == round((39.8 + 40.5 + 41.0 + 42.0) / 4, 2)
    assert isinstance(ours['Command'], list) and len(ours['Command']) == 2  # rebuilt, one per file


def test_rebuilt_command(tool, tmp_path):
    cmd = tool.rebuilt_command(dict(set='ablations', seeds=[0, 1], iters_scale=2.0, work_dir='work_dirs/pipeline',
                                    variants=[]), str(tmp_path / 'out' / 'accuracy.json'), str(tmp_path))
    assert cmd == ('python tools/benchmark/accuracy.py --set ablations --seeds 0 1 --out-dir out --iters-scale 2'
                   '  # rebuilt from accuracy.json')
    old = dict(variants=[row('fp', 'c.py', None, 1.0), row('aqd-w2a2', 'd.py', 2, 1.0)])  # no "set": --variants
    assert tool.rebuilt_command(old, str(tmp_path / 'work_dirs/benchmark_accuracy/accuracy.json'), str(tmp_path)) \
        == 'python tools/benchmark/accuracy.py --variants fp aqd-w2a2  # rebuilt from accuracy.json'


def test_list(tool, root, bench_json, capsys):
    tool.main(['update', '--root', root, bench_json])
    capsys.readouterr()
    assert tool.main(['list', '--root', root]) == 0
    out = capsys.readouterr().out
    line = [ln for ln in out.splitlines() if ln.startswith('fcos_r18-c32_fpn_aqd-w2a2_synth ')]
    assert len(line) == 1 and line[0].split()[1:] == ['AQD', '2/2', 'synthetic', 'COCO', '(generated',
                                                      'benchmark)', '40.1', 'ours']
    line = [ln for ln in out.splitlines() if ln.startswith('fcos_r18_fpn_bn-head_90k_coco ')]
    assert line[0].split()[1:] == ['FCOS', 'FP', 'COCO', '33.9', 'paper']
    assert 'retinanet_r18_fpn_fqn-w4a4_80k_coco' in out and 'fcos_r18-c32_fpn_bn-head_liq-w4a4_synth' in out
    tool.main(['list', '--root', root, '--dataset', 'synthetic', '--method', 'aqd'])
    out = capsys.readouterr().out.splitlines()
    body = out[2:-1]
    assert out[-1] == '2 row(s)' and sorted(ln.split()[0] for ln in body) == [
        'fcos_r18-c32_fpn_aqd-w2a2_synth', 'fcos_r18-c32_fpn_aqd-w4a4_synth']
    tool.main(['list', '--root', root, '--dataset', 'coco'])  # the exact name: not the synthetic one
    out = capsys.readouterr().out.splitlines()
    assert out[-1] == f'{len(tool.PAPER_AP)} row(s)'
    assert all(ln.split()[-3:-2] == ['COCO'] and ln.split()[-1] == 'paper' for ln in out[2:-1])
    tool.main(['list', '--root', root, '--source', 'ours'])
    assert capsys.readouterr().out.splitlines()[-1] == '5 row(s)'


def test_check(tool, root, bench_json, capsys):
    assert tool.main(['check', '--root', root]) == 1  # no model-index.yml yet
    assert 'model-index.yml is missing' in capsys.readouterr().out
    tool.main(['update', '--root', root, bench_json])
    capsys.readouterr()
    assert tool.main(['check', '--root', root]) == 0
    assert 'OK' in capsys.readouterr().out
    # a Config path that does not exist
    shutil.move(osp.join(root, 'configs/auxi/retinanet_r34_fpn_auxi-w4a4_90k_coco.py'), osp.join(root, 'moved.py'))
    assert tool.main(['check', '--root', root]) == 1
    out = capsys.readouterr().out
    assert 'retinanet_r34_fpn_auxi-w4a4_90k_coco: Config configs/auxi/retinanet_r34_fpn_auxi-w4a4_90k_coco.py' in out
    shutil.move(osp.join(root, 'moved.py'), osp.join(root, 'configs/auxi/retinanet_r34_fpn_auxi-w4a4_90k_coco.py'))
    assert tool.main(['check', '--root', root]) == 0
    # a metafile model-index.yml does not import
    os.makedirs(osp.join(root, 'configs', 'extra'))
    with open(osp.join(root, 'configs/extra/metafile.yml'), 'w') as f:
        f.write('Models: []\n')
    capsys.readouterr()
    assert tool.main(['check', '--root', root]) == 1
    assert 'configs/extra/metafile.yml is not imported by model-index.yml' in capsys.readouterr().out


def _readme_paper_ap(readme: str):
    """(config path, paper AP) of every COCO config row of the README's tables with a paper AP column."""
    rows = {}
    header = None
    for line in open(osp.join(ROOT, readme)):
        if not line.startswith('|'):
            header = None
            continue
        cells = [c.strip() for c in line.strip().strip('|').split('|')]
        if header is None:
            header = cells
            continue
        if set(''.join(cells)) <= set(':- '):
            continue
        col = next((i for i, h in enumerate(header) if h in ('AQD paper AP', 'AQD paper FP AP')), None)
        if col is None and readme in ('configs/fqn/README.md', 'configs/auxi/README.md') and 'AP' in header:
            col = header.index('AP')  # the paper's AP (ours is "AP (ours)")
        link = re.search(r'\]\(([^)]+_coco\.py)\)', line)
        if col is None or not link or not re.fullmatch(r'\d+\.\d', cells[col]):
            continue
        config = osp.normpath(osp.join(osp.dirname(readme), link.group(1)))
        rows[config] = float(cells[col])
    return rows


def test_paper_ap_matches_the_readmes(tool):
    readmes = ['configs/aqd/README.md', 'configs/fcos/README.md', 'configs/retinanet/README.md',
               'configs/fqn/README.md', 'configs/auxi/README.md']
    found = {}
    for readme in readmes:
        for config, ap in _readme_paper_ap(readme).items():
            assert found.setdefault(config, ap) == ap, f'{config}: two different paper APs in the READMEs'
    assert len(found) >= 30
    assert {c: ap for c, (ap, _) in tool.PAPER_AP.items()} == found
    assert all(osp.exists(osp.join(ROOT, c)) for c in tool.PAPER_AP)


def test_check_this_repository(tool, capsys):
    """The committed metafiles and model-index.yml (read only): every Config exists, every metafile imported."""
    assert tool.main(['check']) == 0, capsys.readouterr().out
