"""FLOPs and BOPs of quantized configs: tools/analysis/get_flops.py, and mmdet's own get_flops.py, which used to
crash on every quantized config (the first-batch quantizer initialisation ran inside its jit trace)."""
import os.path as osp
import runpy
import sys

import pytest

from conftest import ROOT, load_tool

AQD_SYNTH = osp.join(ROOT, 'configs/aqd/fcos_r18-c32_fpn_aqd-w4a4_synth.py')
MMDET_GET_FLOPS = osp.join(osp.dirname(__import__('mmdet').__file__), '.mim', 'tools', 'analysis_tools',
                           'get_flops.py')


@pytest.fixture(scope='module')
def tool():
    return load_tool('analysis/get_flops.py')


def _data(tiny_coco):
    return [f'val_dataloader.dataset.data_root={tiny_coco}/']


def test_tool_on_the_quantized_benchmark_config(tool, tiny_coco, capsys):
    result = tool.main([AQD_SYNTH, '--num-images', '2', '--show-layers', '--cfg-options'] + _data(tiny_coco))
    out = capsys.readouterr().out
    assert result['num_inputs'] == 2 and result['shapes'][0] == ((128, 128), (192, 192))  # resized to 192, as mmdet
    assert 'Quantizers: 100 of 100 uninitialised data-init quantizer(s) initialised from the first input' in out
    assert 'BOPs:' in out and 'backbone.layer1.0.conv1' in out  # --show-layers
    report = result['first']
    layers = {layer.name: layer for layer in report.layers}
    # by hand, 192x192 input: the FP stem (7x7, stride 2, 3 -> 32 channels, 96x96 out) counts 32 x 32 bits, a 4-bit
    # 3x3 conv of layer1 (32 -> 32 channels at 48x48) 4 x 4
    stem, conv = layers['backbone.conv1'], layers['backbone.layer1.0.conv1']
    assert (stem.macs, stem.weight_bits, stem.act_bits) == (32 * 96 * 96 * 3 * 7 * 7, 32, 32)
    assert stem.bops == stem.macs * 32 * 32
    assert (conv.macs, conv.weight_bits, conv.act_bits, conv.bops) == (32 * 48 * 48 * 32 * 9, 4, 4,
                                                                       32 * 48 * 48 * 32 * 9 * 16)
    # the shared head convs count all five FPN levels; the first layer and the 3 prediction convs are FP
    assert layers['bbox_head.cls_convs.0.conv'].calls == 5
    by_bits = report.by_bits()
    assert set(by_bits) == {(32, 32), (4, 4)} and by_bits[(32, 32)][0] == 4 and by_bits[(4, 4)][0] == 35
    assert result['bops'] == report.bops == sum(layer.macs * layer.weight_bits * layer.act_bits
                                                for layer in report.layers)
    assert result['macs'] <= result['flops'] < 1.01 * result['macs']  # FLOPs add BN / upsampling to the convs
    assert result['fp_bops'] / result['bops'] > 5


def test_tool_without_a_dataset(tool, capsys):
    coco = osp.join(ROOT, 'configs/aqd/fcos_r18_fpn_aqd-w4a4_90k_coco.py')
    with pytest.raises(SystemExit, match='--shape H W'):
        tool.main([coco, '--cfg-options', 'val_dataloader.dataset.data_root=/nonexistent/'])
    result = tool.main([coco, '--shape', '60', '90', '--cfg-options', 'model.bbox_head.num_classes=2'])
    assert result['shapes'] == [((60, 90), (64, 96))]  # padded to the preprocessor's multiple of 32
    by_bits = result['first'].by_bits()
    assert by_bits[(32, 32)][0] == 4 and by_bits[(4, 4)][0] == 35
    with pytest.raises(SystemExit):
        tool.main([coco, '--shape', '1', '2', '3'])


def test_mmdet_get_flops_runs_on_a_quantized_config(tiny_coco, monkeypatch, capsys):
    monkeypatch.setattr(sys, 'argv', [MMDET_GET_FLOPS, AQD_SYNTH, '--num-images', '1', '--cfg-options',
                                      'val_dataloader.num_workers=0', 'val_dataloader.persistent_workers=False']
                        + _data(tiny_coco))
    runpy.run_path(MMDET_GET_FLOPS, run_name='__main__')
    out = capsys.readouterr().out
    assert 'Flops: 0.6' in out and 'Params:' in out
