"""tools/analysis/plot_accuracy.py: AP against bit width from accuracy.json files (series numbers and the PNG)."""
import json

import pytest

from conftest import load_tool

AQD = 'configs/aqd/'
FP_FCOS = 'configs/fcos/fcos_r18-c32_fpn_bn-head_synth.py'
FP_RETINA = 'configs/retinanet/retinanet_r18-c32_fpn_bn-head_synth.py'


@pytest.fixture(scope='module')
def tool():
    return load_tool('analysis/plot_accuracy.py')


def row(name, config, bits, ap, seed=0, error=None, **extra):
    """One row as tools/benchmark/accuracy.py writes it."""
    metrics = None if ap is None else dict(AP=ap, AP50=ap + 20, AP75=ap + 1, APs=ap - 10, APm=ap + 3, APl=ap + 15)
    r = dict(name=name, config=config, fp=None if bits is None else 'fp', bits=bits, metrics=metrics, error=error,
             gap=None, targets=[], seed=seed, trained=True, train_seconds=1.0, seconds=2.0, checkpoint='x.pth')
    r.update(extra)
    if seed == 'absent':
        del r['seed']
    return r


def write_json(path, rows, **top):
    data = dict(machine=dict(platform='Linux-test', cpu_count=2, torch='2.13.0+cpu'), work_dir='w',
                total_seconds=1.0, variants=rows)
    data.update(top)
    path.write_text(json.dumps(data))
    return str(path)


@pytest.fixture
def bench_json(tmp_path):
    rows = [row('fp', FP_FCOS, None, 52.2),
            row('aqd-w4a4', AQD + 'fcos_r18-c32_fpn_aqd-w4a4_synth.py', 4, 51.0),
            row('aqd-w2a2', AQD + 'fcos_r18-c32_fpn_aqd-w2a2_synth.py', 2, 39.8, seed=0),
            row('aqd-w2a2', AQD + 'fcos_r18-c32_fpn_aqd-w2a2_synth.py', 2, 40.5, seed=1),
            row('aqd-w2a2', AQD + 'fcos_r18-c32_fpn_aqd-w2a2_synth.py', 2, 40.0, seed=2),
            row('aqd-w2a2-shared-bn', AQD + 'ablations/fcos_r18-c32_fpn_aqd-w2a2-shared-bn_synth.py', 2, 35.0),
            row('aqd-w2a2-pact', AQD + 'ablations/fcos_r18-c32_fpn_aqd-w2a2-pact_synth.py', 2, None,
                error='RuntimeError: boom'),
            row('aqd-w2a2-lsq', AQD + 'ablations/fcos_r18-c32_fpn_aqd-w2a2-lsq_synth.py', 2, None),
            row('fp-retinanet', FP_RETINA, None, 46.8),
            row('aqd-w4a4-retinanet', AQD + 'retinanet_r18-c32_fpn_aqd-w4a4_synth.py', 4, 46.6),
            row('auxi-w4a4-retinanet', 'configs/auxi/retinanet_r18-c32_fpn_auxi-w4a4_synth.py', 4, 39.9),
            row('fqn-w4a4-retinanet', 'configs/fqn/retinanet_r18-c32_fpn_fqn-w4a4_synth.py', 4, 7.0),
            row('mystery-w3a3', 'configs/aqd/fcos_r18-c32_fpn_mystery_synth.py', 3, 20.0)]
    return write_json(tmp_path / 'accuracy.json', rows, set='default')


