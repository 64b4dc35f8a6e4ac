"""QuantizerInitHook: data-driven quantizer ranges from training batches before the first step; resume is a no-op."""
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from mmaqd.engine.hooks import QuantizerInitHook
from mmaqd.engine.hooks.utils import run_batches
from mmaqd.quantization import QConv2d, quantizers
from mock_runner import CountingLoader, NoDataLoader, TwoQConvNet, make_runner

ACT = dict(type='LIQ', bits=4, init='max')  # alpha = 0.8 * max(x) of the first batch: easy to check
WEIGHT = dict(type='LIQ', bits=4, weight_norm=True, init='max')


class TinyQNet(TwoQConvNet):
    """conv -> BN -> ReLU -> conv, quantized; ``aux`` is reached only in 'loss' mode."""

    def __init__(self):
        super().__init__(WEIGHT, ACT)
        self.aux = QConv2d.from_float(nn.Conv2d(4, 1, 1), WEIGHT, ACT)

    def forward(self, inputs, data_samples=None, mode='tensor'):
        x = super().forward(inputs)
        return {'loss': self.aux(x).mean()} if mode == 'loss' else x


def make_batches(n=3):
    g = torch.Generator().manual_seed(0)
    return [dict(inputs=torch.rand(2, 3, 16, 16, generator=g) * (i + 1), data_samples=None) for i in range(n)]


def logged(runner) -> str:
    return ' '.join(str(c) for c in runner.logger.info.call_args_list + runner.logger.warning.call_args_list)


def test_initialises_from_first_training_batch_without_touching_bn():
    torch.manual_seed(0)
    model = TinyQNet().train()
    model.bn.eval()  # a frozen BN must stay frozen after the hook
    pending = [n for n, q in quantizers(model) if q.data_init and not bool(q.initialized)]
    assert len(pending) == 6
    batches, loader = make_batches(), CountingLoader(make_batches())
    runner = make_runner(model, loader)
    QuantizerInitHook(num_batches=2).before_train(runner)
    assert loader.taken == 2
    # initialised by the hook, before any train step, from the first batch (batch 1 has twice its range)
    assert bool(model.conv1.act_quantizer.initialized) and bool(model.conv2.act_quantizer.initialized)
    assert torch.allclose(model.conv1.act_quantizer.alpha, 0.8 * batches[0]['inputs'].max())
    assert not torch.allclose(model.conv1.act_quantizer.alpha, 0.8 * batches[1]['inputs'].max())
    assert model.conv1.act_quantizer.alpha.grad is None
    # the tensor-mode forward does not reach aux: its act quantizer waits for the first train batch
    assert not bool(model.aux.act_quantizer.initialized)
    assert 'initialised 4 of 6' in logged(runner) and 'aux.act_quantizer' in logged(runner)
    # eval mode: BN running stats untouched; every module's own mode restored
    assert int(model.bn.num_batches_tracked) == 0 and torch.equal(model.bn.running_mean, torch.zeros(4))
    assert model.training and model.conv1.training and not model.bn.training


def test_loss_mode_reaches_loss_only_quantizers():
    model = TinyQNet()
    QuantizerInitHook(forward_mode='loss').before_train(make_runner(model, make_batches()))
    assert all(bool(q.initialized) for _, q in quantizers(model))


def test_resume_leaves_initialised_quantizers_untouched():
    torch.manual_seed(0)
    trained = TinyQNet()
    QuantizerInitHook(forward_mode='loss').before_train(make_runner(trained, make_batches()))
    with torch.no_grad():
        trained.conv1.act_quantizer.alpha.mul_(1.5)  # as if learned during training
    resumed = TinyQNet()
    resumed.load_state_dict(trained.state_dict())
    runner = make_runner(resumed, NoDataLoader())
    QuantizerInitHook(num_batches=3).before_train(runner)
    for (name, a), (_, b) in zip(resumed.state_dict().items(), trained.state_dict().items()):
        assert torch.equal(a, b), name
    assert 'nothing to do' in logged(runner)


def test_unwraps_model_wrapper():
    model = TinyQNet()
    QuantizerInitHook().before_train(make_runner(nn.DataParallel(model), make_batches()))
    assert bool(model.conv1.act_quantizer.initialized)


def test_iter_based_loop_keeps_its_infinite_sampler_stream():
    """Batches come from the loop's own iterator; a second iterator would close InfiniteSampler's generator."""
    from mmengine.dataset import InfiniteSampler
    from mmengine.runner.loops import _InfiniteDataloaderIterator
    from torch.utils.data import DataLoader
    batches = make_batches(4)
    dataset = [dict(inputs=b['inputs'][0]) for b in batches]
    loader = DataLoader(dataset, batch_size=1, sampler=InfiniteSampler(dataset, shuffle=False), num_workers=0,
                        collate_fn=lambda items: dict(inputs=torch.stack([i['inputs'] for i in items])))
    stream = _InfiniteDataloaderIterator(loader)
    model = TinyQNet()
    runner = make_runner(model, loader)
    runner.train_loop = SimpleNamespace(dataloader_iterator=stream)
    QuantizerInitHook(num_batches=2).before_train(runner)
    assert torch.allclose(model.conv1.act_quantizer.alpha, 0.8 * dataset[0]['inputs'].max())
    assert torch.equal(next(stream)['inputs'][0], dataset[2]['inputs'])  # training goes on with the next batch


def test_run_batches_stops_at_end_of_loader_and_restores_mode_on_error():
    model = TinyQNet().train()
    assert run_batches(model, make_batches(2), num_batches=5) == 2
    bad = [dict(inputs=torch.rand(1, 5, 8, 8), data_samples=None)]  # wrong channel count
    with pytest.raises(RuntimeError):
        run_batches(model, bad, num_batches=1)
    assert all(m.training for m in model.modules())


@pytest.mark.parametrize('kwargs', [dict(num_batches=0), dict(forward_mode='predict')])
def test_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        QuantizerInitHook(**kwargs)


@pytest.mark.parametrize('start_iter', [0, 5])
def test_reinit_initialises_loaded_ranges_again_on_a_fresh_run_only(start_iter):
    """Progressive initialisation: ranges loaded from a quantized checkpoint (here: set by hand and marked
    initialised) are initialised from data again at iteration 0; a resumed run keeps them."""
    torch.manual_seed(0)
    model = TinyQNet().train()
    for _, q in quantizers(model):
        q.alpha.data.fill_(7.0)
        q.initialized.fill_(True)
    batches = make_batches()
    runner = make_runner(model, CountingLoader(make_batches()))
    runner.iter = start_iter
    QuantizerInitHook(reinit=True).before_train(runner)
    alpha = model.conv1.act_quantizer.alpha
    if start_iter == 0:
        assert torch.allclose(alpha, 0.8 * batches[0]['inputs'].max()) and 'reinit=True' in logged(runner)
    else:
        assert torch.equal(alpha, torch.tensor(7.0))
    with pytest.raises(TypeError, match='reinit'):
        QuantizerInitHook(reinit='yes')
