"""mmaqd_tools.experiment: config building, CocoMetric conversion, tables, and train / resume / reuse decisions."""
import json
import os
import os.path as osp

import pytest
from mmengine.config import Config

from conftest import ROOT
from mmaqd_tools.experiment import METRICS, build_stage_cfg, coco_ap, markdown_table, rescale_schedule, run_stage

AQD4 = osp.join(ROOT, 'configs/aqd/fcos_r18-c32_fpn_aqd-w4a4_synth.py')
COCO = {'coco/bbox_mAP': 0.312, 'coco/bbox_mAP_50': 0.5, 'coco/bbox_mAP_75': 0.3, 'coco/bbox_mAP_s': -1.0,
        'coco/bbox_mAP_m': 0.25, 'coco/bbox_mAP_l': 0.4, 'coco/bbox_mAP_copypaste': '...'}


def test_coco_ap_in_percent_and_missing_sizes_as_none():
    ap = coco_ap(COCO)
    assert list(ap) == [label for label, _ in METRICS]
    assert ap['AP'] == pytest.approx(31.2) and ap['AP50'] == 50.0 and ap['APl'] == 40.0
    assert ap['APs'] is None  # pycocotools' -1: no ground truth of that size


@pytest.mark.parametrize('empty', [{}, None])
def test_coco_ap_of_no_predictions_is_zero(empty):
    # mmdet's CocoMetric returns an empty dict when no box scored above test_cfg.score_thr
    assert coco_ap(empty) == {label: 0.0 for label, _ in METRICS}


def test_markdown_table():
    table = markdown_table(['name', 'AP', 'gap'], [['fp', 31.25, None], ['aqd', 30.0, '-1.2']])
    assert table.splitlines() == ['| name | AP | gap |', '|---|---|---|', '| fp | 31.2 | - |',
                                  '| aqd | 30.0 | -1.2 |']
    with pytest.raises(ValueError, match='2 cells'):
        markdown_table(['a', 'b', 'c'], [[1, 2]])


def _schedule_cfg(max_iters=350):
    return Config(dict(train_cfg=dict(max_iters=max_iters, val_interval=max_iters), param_scheduler=[
        dict(type='LinearLR', by_epoch=False, begin=0, end=50),
        dict(type='MultiStepLR', by_epoch=False, begin=0, end=max_iters, milestones=[280])]))


def test_rescale_schedule_keeps_warmup_and_lr_step_fraction():
    cfg = _schedule_cfg()
    rescale_schedule(cfg, 350, 1400)
    warmup, step = cfg.param_scheduler
    assert warmup.end == 50  # warm-up length kept
    assert step.end == 1400 and step.milestones == [1120]  # the step stays at 80%
    assert cfg.train_cfg.val_interval == 1400


def test_build_stage_cfg_overrides(tmp_path):
    cfg = build_stage_cfg(AQD4, str(tmp_path), 'aqd', cfg_options={'train_cfg.max_iters': 700},
                          data_root='/data/x', rescale=True, log=lambda m: None)
    assert cfg.work_dir == str(tmp_path) and cfg.experiment_name == 'aqd'
    assert cfg.train_cfg.max_iters == 700 and cfg.param_scheduler[1].milestones == [560]
    assert cfg.train_dataloader.dataset.data_root == '/data/x/'
    assert cfg.test_evaluator.ann_file == '/data/x/annotations/instances_val.json'
    # without rescale only the override changes
    plain = build_stage_cfg(AQD4, str(tmp_path), 'aqd', cfg_options={'train_cfg.max_iters': 700})
    assert plain.param_scheduler[1].milestones == [280]
    scaled = build_stage_cfg(AQD4, str(tmp_path), 'aqd', iters_scale=2.0, log=lambda m: None)
    assert scaled.train_cfg.max_iters == 700 and scaled.param_scheduler[1].end == 700


# --------------------------------------------------------------------------------------------- run_stage
class FakeRunner:
    """Records what run_stage asked of it; ``save_checkpoint`` writes a small file."""

    calls = []

    def __init__(self, cfg):
        self.cfg = cfg
        FakeRunner.calls.append(self)
        self.did = []

    def train(self):
        self.did.append('train')

    def test(self):
        self.did.append('test')
        return dict(COCO)

    def save_checkpoint(self, out_dir, filename, **kwargs):
        self.did.append(f'save {filename}')
        with open(osp.join(out_dir, filename), 'w') as f:
            f.write('weights')


