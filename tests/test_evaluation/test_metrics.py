"""Accuracy and per-layer auxiliary accuracy on hand-made predictions."""
import pytest
import torch
from mmengine.evaluator import Evaluator

from auglocal_det.evaluation import (
    Accuracy,
    LayerwiseAccuracy,
    parse_layerwise_metrics,
)
from auglocal_det.registry import METRICS
from auglocal_det.structures import ClsDataSample


def _sample(label, scores=None, pred=None, aux=None):
    sample = ClsDataSample().set_gt_label(label)
    if scores is not None:
        sample.set_pred_score(torch.tensor(scores))
    if pred is not None:
        sample.set_pred_label(pred)
    if aux is not None:
        sample.set_aux_pred_labels(aux)
    return sample


SCORES = [
    # label 0: top-1 right
    (0, [0.7, 0.1, 0.1, 0.05, 0.03, 0.02]),
    # label 1: second best -> top-2..5 right
    (1, [0.5, 0.3, 0.1, 0.05, 0.03, 0.02]),
    # label 5: last -> only top-6
    (5, [0.3, 0.25, 0.2, 0.15, 0.06, 0.04]),
    # label 2: third
    (2, [0.3, 0.5, 0.1, 0.05, 0.03, 0.02]),
]


def test_topk_accuracy_values():
    metric = METRICS.build(dict(type='Accuracy', topk=(1, 2, 5)))
    metric.dataset_meta = dict(classes=tuple('abcdef'))
    metric.process({}, [_sample(y, s).to_dict() for y, s in SCORES])
    results = metric.evaluate(4)
    assert results == pytest.approx({
        'accuracy/top1': 25.,
        'accuracy/top2': 50.,
        'accuracy/top5': 75.
    })


def test_topk_larger_than_num_classes():
    metric = Accuracy(topk=(1, 5))
    metric.process({}, [_sample(2, [0.2, 0.5, 0.3]), _sample(1, [1., 0, 0])])
    assert metric.evaluate(2) == {'accuracy/top1': 0., 'accuracy/top5': 100.}


def test_labels_only_give_top1():
    metric = Accuracy()
    metric.process({}, [_sample(1, pred=1), _sample(0, pred=1)])
    assert metric.evaluate(2) == {'accuracy/top1': 50.}


def test_accuracy_errors():
    with pytest.raises(ValueError, match='topk'):
        Accuracy(topk=0)
    metric = Accuracy()
    with pytest.raises(KeyError, match='gt_label'):
        metric.process({}, [ClsDataSample().set_pred_label(1)])


def test_layerwise_accuracy_through_evaluator():
    samples = [
        _sample(0, [0.9, 0.1], aux=[0, 1, 0]),
        _sample(1, [0.2, 0.8], aux=[0, 1, 1]),
        _sample(1, [0.6, 0.4], aux=[1, 0, 1]),
        _sample(0, [0.3, 0.7], aux=[0, 0, -1]),
    ]
    evaluator = Evaluator([
        dict(type='Accuracy', topk=(1, )),
        dict(type='LayerwiseAccuracy')
    ])
    evaluator.dataset_meta = dict(classes=('a', 'b'))
    evaluator.process(samples)
    results = evaluator.evaluate(4)
    assert results == pytest.approx({
        'accuracy/top1': 50.,
        'aux_top1/l00': 75.,
        'aux_top1/l01': 50.,
        'aux_top1/l02': 75.,
    })
    assert parse_layerwise_metrics(results) == [(0, 75.), (1, 50.),
                                                (2, 75.)]


def test_layerwise_accuracy_skips_heads_without_classifier():
    # a head without a classifier predicts -1 (see LocalImageClassifier)
    metric = LayerwiseAccuracy()
    metric.process({}, [_sample(0, aux=[0, -1, 1]), _sample(1, aux=[1, -1,
                                                                    1])])
    assert metric.evaluate(2) == {'aux_top1/l00': 100., 'aux_top1/l02': 50.}


def test_layerwise_accuracy_without_aux_heads():
    metric = LayerwiseAccuracy()
    metric.process({}, [_sample(0, [1., 0.]).to_dict()])
    assert metric.evaluate(1) == {}


def test_layerwise_accuracy_names_for_many_heads():
    metric = LayerwiseAccuracy(prefix='aux')
    metric.process({}, [_sample(1, aux=[1] * 120)])
    results = metric.evaluate(1)
    assert list(results)[0] == 'aux/l000' and len(results) == 120
    metric.process({}, [_sample(1, aux=[1, 1]), _sample(1, aux=[1])])
    with pytest.raises(ValueError, match='different lengths'):
        metric.evaluate(2)
