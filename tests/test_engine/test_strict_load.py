"""Strict checkpoint loading (mmaqd.engine.strict_load, StrictLoadHook): a load_from that leaves model keys unloaded,
or a file that is not a checkpoint, stops the run with the keys or the file named; load_from_strict=False opts out."""
import glob
import os.path as osp
import pickle
from types import SimpleNamespace

import pytest
import torch
from mmengine.config import Config
from mmengine.runner import Runner
from mmengine.runner.checkpoint import load_state_dict

from conftest import ROOT, build_cpu_model
from mmaqd.engine.hooks.strict_load_hook import checkpoint_to_load
from mmaqd.engine.strict_load import CheckpointFileError, CheckpointMismatchError, check_checkpoint_file, record_load

FP_FCOS = 'configs/fcos/fcos_r18-c32_fpn_bn-head_synth.py'
FP_RETINA = 'configs/retinanet/retinanet_r18-c32_fpn_bn-head_synth.py'
AQD_FCOS = 'configs/aqd/fcos_r18-c32_fpn_aqd-w4a4_synth.py'


def _save(model_or_state, path):
    state = model_or_state.state_dict() if isinstance(model_or_state, torch.nn.Module) else model_or_state
    torch.save(dict(state_dict=state, meta=dict()), path)
    return str(path)


def _runner(runner_cfg_builder, tiny_coco, tmp_path, load_from, **options):
    cfg = runner_cfg_builder(AQD_FCOS, tiny_coco, str(tmp_path / 'work'), max_iters=1)
    cfg.load_from = load_from
    cfg.merge_from_dict(options)
    return Runner.from_cfg(cfg)


def _log_text(runner):
    with open(osp.join(runner.log_dir, f'{runner.timestamp}.log')) as f:
        return f.read()


def _report(model, state):
    reports = []
    record_load(model, reports.append)
    load_state_dict(model, state)
    assert len(reports) == 1
    return reports[0]


# ------------------------------------------------------------------------------------------------ the keys
def test_retinanet_checkpoint_into_aqd_fcos_stops_the_run(tiny_coco, tmp_path, runner_cfg_builder):
    ckpt = _save(build_cpu_model(FP_RETINA), tmp_path / 'retinanet.pth')
    runner = _runner(runner_cfg_builder, tiny_coco, tmp_path, ckpt)
    with pytest.raises(CheckpointMismatchError) as info:
        runner.train()
    msg = str(info.value)
    assert ckpt in msg and 'QFCOS' in msg
    # the FPN conv of another shape, the prediction convs missing, RetinaNet's own convs unexpected
    assert 'neck.fpn_convs.3.conv.weight: checkpoint (64, 256, 3, 3), model (64, 64, 3, 3)' in msg
    for key in ('bbox_head.conv_cls.weight', 'bbox_head.conv_centerness.bias', 'bbox_head.retina_cls.weight'):
        assert key in msg
    assert 'load_from_strict=False' in msg  # the way out
    assert runner.iter == 0 and not glob.glob(str(tmp_path / 'work' / '*.pth'))
    assert 'neck.fpn_convs.3.conv.weight' in _log_text(runner)  # in the work-dir log, not only on stdout


def test_opt_out_loads_what_matches_and_logs_the_rest(tiny_coco, tmp_path, runner_cfg_builder):
    fp = build_cpu_model(FP_RETINA)
    runner = _runner(runner_cfg_builder, tiny_coco, tmp_path, _save(fp, tmp_path / 'retinanet.pth'),
                     load_from_strict=False)
    runner.call_hook('before_run')
    runner.load_or_resume()  # what train() does before the first iteration
    assert torch.equal(runner.model.backbone.layer1[0].conv1.weight, fp.backbone.layer1[0].conv1.weight)
    log = _log_text(runner)
    assert 'partial load (load_from_strict=False)' in log and 'bbox_head.conv_centerness.weight' in log