@pytest.fixture
def stage(tmp_path):
    FakeRunner.calls = []
    config = tmp_path / 'tiny_cfg.py'
    config.write_text('train_cfg = dict(max_iters=4, val_interval=4)\nparam_scheduler = []\n')
    logs = []
    work_dir = str(tmp_path / 'work' / 'q')

    def run(**kwargs):
        return run_stage('q', str(config), work_dir, load_from='fp/final.pth', runner_factory=FakeRunner,
                         log=logs.append, **kwargs)
    return run, work_dir, logs


def test_run_stage_trains_from_init_then_reuses_final(stage):
    run, work_dir, logs = stage
    first = run()
    runner = FakeRunner.calls[-1]
    assert runner.did == ['train', 'test', 'save final.pth']
    # initial weights are loaded, never resumed from (resuming an FP checkpoint would restore its iteration)
    assert runner.cfg.load_from == 'fp/final.pth' and runner.cfg.resume is False
    assert first.trained and first.metrics['AP'] == pytest.approx(31.2)
    record = json.load(open(osp.join(work_dir, 'stage.json')))
    assert record['load_from'] == 'fp/final.pth' and record['train_seconds'] == first.train_seconds

    second = run()
    runner = FakeRunner.calls[-1]
    assert runner.did == ['test']  # skip-if-final: evaluated only
    assert runner.cfg.load_from == osp.join(work_dir, 'final.pth') and runner.cfg.resume is False
    assert not second.trained and second.train_seconds == first.train_seconds
    assert not [m for m in logs if 'WARNING' in m]


def test_run_stage_retrain_ignores_final(stage):
    run, work_dir, _ = stage
    run()
    run(retrain=True)
    runner = FakeRunner.calls[-1]
    assert runner.did[0] == 'train' and runner.cfg.load_from == 'fp/final.pth' and runner.cfg.resume is False


def test_run_stage_resumes_an_interrupted_run(stage):
    run, work_dir, _ = stage
    os.makedirs(work_dir)
    ckpt = osp.join(work_dir, 'iter_2.pth')
    open(ckpt, 'w').write('partial')
    open(osp.join(work_dir, 'last_checkpoint'), 'w').write(ckpt)
    result = run()
    runner = FakeRunner.calls[-1]
    assert runner.cfg.load_from == ckpt and runner.cfg.resume is True
    assert result.trained and json.load(open(osp.join(work_dir, 'stage.json')))['resumed_from'] == ckpt


def test_run_stage_warns_when_reusing_weights_of_other_options(stage):
    run, _, logs = stage
    run(cfg_options={'train_cfg.max_iters': 4})
    run(cfg_options={'train_cfg.max_iters': 8})
    assert FakeRunner.calls[-1].did == ['test']
    assert any('WARNING' in m and 'cfg_options' in m for m in logs)


def test_run_stage_seeds_the_run_and_records_the_seed(stage):
    run, work_dir, logs = stage
    first = run(seed=3)
    assert FakeRunner.calls[-1].cfg.randomness.seed == 3 and first.seed == 3
    assert json.load(open(osp.join(work_dir, 'stage.json')))['seed'] == 3
    second = run(seed=4)  # reused: the result names the seed the weights were trained with, and a warning says so
    assert not second.trained and second.seed == 3
    assert any('seed 3 -> 4' in m for m in logs if 'WARNING' in m)
    with pytest.raises(ValueError, match='seed must be a non-negative int'):
        run(seed=-1, retrain=True)


def test_run_stage_points_a_distilled_stage_at_its_fp_teacher(tmp_path):
    FakeRunner.calls = []
    config = tmp_path / 'distill_cfg.py'
    config.write_text("train_cfg = dict(max_iters=4, val_interval=4)\nparam_scheduler = []\n"
                      "model = dict(distill_cfg=dict(teacher_config='t.py', teacher_checkpoint='elsewhere.pth'))\n")
    run_stage('q', str(config), str(tmp_path / 'q'), load_from='work/fp/final.pth', runner_factory=FakeRunner,
              log=lambda m: None)
    assert FakeRunner.calls[-1].cfg.model.distill_cfg.teacher_checkpoint == 'work/fp/final.pth'
