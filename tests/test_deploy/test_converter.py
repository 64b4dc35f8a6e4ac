"""The deploy converter on small randomly initialised quantized detectors: every integer op against the
fake-quantized model, per-level BN tables, float islands, and the errors for models without an integer form."""
import pytest
import torch

from mmaqd.deploy.converter import convert_detector
from mmaqd.deploy.grids import ConversionError
from mmaqd.deploy.verify import agreement, exact_reference, fake_values, summarize
from tiny_models import FCOS_F8L8, FCOS_F8L8_ZL, FCOS_FP_ENDS, RETINA_F8L8, tiny_quantized


def _per_op_rows(model, net, x):
    rows, _ = summarize(agreement(model, net, x, per_op=True))
    return rows


def _check_per_op(rows, min_equal=99.5):
    """Every quantizer's values within one step of the fake model's, almost all identical."""
    for name, n, equal, within, worst in rows:
        assert n > 0
        assert within == 100.0 and worst <= 1, (name, within, worst)
        assert equal >= min_equal, (name, equal)


def _raw_predictions(model, head_convs, x):
    """The fake model's prediction conv outputs per conv, one per level (forward hooks)."""
    out = {n: [] for n in head_convs}
    hooks = [getattr(model.bbox_head, n).register_forward_hook(lambda m, i, o, n=n: out[n].append(o.detach()))
             for n in head_convs]
    with torch.no_grad():
        model(x, mode='tensor')
    for h in hooks:
        h.remove()
    return out


@pytest.mark.parametrize('bits', [4, 3, 2])
def test_fcos_each_integer_op_matches_the_fake_quantized_model(bits):
    model, x = tiny_quantized(FCOS_F8L8, bits=bits)
    conv = convert_detector(model)
    assert conv.kind == 'fcos' and conv.float_islands == []
    rows = _per_op_rows(model, conv.network, x)
    _check_per_op(rows)
    names = {r[0] for r in rows}
    # every activation quantizer of the model was compared: image, convs, adds (operands and sums)
    assert 'backbone.conv1.act_quantizer' in names and 'backbone.layer1.0.add.out_quantizer' in names
    assert 'bbox_head.conv_cls.act_quantizer' in names and 'neck.top_down_adds.0.b_quantizer' in names
    # the shared head convs ran once per FPN level, each level compared on its own
    assert sum(p.startswith('bbox_head.cls_convs.1.conv.act_quantizer#') for p in conv.network.probes) == 5


def test_fcos_prediction_accumulators_dequantize_to_the_fake_outputs():
    model, x = tiny_quantized(FCOS_F8L8)
    net = convert_detector(model).network
    fake = _raw_predictions(model, ['conv_cls', 'conv_reg', 'conv_centerness'], x)
    override = {net.probes[p]: v for p, v in fake_values(model, net, x).items()}  # each op gets the fake inputs
    with torch.no_grad():
        real = net.dequantize(net(x, override=override))
    scales = [float(s.scale.detach()) for s in model.bbox_head.scales]
    for name, conv_name in (('cls_score', 'conv_cls'), ('bbox_pred', 'conv_reg'), ('centerness', 'conv_centerness')):
        assert len(real[name]) == 5
        for level, (ours, ref) in enumerate(zip(real[name], fake[conv_name])):
            if name == 'bbox_pred':
                ref = ref * scales[level]  # FCOS's per-level Scale, folded into the dequantization
            assert ours.shape == ref.shape
            tol = 1e-3 * float(ref.abs().max()) + 1e-6
            assert float((ours - ref).abs().max()) <= tol, (name, level)


def test_retinanet_each_integer_op_matches_the_fake_quantized_model():
    model, x = tiny_quantized(RETINA_F8L8)
    conv = convert_detector(model)
    assert conv.kind == 'retinanet' and conv.network.output_names == ['cls_score', 'bbox_pred']
    _check_per_op(_per_op_rows(model, conv.network, x))