@pytest.mark.parametrize('name,config,method,detector,bits', [
    ('fp', FP_FCOS, 'FP', 'FCOS', None),
    ('fp-retinanet', FP_RETINA, 'FP', 'RetinaNet', None),
    ('aqd-w3a3', None, 'AQD', 'FCOS', 3),
    ('aqd-w2a2-retinanet', None, 'AQD', 'RetinaNet', 2),
    ('aqd-w2a2-shared-bn', None, 'AQD, shared BN', 'FCOS', 2),
    ('aqd-w2a2-lsqplus', None, 'LSQ+', 'FCOS', 2),
    ('aqd-w2a2-lsq', None, 'LSQ', 'FCOS', 2),
    ('aqd-w2a2-lqnet', None, 'LQ-Nets', 'FCOS', 2),
    ('aqd-w2a2-backbone-fpn', None, 'AQD, backbone + FPN quantized', 'FCOS', 2),
    ('aqd-w2a2-add8', None, 'AQD, adds at 8 bits', 'FCOS', 2),
    ('aqd-w2a2-addfp', None, "AQD, adds FP (authors' code)", 'FCOS', 2),
    ('aqd-w4a4-neck2', None, 'AQD, the neck at 2 bits', 'FCOS', 4),
    ('aqd-w4a4-f8l8-zl', None, 'AQD, F8L8, zero level', 'FCOS', 4),
    ('aqd-w4a4-f8l8-retinanet', None, 'AQD, F8L8', 'RetinaNet', 4),
    ('auxi-w4a4-retinanet', None, 'Auxi', 'RetinaNet', 4),
    ('fqn-w4a4-retinanet', None, 'FQN', 'RetinaNet', 4),
    ('fqn-w4a4-f0p1c0-retinanet', None, 'FQN f0p1c0', 'RetinaNet', 4),
    ('fqn-w4a4-out8-retinanet', None, 'FQN, 8-bit outputs', 'RetinaNet', 4),
    ('liq-w4a4', 'configs/liq/fcos_r18-c32_fpn_bn-head_liq-w4a4_synth.py', 'LIQ, fully quantized', 'FCOS', 4),
    # unknown names: a method of their own, detector from the config, bits from the row
    ('something-new', 'configs/yolo/yolox_s_synth.py', 'something-new', 'yolox', 3),
    ('', None, '', 'FCOS', 3),
])
def test_describe(tool, name, config, method, detector, bits):
    info = tool.describe(name, config, bits=3 if method not in ('FP',) else None)
    assert (info.method, info.detector, info.weight_bits) == (method, detector, bits)


def test_series_numbers(tool, bench_json):
    notes = []
    panels = tool.series(tool.load_rows([bench_json]), log=notes.append)
    assert list(panels) == ['FCOS', 'RetinaNet']
    fcos = panels['FCOS']
    assert fcos.fp.mean == 52.2 and fcos.fp.aps == [52.2]
    aqd = fcos.methods['AQD']
    assert [p.bits for p in aqd] == [2, 4]
    two = aqd[0]
    assert (two.mean, two.min, two.max) == (40.1, 39.8, 40.5)
    assert two.seeds == [0, 1, 2] and two.aps == [39.8, 40.5, 40.0]
    assert aqd[1].mean == 51.0 and aqd[1].min == aqd[1].max == 51.0
    assert [(p.bits, p.mean) for p in fcos.methods['AQD, shared BN']] == [(2, 35.0)]
    assert [(p.bits, p.mean) for p in fcos.methods['mystery-w3a3']] == [(3, 20.0)]
    # the failed and the metric-less rows are left out, with a note each
    assert 'PACT' not in fcos.methods and 'LSQ' not in fcos.methods
    assert any('aqd-w2a2-pact' in n and 'boom' in n for n in notes)
    assert any('aqd-w2a2-lsq' in n and 'no metrics' in n for n in notes)
    retina = panels['RetinaNet']
    assert retina.fp.mean == 46.8
    assert {m: [(p.bits, p.mean) for p in pts] for m, pts in retina.methods.items()} == {
        'AQD': [(4, 46.6)], 'FQN': [(4, 7.0)], 'Auxi': [(4, 39.9)]}
    assert list(retina.methods) == ['AQD', 'FQN', 'Auxi']  # METHOD_ORDER
    assert tool._seed_text(aqd) == ', seeds 0,1,2' and tool._seed_text(retina.methods['AQD']) == ''


