"""tools/model_converters/mmdet_to_aqd.py on (fake) model-zoo checkpoints: a checkpoint whose backbone style or
input normalization differs from the target config is refused, naming both sides; the shipped caffe-style AQD
config takes the zoo's caffe FCOS R50 and computes its backbone and FPN exactly."""
import os.path as osp

import pytest
import torch
from mmengine.config import Config

from conftest import ROOT, build_cpu_model, load_tool
from mmaqd.quantization import quantization_disabled

MMDET_FCOS = osp.join(osp.dirname(__import__('mmdet').__file__), '.mim', 'configs', 'fcos')
ZOO = osp.join(MMDET_FCOS, 'fcos_r50-caffe_fpn_gn-head_1x_coco.py')
AQD_R50 = osp.join(ROOT, 'configs/aqd/fcos_r50_fpn_aqd-w4a4_90k_coco.py')
AQD_R50_CAFFE = osp.join(ROOT, 'configs/aqd/fcos_r50-caffe_fpn_aqd-w4a4_90k_coco.py')
MMDET2_META_CONFIG = """
img_norm_cfg = dict(mean=[102.9801, 115.9465, 122.7717], std=[1.0, 1.0, 1.0], to_rgb=False)
model = dict(type='FCOS', backbone=dict(type='ResNet', depth=50, style='caffe'),
             bbox_head=dict(type='FCOSHead', num_classes=80))
"""


@pytest.fixture(scope='module')
def conv():
    return load_tool('model_converters/mmdet_to_aqd.py')


@pytest.fixture(scope='module')
def zoo_model():
    """mmdet's zoo FCOS R50 (caffe style, GN head) with random weights: the network its checkpoint holds."""
    torch.manual_seed(0)
    model = build_cpu_model(Config.fromfile(ZOO)).eval()
    with torch.no_grad():  # random norms: mmdet zero-initialises the last BN of a block, which hides the style
        for m in model.modules():
            if isinstance(m, (torch.nn.BatchNorm2d, torch.nn.GroupNorm)):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.1)
                if isinstance(m, torch.nn.BatchNorm2d):
                    m.running_mean.normal_(0, 0.1)
                    m.running_var.uniform_(0.5, 1.5)
    return model


@pytest.fixture(scope='module')
def zoo_ckpt(zoo_model, tmp_path_factory) -> str:
    """A fake zoo checkpoint as mmengine writes it: the state dict and the config text in meta['cfg']."""
    path = str(tmp_path_factory.mktemp('zoo') / 'fcos_r50-caffe_fpn_gn-head.pth')
    torch.save(dict(state_dict=zoo_model.state_dict(), meta=dict(cfg=Config.fromfile(ZOO).pretty_text)), path)
    return path


def _tiny(path, meta=None) -> str:
    ckpt = {'backbone.conv1.weight': torch.zeros(64, 3, 7, 7)}
    torch.save(ckpt if meta is None else dict(state_dict=ckpt, meta=meta), path)
    return str(path)


def test_refuses_the_zoo_checkpoint_for_the_pytorch_style_config(conv, zoo_ckpt, tmp_path, capsys):
    dst = tmp_path / 'aqd.pth'
    with pytest.raises(SystemExit):
        conv.main([zoo_ckpt, str(dst), '--config', AQD_R50])
    err = capsys.readouterr().err
    src = "the checkpoint (meta['cfg'])"
    assert f"backbone.style                'caffe' in {src}, 'pytorch' in {AQD_R50}" in err
    assert f'data_preprocessor.mean        [102.98, 115.947, 122.772] in {src}, [123.675, 116.28, 103.53] in' in err
    assert f'data_preprocessor.std         [1, 1, 1] in {src}, [58.395, 57.12, 57.375] in' in err
    assert f'data_preprocessor.bgr_to_rgb  False in {src}, True in' in err
    assert 'bbox_head.norm_on_bbox' in err and 'fcos_r50-caffe_fpn_aqd-w4a4_90k_coco.py' in err  # the way out
    assert not dst.exists()


def test_refuses_from_mmdet2_meta_and_from_src_config(conv, tmp_path, capsys):
    dst = tmp_path / 'out.pth'
    src = _tiny(tmp_path / 'v2.pth', meta=dict(config=MMDET2_META_CONFIG, mmdet_version='2.25.0'))
    with pytest.raises(SystemExit):
        conv.main([src, str(dst), '--config', AQD_R50])
    err = capsys.readouterr().err
    assert "'caffe' in the checkpoint (meta['config'])" in err and 'data_preprocessor.mean' in err
    # a bare state dict names nothing: --src-config says what it was trained with
    bare = _tiny(tmp_path / 'bare.pth')
    with pytest.raises(SystemExit):
        conv.main([bare, str(dst), '--config', AQD_R50, '--src-config', ZOO])
    assert f"'caffe' in the checkpoint (--src-config {ZOO})" in capsys.readouterr().err
    assert not dst.exists()
    assert conv.main([bare, str(dst)]) == 0  # unchecked, and said so
    assert "carries no config (meta['cfg'] / meta['config'])" in capsys.readouterr().out
    bad = _tiny(tmp_path / 'bad.pth', meta=dict(cfg='model = dict('))
    with pytest.raises(SystemExit):
        conv.main([bad, str(tmp_path / 'bad_out.pth')])
    assert 'cannot read the config embedded in' in capsys.readouterr().err


def test_zoo_checkpoint_into_the_caffe_config_computes_the_zoo_network(conv, zoo_model, zoo_ckpt, tmp_path, capsys):
    dst = str(tmp_path / 'aqd-init.pth')
    assert conv.main([zoo_ckpt, dst, '--config', AQD_R50_CAFFE]) == 0
    out = capsys.readouterr().out
    assert f"settings of the checkpoint (meta['cfg']) match {AQD_R50_CAFFE}: backbone.style='caffe'" in out
    saved = torch.load(dst, weights_only=True)
    dropped = saved['meta']['dropped']
    assert dropped and all('.gn.' in k for k in dropped)  # only the head GroupNorms do not map
    assert saved['meta']['source_convention']['backbone.style'] == 'caffe'
    left = out.split('left at initialisation', 1)[1]
    assert 'bbox_head.cls_convs.0.bn.norms.*.weight' in left and 'backbone' not in left and 'neck' not in left

    aqd = build_cpu_model(AQD_R50_CAFFE).eval()
    result = aqd.load_state_dict(saved['state_dict'], strict=False)
    assert not result.unexpected_keys
    assert result.missing_keys and all('bbox_head' in k and '.norms.' in k for k in result.missing_keys)
    assert torch.equal(aqd.data_preprocessor.mean, zoo_model.data_preprocessor.mean)
    assert torch.equal(aqd.data_preprocessor.std, zoo_model.data_preprocessor.std)
    assert aqd.data_preprocessor._channel_conversion == zoo_model.data_preprocessor._channel_conversion

    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad(), quantization_disabled(aqd):
        ref, got = zoo_model.extract_feat(x), aqd.extract_feat(x)
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(ref, got))  # backbone + FPN: the zoo's network

    # what the refusal prevents: the same keys in the pytorch-style config compute something else
    wrong = build_cpu_model(AQD_R50).eval()
    assert not wrong.load_state_dict(saved['state_dict'], strict=False).unexpected_keys
    with torch.no_grad(), quantization_disabled(wrong):
        other = wrong.extract_feat(x)
    assert not torch.allclose(ref[0], other[0], atol=1e-3)