def test_bad_opt_out_value(tiny_coco, tmp_path, runner_cfg_builder):
    runner = _runner(runner_cfg_builder, tiny_coco, tmp_path, None, load_from_strict='no')
    with pytest.raises(ValueError, match="load_from_strict='no' is invalid"):
        runner.call_hook('before_run')


def test_fp_checkpoint_into_quantized_model_is_not_a_mismatch():
    """Quantizer state, absent from an FP checkpoint, is expected; part of it missing is a mismatch."""
    fp, q = build_cpu_model(FP_FCOS), build_cpu_model(AQD_FCOS)
    assert _report(q, fp.state_dict()).ok
    state = q.state_dict()
    del state['backbone.layer1.0.conv1.act_quantizer.alpha']
    report = _report(q, state)
    assert report.missing == ['backbone.layer1.0.conv1.act_quantizer.alpha']
    assert not (report.unexpected or report.mismatched or report.errors)


SYNTH_QUANTIZED = sorted(p for p in glob.glob(osp.join(ROOT, 'configs', '**', '*_synth.py'), recursive=True)
                         if Config.fromfile(p).get('load_from'))


@pytest.mark.parametrize('config', SYNTH_QUANTIZED, ids=[osp.relpath(p, ROOT) for p in SYNTH_QUANTIZED])
def test_every_quantized_config_loads_its_fp_checkpoint_strictly(config):
    """Strict loading is the default: every fine-tune config must load its FP detector's weights exactly."""
    cfg = Config.fromfile(config)
    assert cfg.load_from_strict is True and cfg.default_hooks.strict_load.type == 'StrictLoadHook'
    fp = FP_FCOS if 'FCOS' in cfg.model.type else FP_RETINA
    report = _report(build_cpu_model(cfg), build_cpu_model(fp).state_dict())
    assert report.ok, report.describe()


# ------------------------------------------------------------------------------------------------ the file
@pytest.fixture
def bad_files(tmp_path):
    good = _save({'w': torch.zeros(3)}, tmp_path / 'good.pth')
    data = open(good, 'rb').read()
    files = {}
    files['truncated'] = tmp_path / 'truncated.pth'
    files['truncated'].write_bytes(data[:len(data) // 2])
    files['text'] = tmp_path / 'notes.pth'
    files['text'].write_text('not a checkpoint')
    files['empty'] = tmp_path / 'empty.pth'
    files['empty'].write_bytes(b'')
    files['code'] = tmp_path / 'code.pth'
    files['code'].write_bytes(pickle.dumps(osp.join))  # a pickle that names a function: not data
    files['tensor'] = tmp_path / 'tensor.pth'
    torch.save(torch.zeros(2), files['tensor'])
    return good, {k: str(v) for k, v in files.items()}


def test_unreadable_checkpoint_files_are_named(bad_files):
    good, files = bad_files
    check_checkpoint_file(good)
    for kind, path in files.items():
        with pytest.raises(CheckpointFileError) as info:
            check_checkpoint_file(path)
        msg = str(info.value)
        assert path in msg, kind
        assert 'weights_only' not in msg, (kind, msg)  # never advise unpickling code
    with pytest.raises(CheckpointFileError, match='no such file'):
        check_checkpoint_file(good + '.missing')


def test_truncated_load_from_stops_before_training(bad_files, tiny_coco, tmp_path, runner_cfg_builder):
    path = bad_files[1]['truncated']
    runner = _runner(runner_cfg_builder, tiny_coco, tmp_path, path)
    with pytest.raises(CheckpointFileError, match='truncated') as info:
        runner.train()
    assert f'load_from = {path}' in str(info.value) and 'weights_only' not in str(info.value)


def test_resume_checks_the_latest_checkpoint(tmp_path):
    ckpt = _save({'w': torch.zeros(1)}, tmp_path / 'iter_4.pth')
    (tmp_path / 'last_checkpoint').write_text(ckpt)
    runner = SimpleNamespace(_load_from=None, _resume=True, work_dir=str(tmp_path))
    assert checkpoint_to_load(runner) == ckpt
    assert checkpoint_to_load(SimpleNamespace(_load_from='x.pth', _resume=False, work_dir='')) == 'x.pth'
