"""The ONNX export on small randomly initialised quantized detectors: the checker, ONNX Runtime's integer kernels,
each op's values against the exact reference (teacher forcing), the head outputs against the integer network,
the weight forms (exact on zero-level grids, reported approximate on LIQ's default grid), and the deploy tool's
``--format onnx`` round trip through mmdet."""
import json
import os.path as osp

import numpy as np
import pytest
import torch

pytest.importorskip('onnx')
pytest.importorskip('onnxruntime')

from conftest import ROOT, load_tool  # noqa: E402
from mmaqd.deploy.converter import convert_detector  # noqa: E402
from mmaqd.deploy.grids import weight_grid  # noqa: E402
from mmaqd.deploy.onnx_export import export_onnx, onnx_weight  # noqa: E402
from mmaqd.deploy.onnx_runtime import (grouped_outputs, head_outputs, kernel_counts, onnx_agreement,  # noqa: E402
                                       ort_session, output_layout, output_units, teacher_feeds)
from mmaqd.deploy.verify import exact_reference, fake_values, summarize, value_step  # noqa: E402
from tiny_models import FCOS_F8L8, FCOS_F8L8_ZL, RETINA_F8L8, tiny_quantized  # noqa: E402

ZERO_LEVEL = {'model.quant_cfg.weight_quant.zero_level': True, 'model.quant_cfg.input_quant.zero_level': True}


def _converted(config, cfg_options=None):
    model, x = tiny_quantized(config, cfg_options=cfg_options)
    return model, x, convert_detector(model)


def _teacher_rows(model, exported, session, x, ref):
    """Agreement rows of ONNX Runtime fed the reference's values of every op's inputs."""
    results = head_outputs(session, x, teacher_feeds(exported, ref))
    rows, _ = summarize(onnx_agreement(exported, results, ref, step_of=lambda p: value_step(model, p)))
    return rows


def _per_op_rows(model, x, conv):
    ref = fake_values(exact_reference(model), conv.network, x.double())
    exported = export_onnx(conv, probes='teacher')
    assert set(exported.probes) == set(conv.network.probes) == set(exported.feeds)
    rows = _teacher_rows(model, exported, ort_session(exported.model), x, ref)
    assert {r[0] for r in rows} == {p.rsplit('#', 1)[0] for p in conv.network.probes}
    return rows, exported


@pytest.mark.parametrize('config', [FCOS_F8L8_ZL, RETINA_F8L8])
def test_each_op_in_onnx_runtime_matches_the_exact_reference_on_zero_level_grids(config):
    """Every quantized tensor of the ONNX model, each op fed the exact reference's inputs: within one step
    everywhere and almost always equal (ONNX Runtime requantizes in float32 and rounds the bias to int32)."""
    model, x, conv = _converted(config, ZERO_LEVEL)
    rows, exported = _per_op_rows(model, x, conv)
    assert all(r['exact'] for r in exported.report)
    for name, n, equal, within, worst in rows:
        assert within == 100.0 and worst <= 1, (name, within)
        assert equal >= 99.5, (name, equal)


def test_default_grid_exports_approximately_and_says_so():
    """LIQ's default grid: the weight-normalization offset (and the 8-bit layers' odd grid) is rounded into int8,
    every conv is reported approximate, and each op stays within a few steps of the exact reference."""
    model, x, conv = _converted(FCOS_F8L8)
    rows, exported = _per_op_rows(model, x, conv)
    convs = [r for r in exported.report if r['kind'] == 'conv']
    assert convs and not any(r['exact'] for r in convs) and all(0 < r['weight_error_steps'] <= 0.51 for r in convs)
    assert exported.summary()['add']['exact'] == 10  # adds and rescales are exact (float adds on odd grids)
    for name, n, equal, within, worst in rows:
        assert within >= 90.0 and worst <= 4, (name, within, worst)


def test_zero_level_fcos_runs_every_hidden_conv_as_an_integer_kernel(tmp_path):
    model, x, conv = _converted(FCOS_F8L8_ZL)
    exported = export_onnx(conv)
    assert all(r['exact'] for r in exported.report)
    assert exported.summary()['conv'] == dict(layers=39, exact=39)
    optimized = str(tmp_path / 'opt.onnx')
    ort_session(exported.model, optimized_path=optimized)
    kernels = kernel_counts(optimized)
    # one ONNX conv per conv call and consumer grid (a conv feeding two quantizers is requantized twice)
    calls = sum(len(conv.real[n['layer']]['outputs']) for n in conv.spec['nodes'] if n['op'] == 'layer'
                and 'w_grid' in conv.real.get(n['layer'], {}))
    assert kernels['integer'] + kernels['float'] == calls
    assert kernels['float'] == 15  # the prediction convs (3 per level, float outputs)
    assert kernels['ops']['QLinearAdd'] == 10  # 8 residual adds and 2 FPN adds


