"""tools/analysis/plot_bn_stats.py: AQD Figure 1 from BNStatsHook records or from a checkpoint."""
import os.path as osp

import pytest
import torch

from conftest import ROOT, load_tool

LAYER = 'bbox_head.cls_convs.3.bn'


@pytest.fixture(scope='module')
def tool():
    return load_tool('analysis/plot_bn_stats.py')


@pytest.fixture
def records_file(tmp_path) -> str:
    """Fabricated records in BNStatsHook's format: 5 levels with shifted mean / scaled variance, 4 iterations."""
    g = torch.Generator().manual_seed(0)
    records = {LAYER: {lvl: {'mean': torch.randn(4, 8, generator=g) * 0.1 + 0.3 * lvl,
                             'var': torch.rand(4, 8, generator=g) * (lvl + 1),
                             'iters': [50, 100, 150, 200]} for lvl in range(5)},
               'bbox_head.reg_convs.3.bn': {}}
    path = str(tmp_path / 'bn_stats.pth')
    torch.save(records, path)
    return path


def assert_png(path: str):
    with open(path, 'rb') as f:
        data = f.read()
    assert data[:8] == b'\x89PNG\r\n\x1a\n' and len(data) > 20_000


def test_plot_from_records_refuses_to_overwrite(tool, records_file, tmp_path):
    out = tool.main(['--records', records_file, '--layer', LAYER])
    assert out == str(tmp_path / f'bn_stats_{LAYER}.png')  # default: beside the records
    assert_png(out)
    before = open(out, 'rb').read()
    with pytest.raises(SystemExit, match='--force'):
        tool.main(['--records', records_file, '--layer', LAYER, '--out', out])
    assert open(out, 'rb').read() == before
    tool.main(['--records', records_file, '--layer', LAYER, '--out', out, '--force', '--last', '2'])
    assert_png(out)
    assert open(out, 'rb').read() != before


def test_bad_arguments(tool, records_file, tmp_path):
    with pytest.raises(SystemExit, match='recorded layers'):  # two layers in the file: --layer is needed
        tool.main(['--records', records_file, '--out', str(tmp_path / 'a.png')])
    with pytest.raises(SystemExit):
        tool.main(['--records', records_file, '--config', 'x.py', '--checkpoint', 'y.pth'])
    assert not osp.exists(tmp_path / 'a.png')


def test_level_names(tool):
    assert tool.level_name(0, None, 3) == 'Level-3' and tool.level_name(4, None, 3) == 'Level-7'
    assert tool.level_name(1, [8, 16, 32, 64, 128], 0) == 'Level-4'
    assert tool.level_name(0, [(8, 8), (16, 16)], 0) == 'Level-3'


def test_plot_from_checkpoint(tool, tiny_coco, tmp_path, cpu_model_builder):
    config = osp.join(ROOT, 'configs/fcos/fcos_r18-c32_fpn_bn-head_synth.py')
    ckpt = str(tmp_path / 'fp.pth')
    torch.save({'state_dict': cpu_model_builder(config).state_dict()}, ckpt)
    out = tool.main(['--config', config, '--checkpoint', ckpt, '--num-batches', '1', '--device', 'cpu',
                     '--cfg-options', f'val_dataloader.dataset.data_root={tiny_coco}/', 'val_dataloader.batch_size=2',
                     'val_dataloader.num_workers=0', 'val_dataloader.persistent_workers=False'])
    assert out == str(tmp_path / f'bn_stats_{LAYER}.png')  # default layer: the last cls tower norm
    assert_png(out)
