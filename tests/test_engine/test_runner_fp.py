"""A few iterations of training, a pycocotools evaluation and a resume (checked against the checkpoint it resumes
from: tests/resume_check.py) through mmengine's Runner on the tiny split."""
import os.path as osp

import pytest
from mmengine.runner import Runner

from resume_check import ResumeProbe, assert_resumed_from

CONFIGS = ['configs/fcos/fcos_r18-c32_fpn_bn-head_synth.py', 'configs/retinanet/retinanet_r18-c32_fpn_bn-head_synth.py']


@pytest.mark.parametrize('config', CONFIGS)
def test_train_eval_and_resume(config, tiny_coco, tmp_path, runner_cfg_builder):
    work_dir = str(tmp_path / 'work')
    runner = Runner.from_cfg(runner_cfg_builder(config, tiny_coco, work_dir, max_iters=2))
    runner.train()
    assert osp.isfile(osp.join(work_dir, 'iter_2.pth'))
    metrics = runner.test()
    for key in ('coco/bbox_mAP', 'coco/bbox_mAP_50', 'coco/bbox_mAP_s', 'coco/bbox_mAP_m', 'coco/bbox_mAP_l'):
        assert key in metrics and -1 <= metrics[key] <= 1

    # resume continues from the saved iteration, weights, optimizer and lr schedule instead of starting over
    cfg = runner_cfg_builder(config, tiny_coco, work_dir, max_iters=3)
    cfg.resume = True
    resumed = Runner.from_cfg(cfg)
    probe = ResumeProbe()
    resumed.register_hook(probe)
    resumed.train()
    assert_resumed_from(probe, osp.join(work_dir, 'iter_2.pth'))
    assert resumed.iter == 3
    assert osp.isfile(osp.join(work_dir, 'iter_3.pth'))