@pytest.mark.parametrize('config', [FCOS_F8L8_ZL, RETINA_F8L8])
def test_head_outputs_match_the_integer_network_within_a_step(config):
    """Both fed the same (integer network's) quantized inputs: the prediction convs' real outputs differ by at most
    one unit of their integer product (ONNX Runtime's int32 bias) plus float32 rounding, FCOS's Scale folded in
    both."""
    model, x, conv = _converted(config, ZERO_LEVEL)
    net = conv.network
    exported = export_onnx(conv, probes='teacher')
    session = ort_session(exported.model)
    ints = net(x, keep=list(net.probes.values()))
    values = {p: ints['_kept'][t] for p, t in net.probes.items()}
    theirs = grouped_outputs(head_outputs(session, x, teacher_feeds(exported, values)), output_layout(session))
    units = output_units(net)
    ours = net.dequantize(ints)
    assert list(theirs) == net.output_names
    for name in net.output_names:
        for lv, (a, b) in enumerate(zip(ours[name], theirs[name])):
            assert a.shape == b.shape
            # one unit of the integer product (the int32 bias' rounding) plus float32's rounding of the sum
            tol = units[name][lv].view(1, -1, 1, 1).float() + 1e-6 * float(a.abs().max())
            assert bool(((a - b).abs() <= tol).all()), (name, lv, float(((a - b).abs() / tol).max()))


def test_weights_are_exact_on_zero_level_grids_and_rounded_on_the_default_grid():
    model, _ = tiny_quantized(FCOS_F8L8_ZL)
    conv = model.backbone.layer1[0].conv1
    g = weight_grid('c', conv)
    w_int, scale, err = onnx_weight(g)
    real = g.scale.view(-1, 1) * ((2 * g.codes - g.levels).double() + g.offset.view(-1, 1))
    assert err == 0 and np.abs(w_int).max() <= 127
    assert torch.allclose(torch.from_numpy(scale).view(-1, 1) * torch.from_numpy(w_int).double(), real, rtol=1e-12,
                          atol=0)
    assert np.abs(w_int).max() == 18 * 7  # 4-bit: j in -7..7 scaled by r = 18 (finer int32 bias)
    model, _ = tiny_quantized(FCOS_F8L8)
    g = weight_grid('c', model.backbone.layer1[0].conv1)
    w_int, scale, err = onnx_weight(g)
    real = g.scale.view(-1, 1) * ((2 * g.codes - g.levels).double() + g.offset.view(-1, 1))
    got = torch.from_numpy(scale).view(-1, 1) * torch.from_numpy(w_int).double()
    assert 0 < err < 0.1  # the mean offset, rounded at 1 / r of a weight step
    assert float(((got - real).abs() / (2 * g.scale.view(-1, 1))).max()) == pytest.approx(err, rel=1e-9)


def test_int4_weights_are_exact_but_leave_onnx_runtime_in_float(tmp_path):
    """INT4 initializers hold the 4-bit zero-level weights exactly (each op still within a step of the exact
    reference); ONNX Runtime's CPU provider reads them but fuses only the 8-bit layers into integer kernels."""
    import onnx
    model, x, conv = _converted(FCOS_F8L8_ZL)
    exported = export_onnx(conv, probes='teacher', int4_weights=True)
    int4 = [t for t in exported.model.graph.initializer if t.data_type == onnx.TensorProto.INT4 and len(t.dims) == 4]
    int8 = [t for t in exported.model.graph.initializer if t.data_type == onnx.TensorProto.INT8 and len(t.dims) == 4]
    assert len(int4) >= 30 and len(int8) <= 4  # the 36 4-bit convs (identical arrays shared) vs the 4 8-bit ones
    ref = fake_values(exact_reference(model), conv.network, x.double())
    optimized = str(tmp_path / 'opt.onnx')
    rows = _teacher_rows(model, exported, ort_session(exported.model, optimized_path=optimized), x, ref)
    assert all(within == 100.0 for _, _, _, within, _ in rows)
    assert kernel_counts(optimized)['integer'] < 10


def test_probes_mode_is_validated():
    _, _, conv = _converted(FCOS_F8L8_ZL)
    with pytest.raises(ValueError, match="probes='all'.*allowed"):
        export_onnx(conv, probes='all')


def _deploy_tool():
    return load_tool('deploy.py')


def test_deploy_tool_format_onnx_writes_a_model_that_mmdet_evaluates(tiny_coco, tmp_path, capsys):
    model, _ = tiny_quantized(FCOS_F8L8_ZL)
    ckpt = str(tmp_path / 'zl.pth')
    torch.save(dict(state_dict=model.state_dict(), meta={}), ckpt)
    out = str(tmp_path / 'onnx')
    root = tiny_coco.rstrip('/') + '/'
    argv = [osp.join(ROOT, FCOS_F8L8_ZL), ckpt, '--out', out, '--format', 'onnx', '--verify', '--num-images', '2',
            '--cfg-options', f'test_dataloader.dataset.data_root={root}',
            f'test_evaluator.ann_file={root}annotations/instances_val.json', 'model.test_cfg.score_thr=0.0',
            'test_dataloader.batch_size=2']
    assert _deploy_tool().main(argv) == 0
    printed = capsys.readouterr().out
    assert 'ONNX Runtime vs the exact reference' in printed and 'ONNX Runtime - integer =' in printed
    with open(osp.join(out, 'onnx_report.json')) as f:
        report = json.load(f)
    assert report['kernels']['integer'] == 82 and report['summary']['conv']['exact'] == 39
    with open(osp.join(out, 'verify.json')) as f:
        result = json.load(f)['onnx']
    assert result['per_op']['lowest_within_one_pct'] == 100.0
    assert set(result['ap']) >= {'AP', 'AP50'} and 'ap_gap_to_integer' in result
    from mmengine.config import Config
    assert Config.fromfile(osp.join(out, 'onnx_model.py')).model.type == 'OnnxFCOS'
