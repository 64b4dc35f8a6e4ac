"""Forward and backward of the BN-head detectors (AQD, arXiv 2007.06919v1, section 4.3: conv -> BN -> ReLU heads) on
tiny inputs."""
import os.path as osp

import pytest
import torch
from mmdet.structures import DetDataSample
from mmengine.structures import InstanceData

from conftest import ROOT

BENCH = ['configs/fcos/fcos_r18-c32_fpn_bn-head_synth.py', 'configs/retinanet/retinanet_r18-c32_fpn_bn-head_synth.py']


def _batch(num_boxes, size=128, num_classes=6, num_images=2):
    """``num_images`` random images, each with the first ``num_boxes`` of two boxes (BN needs 2 images at P7)."""
    boxes = torch.tensor([[10., 12., 70., 90.], [60., 20., 80., 40.]])[:num_boxes]
    inputs, samples = [], []
    for _ in range(num_images):
        sample = DetDataSample()
        sample.set_metainfo(dict(img_shape=(size, size), ori_shape=(size, size), pad_shape=(size, size),
                                 scale_factor=(1.0, 1.0), batch_input_shape=(size, size)))
        sample.gt_instances = InstanceData(bboxes=boxes.clone(), labels=torch.arange(num_boxes) % num_classes)
        samples.append(sample)
        inputs.append(torch.rand(3, size, size) * 255)
    return dict(inputs=inputs, data_samples=samples)


@pytest.mark.parametrize('config', BENCH)
@pytest.mark.parametrize('num_boxes', [0, 1, 2])
def test_train_step_forward_backward(config, num_boxes, cpu_model_builder):
    torch.manual_seed(0)
    model = cpu_model_builder(osp.join(ROOT, config))
    model.train()
    data = model.data_preprocessor(_batch(num_boxes), training=True)
    losses = model(**data, mode='loss')
    total, _ = model.parse_losses(losses)
    assert torch.isfinite(total)
    total.backward()
    # gradients reach the first layer of the backbone and the shared head convs
    assert model.backbone.conv1.weight.grad is not None
    assert model.bbox_head.cls_convs[0].conv.weight.grad.abs().sum() > 0
    if num_boxes == 0:  # no objects: only the classification loss drives the network
        assert all(float(sum(v) if isinstance(v, list) else v) == 0 for k, v in losses.items() if 'bbox' in k)


@pytest.mark.parametrize('config', BENCH)
def test_predict_outputs(config, cpu_model_builder):
    model = cpu_model_builder(osp.join(ROOT, config)).eval()
    data = model.data_preprocessor(_batch(1, num_images=1), training=False)
    with torch.no_grad():
        feats = model.extract_feat(data['inputs'])
        assert [f.shape[-1] for f in feats] == [16, 8, 4, 2, 1]  # strides 8..128 on a 128 px input
        results = model(**data, mode='predict')
    pred = results[0].pred_instances
    assert pred.bboxes.shape[1] == 4 and len(pred.bboxes) == len(pred.scores) == len(pred.labels)