def test_multi_level_bn_becomes_per_level_tables_behind_shared_codes():
    model, x = tiny_quantized(FCOS_F8L8)
    conv = convert_detector(model)
    layer = conv.network.layers['bbox_head__cls_convs__0__conv']
    assert layer.spec['num_levels'] == 5
    assert layer.weight.dtype == torch.uint8 and layer.weight.shape[0] == 64  # one packed weight for all levels
    assert layer.bias_0.shape == (5, 64) and layer.m0_0.shape == (5, 64)
    for level in range(1, 5):  # each level's BN gives its own bias and multipliers
        assert not torch.equal(layer.bias_0[0], layer.bias_0[level])
        assert not torch.equal(layer.m0_0[0], layer.m0_0[level])
    # the tables are those of the level's own BN: using level 0's tables at level 3 breaks the agreement there
    layer.bias_0[3].copy_(layer.bias_0[0])
    layer.m0_0[3].copy_(layer.m0_0[0])
    layer.shift_0[3].copy_(layer.shift_0[0])
    rows = {r[0]: r for r in _per_op_rows(model, conv.network, x)}
    assert rows['bbox_head.cls_convs.1.conv.act_quantizer'][4] > 1


def test_weights_are_packed_at_their_bit_width():
    model, _ = tiny_quantized(FCOS_F8L8, bits=2)
    conv = convert_detector(model)
    inner = conv.network.layers['bbox_head__cls_convs__0__conv']
    assert inner.spec['w_bits'] == 2 and inner.weight.shape == (64, 64 * 9 // 4)  # four 2-bit codes per byte
    first = conv.network.layers['backbone__conv1']
    assert first.spec['w_bits'] == 8 and first.weight.shape == (32, 3 * 49)


def test_full_precision_first_and_last_layers_are_float_islands():
    model, x = tiny_quantized(FCOS_FP_ENDS)
    conv = convert_detector(model)
    assert sorted(conv.float_islands) == ['backbone.conv1', 'bbox_head.conv_centerness', 'bbox_head.conv_cls',
                                          'bbox_head.conv_reg']
    _check_per_op(_per_op_rows(model, conv.network, x))
    with torch.no_grad():
        out = conv.network(x)
    assert all(t.is_floating_point() for t in out['cls_score'])


def test_a_full_precision_model_is_refused():
    model, _ = tiny_quantized('configs/fcos/fcos_r18-c32_fpn_bn-head_synth.py')
    with pytest.raises(ConversionError, match='no quantizers'):
        convert_detector(model)


def test_uninitialised_quantizers_are_refused_by_name():
    model, _ = tiny_quantized(FCOS_F8L8, init=False)
    with pytest.raises(ConversionError, match=r'backbone\.conv1\.act_quantizer: .*never initialised'):
        convert_detector(model)


def test_lqnet_levels_have_no_integer_form():
    model, _ = tiny_quantized('configs/aqd/ablations/fcos_r18-c32_fpn_aqd-w2a2-lqnet_synth.py')
    with pytest.raises(ConversionError, match=r'backbone\.layer1\.0\.conv1.*LQNet'):
        convert_detector(model)


def test_fqn_models_are_refused():
    model, _ = tiny_quantized('configs/fqn/retinanet_r18-c32_fpn_fqn-w4a4_synth.py')
    with pytest.raises(ConversionError, match='FQNAffine|QConvBN'):
        convert_detector(model)


def test_output_quantized_prediction_convs_are_refused():
    """FQN's output quantizer (QuantConfig.output_layers) has no integer form in mmaqd.deploy."""
    model, _ = tiny_quantized(FCOS_F8L8, cfg_options={'model.quant_cfg.output_layers': ['bbox_head.conv_cls']})
    assert model.bbox_head.conv_cls.out_quantizer is not None
    with pytest.raises(ConversionError, match=r'bbox_head\.conv_cls: QConv2d with FQN-style output quantization'):
        convert_detector(model)


def test_unquantized_adds_are_refused():
    model, _ = tiny_quantized(FCOS_F8L8, cfg_options={'model.quant_cfg.quantize_adds': False})
    with pytest.raises(ConversionError, match=r'backbone\.layer1\.0\.add.*quantize_adds=True'):
        convert_detector(model)


@pytest.mark.parametrize('config', [FCOS_F8L8, RETINA_F8L8, FCOS_F8L8_ZL])
def test_integer_model_end_to_end_equals_the_exact_real_valued_model(config):
    """Run end to end (no teacher forcing), the integer model matches the fake-quantized model evaluated in float64
    with its exact grid weights: what remains is the 2^-31 error of the multipliers, not an accumulating error."""
    model, x = tiny_quantized(config)
    net = convert_detector(model).network
    rows, _ = summarize(agreement(exact_reference(model), net, x.double()))
    _check_per_op(rows, min_equal=99.9)
