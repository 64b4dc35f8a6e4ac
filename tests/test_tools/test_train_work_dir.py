"""tools/train.py never overwrites what a user left in the work dir (mmaqd_tools.work_dir_guard)."""
import os
import os.path as osp
import subprocess
import sys

import pytest
from mmengine.config import Config

from conftest import ROOT, load_tool
from mmaqd_tools.work_dir_guard import check_work_dir, files_at_risk

CONFIG = 'configs/aqd/fcos_r18-c32_fpn_aqd-w4a4_synth.py'
NAME = osp.basename(CONFIG)


@pytest.fixture(scope='module')
def train_tool():
    return load_tool('train.py')


def _user_files(work_dir):
    """What the issue observed being lost: two checkpoints and a same-named config of the user's."""
    os.makedirs(work_dir / '20240101_120000')  # an earlier run's log folder: allowed
    files = {'iter_10.pth': b'user checkpoint 10', 'iter_2.pth': b'user checkpoint 2', NAME: b'# my own config\n'}
    for name, data in files.items():
        (work_dir / name).write_bytes(data)
    return files


def test_train_refuses_a_work_dir_with_user_files(tmp_path, tiny_coco):
    work_dir = tmp_path / 'work'
    files = _user_files(work_dir)
    root = tiny_coco.rstrip('/') + '/'
    # bounded in case the guard is missing: one iteration on the tiny split
    options = ['train_cfg.max_iters=1', 'train_cfg.val_interval=100', 'train_dataloader.num_workers=0',
               'train_dataloader.persistent_workers=False', 'train_dataloader.batch_size=2',
               f'train_dataloader.dataset.data_root={root}', 'default_hooks.checkpoint.interval=1',
               'custom_hooks=[]', 'val_cfg=None', 'val_dataloader=None', 'val_evaluator=None']
    proc = subprocess.run([sys.executable, 'tools/train.py', CONFIG, '--work-dir', str(work_dir),
                           '--cfg-options', *options], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    for name in ('iter_10.pth', 'iter_2.pth', NAME):
        assert osp.join(str(work_dir), name) in proc.stderr
    assert '--resume' in proc.stderr and '--overwrite' in proc.stderr and '--work-dir' in proc.stderr
    assert 'Traceback' not in proc.stderr
    for name, data in files.items():  # untouched
        assert (work_dir / name).read_bytes() == data
    assert sorted(os.listdir(work_dir)) == sorted(list(files) + ['20240101_120000'])


def test_what_is_at_risk(tmp_path):
    work_dir = tmp_path / 'work'
    assert files_at_risk(str(work_dir), NAME, 'cfg') == []  # not there yet
    os.makedirs(work_dir / '20240101_120000')
    (work_dir / '20240101_120000' / 'vis_data').mkdir()
    (work_dir / 'notes.txt').write_text('mine, but no run writes it')
    (work_dir / NAME).write_text('same text')
    assert files_at_risk(str(work_dir), NAME, 'same text') == []  # an identical dump is rewritten as it is
    check_work_dir(str(work_dir), NAME, 'same text')
    assert files_at_risk(str(work_dir), NAME, 'other text') == [str(work_dir / NAME)]
    (work_dir / 'last_checkpoint').write_text('x')
    (work_dir / 'best_coco_bbox_mAP_iter_4.pth').write_bytes(b'x')
    assert files_at_risk(str(work_dir), NAME, 'same text') == [str(work_dir / 'best_coco_bbox_mAP_iter_4.pth'),
                                                               str(work_dir / 'last_checkpoint')]
    with pytest.raises(FileExistsError, match='last_checkpoint'):
        check_work_dir(str(work_dir), NAME, 'same text')


def test_checkpoint_out_dir_is_checked_too(tmp_path):
    work_dir, out_dir = tmp_path / 'work', tmp_path / 'ckpts'
    os.makedirs(work_dir)
    os.makedirs(out_dir / 'work')  # CheckpointHook saves to <out_dir>/<work dir name>
    (out_dir / 'work' / 'iter_5.pth').write_bytes(b'x')
    assert files_at_risk(str(work_dir)) == []
    assert files_at_risk(str(work_dir), checkpoint_out_dir=str(out_dir)) == [str(out_dir / 'work' / 'iter_5.pth')]


def test_resume_and_overwrite_let_the_run_in(tmp_path, train_tool):
    work_dir = tmp_path / 'work'
    _user_files(work_dir)
    cfg = Config.fromfile(osp.join(ROOT, CONFIG))
    cfg.work_dir = str(work_dir)
    with pytest.raises(SystemExit, match='iter_10.pth'):
        train_tool.guard_work_dir(cfg, overwrite=False)
    train_tool.guard_work_dir(cfg, overwrite=True)
    cfg.resume = True
    train_tool.guard_work_dir(cfg, overwrite=False)
    # a fresh work dir, or one holding only the same config, is fine
    cfg.resume, cfg.work_dir = False, str(tmp_path / 'fresh')
    train_tool.guard_work_dir(cfg, overwrite=False)
    os.makedirs(cfg.work_dir)
    (tmp_path / 'fresh' / NAME).write_text(cfg.pretty_text)
    train_tool.guard_work_dir(cfg, overwrite=False)
