"""The integer artefact: written by tools/deploy.py, loaded back with torch alone, evaluated by mmdet's Runner as
mmdet's tools/test.py does, and never overwritten without --force."""
import json
import os
import os.path as osp
import subprocess
import sys

import pytest
import torch

from conftest import ROOT, load_tool
from mmaqd.deploy.artefact import CHECKPOINT_NAME, CONFIG_NAME, GRAPH_NAME, load_network, write_network_files
from mmaqd.deploy.converter import convert_detector
from tiny_models import FCOS_F8L8, RETINA_F8L8, tiny_quantized


def _deploy_tool():
    return load_tool('deploy.py')


def _data_options(root: str):
    root = root.rstrip('/') + '/'
    return ['--cfg-options', f'test_dataloader.dataset.data_root={root}',
            f'test_evaluator.ann_file={root}annotations/instances_val.json', 'model.test_cfg.score_thr=0.0',
            'test_dataloader.batch_size=2']


@pytest.fixture(scope='module')
def fcos_checkpoint(tmp_path_factory):
    model, _ = tiny_quantized(FCOS_F8L8)
    path = str(tmp_path_factory.mktemp('ckpt') / 'fcos_f8l8.pth')
    torch.save(dict(state_dict=model.state_dict(), meta={}), path)
    return path


def test_network_round_trip_needs_torch_only(tmp_path):
    model, x = tiny_quantized(FCOS_F8L8)
    conv = convert_detector(model)
    write_network_files(str(tmp_path), conv.network, dict(spec=conv.spec))
    with torch.no_grad():
        expected = conv.network(x)
    loaded = load_network(str(tmp_path))
    with torch.no_grad():
        again = loaded(x)
    for name in expected:
        assert all(torch.equal(a, b) for a, b in zip(expected[name], again[name]))
    # a fresh interpreter where mmdet, mmcv and mmengine cannot be imported runs the artefact
    torch.save(dict(x=x, expected=expected), tmp_path / 'io.pt')
    code = f"""
import sys
for name in ('mmdet', 'mmcv', 'mmengine'):
    sys.modules[name] = None  # import fails, as on a machine without them
import torch
from mmaqd.deploy.artefact import load_network
net = load_network({str(tmp_path)!r})
io = torch.load({str(tmp_path / 'io.pt')!r})
with torch.no_grad():
    out = net(io['x'])
ok = all(torch.equal(a, b) for k in io['expected'] for a, b in zip(io['expected'][k], out[k]))
heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('mmdet', 'mmcv', 'mmengine', 'cv2')
               and sys.modules[m] is not None)
print('OK' if ok and not heavy else f'FAIL equal={{ok}} loaded={{heavy}}')
"""
    result = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.stdout.strip().endswith('OK'), result.stdout + result.stderr


def test_deploy_tool_writes_an_artefact_that_mmdet_evaluates(fcos_checkpoint, tiny_coco, tmp_path):
    from mmengine.config import Config
    from mmengine.runner import Runner
    tool = _deploy_tool()
    out = str(tmp_path / 'int')
    assert tool.main([osp.join(ROOT, FCOS_F8L8), fcos_checkpoint, '--out', out] + _data_options(tiny_coco)) == 0
    assert sorted(os.listdir(out)) == sorted([CONFIG_NAME, CHECKPOINT_NAME, GRAPH_NAME])
    with open(osp.join(out, GRAPH_NAME)) as f:
        graph = json.load(f)
    assert graph['kind'] == 'fcos' and graph['float_islands'] == []
    sizes = graph['sizes']
    assert sizes['artefact_bytes'] == os.path.getsize(osp.join(out, CHECKPOINT_NAME))
    assert sizes['artefact_bytes'] * 4 < sizes['fp32_weights_bytes']  # 4-bit codes + tables, vs FP32
    state = torch.load(osp.join(out, CHECKPOINT_NAME), weights_only=True)['state_dict']
    assert all(k.startswith('net.') for k in state)
    assert not any(v.is_floating_point() and v.numel() > 1000 for v in state.values())  # no float weights
    # what mmdet's tools/test.py does with DIR/integer_model.py and DIR/integer_model.pth
    cfg = Config.fromfile(osp.join(out, CONFIG_NAME))
    assert cfg.model.type == 'IntegerFCOS'
    cfg.work_dir = str(tmp_path / 'work')
    cfg.load_from = osp.join(out, CHECKPOINT_NAME)
    cfg.test_dataloader.update(num_workers=0, persistent_workers=False)
    metrics = Runner.from_cfg(cfg).test()
    assert 'coco/bbox_mAP' in metrics and metrics['coco/bbox_mAP'] >= 0


