"""reuse_quantized_weights: a layer run several times in one pass quantizes its weight once, with the same
outputs and gradients as quantizing on every call."""
import copy

import torch
from torch import nn

from mmaqd.quantization import QConv2d, reuse_quantized_weights

LIQ4 = dict(type='LIQ', bits=4, weight_norm=True)


class Shared(nn.Module):
    """One conv applied to three inputs, as a detection head applies its convs to the FPN levels."""

    def __init__(self):
        super().__init__()
        self.conv = QConv2d.from_float(nn.Conv2d(3, 4, 3, padding=1), LIQ4, dict(type='LIQ', bits=4))

    def forward(self, xs):
        return sum(self.conv(x).square().mean() for x in xs)


def _count_weight_quantizations(module):
    calls = []
    module.conv.weight_quantizer.register_forward_hook(lambda *_: calls.append(1))
    return calls


def test_one_weight_quantization_per_pass_same_outputs_and_gradients():
    torch.manual_seed(0)
    xs = [torch.randn(2, 3, s, s) for s in (8, 4, 2)]
    ref, new = Shared(), Shared()
    new.load_state_dict(ref.state_dict())
    ref(xs), new(xs)  # initialise the quantizers (data init) in both
    ref_calls, new_calls = _count_weight_quantizations(ref), _count_weight_quantizations(new)

    loss_ref = ref(xs)
    with reuse_quantized_weights(new):
        loss_new = new(xs)
    assert len(ref_calls) == 3 and len(new_calls) == 1
    assert torch.equal(loss_ref, loss_new)
    loss_ref.backward()
    loss_new.backward()
    for (name, p_ref), p_new in zip(ref.named_parameters(), new.parameters()):
        assert p_ref.grad is not None and torch.allclose(p_ref.grad, p_new.grad, rtol=1e-5, atol=1e-7), name
    assert new.conv.weight_quantizer.alpha.grad.abs() > 0


def test_reuse_ends_with_the_block_and_nests():
    model = Shared()
    xs = [torch.randn(1, 3, 4, 4)]
    calls = _count_weight_quantizations(model)
    with reuse_quantized_weights(model):
        with reuse_quantized_weights(model):  # the inner block neither resets nor ends the outer one
            model(xs)
        model(xs)
        assert len(calls) == 1 and model.conv.weight_reuse
    assert model.conv.weight_reuse is None
    model(xs)
    model(xs)
    assert len(calls) == 3  # outside the block: every call quantizes


def test_a_changed_weight_is_seen_by_the_next_pass():
    """After an optimizer step (outside the block) the next pass quantizes the new weight."""
    torch.manual_seed(1)
    model = Shared()
    xs = [torch.randn(1, 3, 4, 4), torch.randn(1, 3, 2, 2)]
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    for _ in range(2):
        with reuse_quantized_weights(model):
            loss = model(xs)
        opt.zero_grad()
        loss.backward()  # a second pass over a reused (freed) graph would raise here
        opt.step()
    fresh = copy.deepcopy(model)
    with reuse_quantized_weights(model):
        assert torch.equal(model(xs), fresh(xs))