def test_rows_of_several_files(tool, bench_json, tmp_path):
    """A variant and seed in two files counts once (the later file's); an unseeded row (older file) is left out
    beside seeded ones, kept when it is the only row."""
    cfg = AQD + 'fcos_r18-c32_fpn_aqd-w2a2_synth.py'
    later = write_json(tmp_path / 'later.json', [row('aqd-w2a2', cfg, 2, 41.0, seed=2)], set='ablations')
    w3a3 = AQD + 'fcos_r18-c32_fpn_aqd-w3a3_synth.py'
    old = write_json(tmp_path / 'old.json', [row('aqd-w2a2', cfg, 2, 30.0, seed='absent'),
                                             row('aqd-w3a3', w3a3, 3, 49.5, seed='absent')])
    notes = []
    rows = tool.load_rows([old, bench_json, later], log=notes.append)
    panels = tool.series(rows, log=notes.append)
    aqd = {p.bits: p for p in panels['FCOS'].methods['AQD']}
    assert aqd[2].aps == [39.8, 40.5, 41.0] and aqd[2].seeds == [0, 1, 2]
    assert (aqd[2].min, aqd[2].max) == (39.8, 41.0) and aqd[2].mean == round((39.8 + 40.5 + 41.0) / 3, 2)
    assert aqd[3].aps == [49.5] and aqd[3].seeds == [None]
    assert any('replaced' in n for n in notes) and any('without a seed' in n for n in notes)
    assert 'set ablations' in tool.caption_text(rows, [old, bench_json, later])


def assert_png(path):
    with open(path, 'rb') as f:
        data = f.read()
    assert data[:8] == b'\x89PNG\r\n\x1a\n' and len(data) > 10_000
    return data


def test_main_writes_png_and_refuses_to_overwrite(tool, bench_json, tmp_path, capsys):
    out = str(tmp_path / 'figs' / 'accuracy_vs_bits.png')
    assert tool.main([bench_json, '--out', out, '--title', 'test']) == out
    printed = capsys.readouterr().out
    assert f'wrote {out}' in printed and 'skipped aqd-w2a2-pact' in printed
    assert 'AQD: 2b 40.1 (39.8..40.5, seeds 0,1,2), 4b 51.0' in printed
    before = assert_png(out)
    with pytest.raises(SystemExit, match='--force'):
        tool.main([bench_json, '--out', out])
    assert open(out, 'rb').read() == before
    w4a4 = AQD + 'fcos_r18-c32_fpn_aqd-w4a4_synth.py'
    one_seed = write_json(tmp_path / 'b.json', [row('fp', FP_FCOS, None, 50.0), row('aqd-w4a4', w4a4, 4, 49.0)])
    tool.main([one_seed, '--out', out, '--force'])
    assert assert_png(out) != before


def test_main_missing_file(tool, tmp_path):
    with pytest.raises(SystemExit, match='no such file'):
        tool.main([str(tmp_path / 'nope.json'), '--out', str(tmp_path / 'a.png')])
    assert not (tmp_path / 'a.png').exists()


def test_main_excludes_variants_by_pattern(tool, tmp_path, capsys):
    w4a4 = AQD + 'fcos_r18-c32_fpn_aqd-w4a4_synth.py'
    sens = AQD + 'ablations/fcos_r18-c32_fpn_aqd-w4a4-neck2_synth.py'
    rows = [row('fp', FP_FCOS, None, 50.0), row('aqd-w4a4', w4a4, 4, 49.0), row('aqd-w4a4-neck2', sens, 4, 45.0)]
    path = write_json(tmp_path / 'c.json', rows)
    tool.main([path, '--out', str(tmp_path / 'all.png')])
    assert 'AQD, the neck at 2 bits: 4b 45.0' in capsys.readouterr().out
    tool.main([path, '--out', str(tmp_path / 'some.png'), '--exclude', 'aqd-w4a4-*2'])
    printed = capsys.readouterr().out
    assert 'neck at 2 bits' not in printed and 'AQD: 4b 49.0' in printed