def test_verify_prints_agreement_and_both_aps(fcos_checkpoint, tiny_coco, tmp_path, capsys):
    tool = _deploy_tool()
    out = str(tmp_path / 'int')
    argv = [osp.join(ROOT, FCOS_F8L8), fcos_checkpoint, '--out', out, '--verify', '--num-images', '2']
    assert tool.main(argv + _data_options(tiny_coco)) == 0
    printed = capsys.readouterr().out
    assert 'Each integer op fed the float32 fake-quantized model' in printed and 'integer - fake =' in printed
    with open(osp.join(out, 'verify.json')) as f:
        result = json.load(f)
    assert result['agreement']['images'] == 2
    for table in ('per_op', 'end_to_end_exact'):
        rows = result['agreement'][table]
        assert rows['lowest_within_one_pct'] == 100.0 and rows['lowest_equal_pct'] >= 99.5, table
    assert set(result['fake_ap']) == set(result['integer_ap']) >= {'AP', 'AP50'}
    # the main job's summary row reads this file
    pipeline = load_tool('pipeline.py')
    row = pipeline.deploy_table([dict(stage='s', fp_ap=1.5, **result)]).splitlines()[-1]
    assert row.startswith('| s | 1.5 | ') and f"{result['agreement']['per_op']['lowest_equal_pct']:.3f}" in row


def test_existing_artefact_is_not_overwritten_without_force(fcos_checkpoint, tiny_coco, tmp_path, capsys):
    tool = _deploy_tool()
    out = tmp_path / 'int'
    out.mkdir()
    (out / CHECKPOINT_NAME).write_bytes(b'user data')
    argv = [osp.join(ROOT, FCOS_F8L8), fcos_checkpoint, '--out', str(out)] + _data_options(tiny_coco)
    assert tool.main(argv) == 2
    assert 'pass --force' in capsys.readouterr().err
    assert (out / CHECKPOINT_NAME).read_bytes() == b'user data'
    assert tool.main(argv + ['--force']) == 0
    assert (out / CHECKPOINT_NAME).read_bytes() != b'user data'


def test_checkpoint_of_another_config_is_refused(fcos_checkpoint, tmp_path, capsys):
    tool = _deploy_tool()
    assert tool.main([osp.join(ROOT, RETINA_F8L8), fcos_checkpoint, '--out', str(tmp_path / 'x')]) == 2
    err = capsys.readouterr().err
    assert 'does not fit' in err and 'another config' in err
    assert not (tmp_path / 'x').exists()


def test_full_precision_checkpoint_is_refused_by_layer(tmp_path, capsys):
    fp, _ = tiny_quantized('configs/fcos/fcos_r18-c32_fpn_bn-head_synth.py')
    path = str(tmp_path / 'fp.pth')
    torch.save(dict(state_dict=fp.state_dict()), path)
    tool = _deploy_tool()
    # an FP checkpoint into the quantized config: its quantizers were never trained
    assert tool.main([osp.join(ROOT, FCOS_F8L8), path, '--out', str(tmp_path / 'a')]) == 2
    assert 'backbone.conv1.act_quantizer' in capsys.readouterr().err
    # the FP config itself has no integer form
    assert tool.main([osp.join(ROOT, 'configs/fcos/fcos_r18-c32_fpn_bn-head_synth.py'), path, '--out',
                      str(tmp_path / 'b')]) == 2
    assert 'no quantizers' in capsys.readouterr().err
