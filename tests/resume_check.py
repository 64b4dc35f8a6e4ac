"""Does a resumed run start from the checkpoint it resumed from? Iteration, weights, optimizer, lr schedulers and
quantizer state, compared tensor by tensor (for the resume tests; not a test itself).

A test registers a :class:`ResumeProbe` on the resumed Runner; the probe records the training state at
``before_train``, i.e. after ``Runner.load_or_resume`` and after every other hook's ``before_train`` (it has the
lowest priority), before the first iteration. :func:`assert_resumed_from` then compares that with the checkpoint
file, so a run that ignores ``resume`` (and trains from scratch to the same final iteration) fails.
"""
import torch
from mmengine.hooks import Hook

from mmaqd.engine.hooks.utils import unwrap_model


def cpu_clone(obj):
    """``obj`` with every tensor detached, cloned and on the CPU (nested dicts / lists / tuples); also used by
    tests/dist_probe.py."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu().clone()
    if isinstance(obj, dict):
        return {k: cpu_clone(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(cpu_clone(v) for v in obj)
    return obj


def differences(a, b, where: str = '') -> list:
    """Where the nested dicts / lists / tensors ``a`` and ``b`` differ (tensors: exactly), as readable lines."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        same = (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.shape == b.shape
                and a.dtype == b.dtype and torch.equal(a, b))
        return [] if same else [f'{where}: {_show(a)} != {_show(b)}']
    if isinstance(a, dict) and isinstance(b, dict):
        out = [f'{where}.{k}: only in one of them' for k in sorted(set(a) ^ set(b), key=str)]
        for k in a:
            if k in b:
                out += differences(a[k], b[k], f'{where}.{k}')
        return out
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        if len(a) != len(b):
            return [f'{where}: {len(a)} != {len(b)} entries']
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in differences(x, y, f'{where}[{i}]')]
    return [] if a == b else [f'{where}: {a!r} != {b!r}']


def _show(t) -> str:
    if not isinstance(t, torch.Tensor):
        return repr(t)
    return f'tensor{tuple(t.shape)} {t.flatten()[:3].tolist()}'


class ResumeProbe(Hook):
    """Records ``iter``, the model's ``state_dict``, the optimizer's and the lr schedulers' state at
    ``before_train``."""

    priority = 'LOWEST'

    def before_train(self, runner) -> None:
        self.iter = runner.iter
        self.state_dict = cpu_clone(unwrap_model(runner.model).state_dict())
        self.optimizer = cpu_clone(runner.optim_wrapper.state_dict())
        schedulers = runner.param_schedulers or []
        self.param_schedulers = [s.state_dict() for s in schedulers] if isinstance(schedulers, list) else None


def assert_resumed_from(probe: ResumeProbe, checkpoint: str, quantized: bool = False) -> None:
    """The state ``probe`` recorded is the one saved in ``checkpoint`` (a path): same iteration (> 0), every model
    tensor, the optimizer (per-parameter state and param groups) and the lr schedulers. ``quantized``: the
    checkpoint must hold quantizer state (ranges and ``initialized`` flags), all of it initialised."""
    ckpt = torch.load(checkpoint, map_location='cpu', weights_only=True)
    assert ckpt['meta']['iter'] > 0
    assert probe.iter == ckpt['meta']['iter'], f'resumed at iteration {probe.iter}, {checkpoint} is at ' \
                                               f"iteration {ckpt['meta']['iter']}"
    state = ckpt['state_dict']
    diff = differences(probe.state_dict, state, 'state_dict')
    assert not diff, f'{len(diff)} model differences from {checkpoint}: {diff[:8]}'
    assert ckpt['optimizer']['state'], f'{checkpoint} holds no optimizer state to resume'
    diff = differences(probe.optimizer, ckpt['optimizer'], 'optimizer')
    assert not diff, f'{len(diff)} optimizer differences from {checkpoint}: {diff[:8]}'
    if probe.param_schedulers is not None:
        diff = differences(probe.param_schedulers, ckpt['param_schedulers'], 'param_schedulers')
        assert not diff, f'lr schedulers differ from {checkpoint}: {diff[:8]}'
    if quantized:
        flags = [k for k in state if k.endswith('_quantizer.initialized')]
        ranges = [k for k in state if k.endswith(('_quantizer.alpha', '_quantizer.step_size', '_quantizer.lb'))]
        assert flags and ranges, f'{checkpoint} holds no quantizer state'
        assert all(bool(state[k]) for k in flags), [k for k in flags if not bool(state[k])]
