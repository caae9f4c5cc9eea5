"""The network's own classifiers, built from config dicts."""
import torch

import auglocal_det  # noqa: F401  (registers the components)
from auglocal_det.models.heads import GlobalPoolFcHead
from auglocal_det.registry import MODELS


def test_global_pool_fc_head():
    head = MODELS.build(
        dict(type='GlobalPoolFcHead', in_channels=8, num_classes=5))
    assert isinstance(head, GlobalPoolFcHead)
    assert sorted(head.state_dict()) == ['fc.bias', 'fc.weight']
    logits = head(torch.randn(2, 8, 3, 3))
    assert logits.shape == (2, 5)


def test_classifier_default_head():
    """Without a ``type`` the classifier's head is GlobalPoolFcHead, with
    the backbone's last width."""
    model = MODELS.build(
        dict(
            type='LocalImageClassifier',
            backbone=dict(type='LocalResNet', depth=18),
            rule='bp',
            num_classes=7))
    assert isinstance(model.head, GlobalPoolFcHead)
    assert model.head.fc.in_features == 512
    assert model.head.fc.out_features == 7
