"""A quantized run stopped half way and resumed ends bit-identical to the uninterrupted run (deterministic
settings): the batches that QuantizerInitHook / PercentileCalibrationHook drew before the first step are skipped
again on resume (mmaqd.engine.hooks.utils.replay_drawn), so both runs train on the same batches."""
import os.path as osp

import pytest
import torch
from mmengine.runner import Runner

AQD = 'configs/aqd/fcos_r18-c32_fpn_aqd-w4a4_synth.py'
FQN = 'configs/fqn/retinanet_r18-c32_fpn_fqn-w4a4_synth.py'
AUXI = 'configs/auxi/retinanet_r18-c32_fpn_auxi-w4a4_synth.py'


def _cfg(builder, config, data_root, work_dir, max_iters, resume=False):
    cfg = builder(config, data_root, work_dir, max_iters=max_iters)
    cfg.load_from = None  # from the random init: the quantizers initialise from data in the first run
    cfg.randomness = dict(seed=0, deterministic=True)
    cfg.optim_wrapper.optimizer.lr = 1e-5  # small steps: no quantizer range can cross 0 in four iterations
    cfg.default_hooks.checkpoint.update(interval=2)
    for hook in cfg.get('custom_hooks', []):
        if hook['type'] == 'PercentileCalibrationHook':
            hook['num_batches'] = 3
    cfg.resume = resume
    return cfg


def _state(work_dir: str, it: int) -> dict:
    return torch.load(osp.join(work_dir, f'iter_{it}.pth'), map_location='cpu', weights_only=True)['state_dict']


@pytest.mark.parametrize('config', [AQD, FQN, AUXI])
def test_resumed_quantized_run_equals_the_uninterrupted_one(config, tiny_coco, tmp_path, runner_cfg_builder):
    straight, halves = str(tmp_path / 'straight'), str(tmp_path / 'halves')
    Runner.from_cfg(_cfg(runner_cfg_builder, config, tiny_coco, straight, 4)).train()
    Runner.from_cfg(_cfg(runner_cfg_builder, config, tiny_coco, halves, 2)).train()
    Runner.from_cfg(_cfg(runner_cfg_builder, config, tiny_coco, halves, 4, resume=True)).train()
    a, b = _state(straight, 4), _state(halves, 4)
    assert a.keys() == b.keys()
    differ = [k for k in a if not torch.equal(a[k], b[k])]
    assert not differ, f'{len(differ)} of {len(a)} tensors differ, e.g. {differ[:5]}'
    mid = _state(straight, 2)
    assert any(not torch.equal(mid[k], a[k]) for k in a if k.endswith('weight'))  # it did train on
