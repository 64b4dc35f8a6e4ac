"""The bf16/fp32 twin of an integer network (the GPU speed baseline): the same graph, every output at its shape,
the weights the integer values (v + mu) of the artefact."""
import pytest
import torch

from mmaqd.deploy.converter import convert_detector
from mmaqd.deploy.float_twin import FloatTwin
from mmaqd.ops import unpack_codes
from tiny_models import FCOS_F8L8, tiny_quantized


@pytest.mark.parametrize('dtype', [torch.float32, torch.bfloat16])
def test_twin_runs_the_same_graph_in_float(dtype):
    model, x = tiny_quantized(FCOS_F8L8)
    net = convert_detector(model).network
    twin = FloatTwin(net, dtype)
    ours, theirs = net(x), twin(x)
    assert list(theirs) == net.output_names
    for name in net.output_names:
        assert [t.shape for t in theirs[name]] == [t.shape for t in ours[name]]
        assert all(t.dtype == dtype and torch.isfinite(t.float()).all() for t in theirs[name])
    # a conv's twin weight is its integer weight value 2c - q + mu, scaled by 1 / (max |v| sqrt(K))
    spec = next(s for s in net.layer_specs if s['type'] == 'conv')
    layer = net.layers[spec['name'].replace('.', '__')]
    k = spec['w_shape'][1] * spec['w_shape'][2] * spec['w_shape'][3]
    v = unpack_codes(layer.weight, spec['w_bits'], k).double() * 2 - (2 ** spec['w_bits'] - 1)
    v = v + layer.w_offset.double().view(-1, 1) / 2 ** spec['offset_frac_bits']
    v = v / (v.abs().max() * k ** 0.5)
    got = twin.weights[spec['name'].replace('.', '__')].double().reshape(v.shape)
    assert torch.allclose(got, v, rtol=1e-2 if dtype == torch.bfloat16 else 1e-6)
