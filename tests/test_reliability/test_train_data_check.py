"""The training data against the model: class counts of the model and its
heads, and a last batch of one image, checked before the first
iteration."""
from types import SimpleNamespace

import pytest
import torch.nn as nn
from mmengine.config import Config
from reliability_utils import run_train
from torch.utils.data import DataLoader, Dataset

from auglocal_det.engine.hooks import TrainDataCheckHook, head_class_counts
from auglocal_det.errors import InputError


class _Data(Dataset):

    def __init__(self, num_classes: int, size: int = 8) -> None:
        self.metainfo = dict(classes=tuple(f'c{i}' for i in range(
            num_classes)))
        self.size = size

    def __len__(self):
        return self.size

    def __getitem__(self, idx):
        return idx


class _Head(nn.Module):

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.num_classes = num_classes


class _Detector(nn.Module):
    """The shape of mmdet's Mask R-CNN as far as the check looks."""

    def __init__(self, bbox: int, mask: int) -> None:
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
        self.rpn_head = _Head(1)
        self.roi_head = nn.Module()
        self.roi_head.bbox_head = _Head(bbox)
        self.roi_head.mask_head = _Head(mask)


def _runner(model, loader, dataset_cfg=None):
    cfg = Config(dict(train_dataloader=dict(dataset=dataset_cfg or {})))
    return SimpleNamespace(model=model, train_dataloader=loader, cfg=cfg)


def _raises(runner) -> str:
    with pytest.raises(InputError) as info:
        TrainDataCheckHook().before_train(runner)
    print(f'InputError: {info.value}')
    return str(info.value)


def test_classifier_num_classes_against_the_data():
    model = nn.Module()
    model.num_classes = 3
    loader = DataLoader(_Data(4), batch_size=4)
    message = _raises(_runner(model, loader, dict(classes=list('abcd'))))
    assert message.startswith(
        'model.num_classes=3, but the training data set has 4 classes '
        '(train_dataloader.dataset.classes: c0, c1, c2, c3); labels from 3 '
        'on would make the loss fail')
    model.num_classes = 6
    message = _raises(_runner(model, loader))
    assert '2 of its outputs would never see a label' in message
    model.num_classes = 4
    TrainDataCheckHook().before_train(_runner(model, loader))


def test_every_detector_head_against_the_data():
    detector = _Detector(bbox=5, mask=80)
    assert head_class_counts(detector) == [
        ('model.roi_head.bbox_head.num_classes', 5),
        ('model.roi_head.mask_head.num_classes', 80)
    ]
    loader = DataLoader(_Data(5), batch_size=2)
    message = _raises(
        _runner(detector, loader, dict(metainfo=dict(classes=list('abcde')))))
    assert message.startswith(
        'model.roi_head.mask_head.num_classes=80, but the training data set '
        'has 5 classes (train_dataloader.dataset.metainfo.classes: ')
    TrainDataCheckHook().before_train(
        _runner(_Detector(bbox=5, mask=5), loader))


def test_last_batch_of_one_image():
    model = _Detector(bbox=2, mask=2)
    message = _raises(_runner(model, DataLoader(_Data(2, size=9),
                                                batch_size=4)))
    assert message.startswith(
        'the last training batch of every epoch would hold one image: 9 '
        'images with train_dataloader.batch_size=4 leaves 1')
    assert 'train_dataloader.drop_last=True' in message
    hook = TrainDataCheckHook()
    hook.before_train(
        _runner(model, DataLoader(_Data(2, size=9), batch_size=4,
                                  drop_last=True)))
    hook.before_train(_runner(model, DataLoader(_Data(2, size=10),
                                                batch_size=4)))
    no_bn = _Detector(bbox=2, mask=2)
    no_bn.backbone = nn.Conv2d(3, 4, 3)
    hook.before_train(_runner(no_bn, DataLoader(_Data(2, size=9),
                                                batch_size=4)))
    frozen = _FrozenBN(bbox=2, mask=2).eval()  # mmdet's norm_eval=True
    hook.before_train(_runner(frozen, DataLoader(_Data(2, size=9),
                                                 batch_size=4)))
    assert not frozen.training  # the model's mode is left as it was


class _FrozenBN(_Detector):

    def train(self, mode: bool = True):
        super().train(mode)
        self.backbone[1].eval()
        return self


def test_train_py_stops_before_the_first_iteration(tiny_config, tmp_path):
    """Before the check, model.num_classes=3 on 4 classes failed in the
    loss with a traceback; now one line names both keys."""
    result = run_train(tiny_config, str(tmp_path / 'run'), '--cfg-options',
                       'model.num_classes=3', timeout=120)
    assert result.returncode == 1, result.stderr[-2000:]
    line = result.stderr.strip().splitlines()[0]
    print(line)
    assert line.startswith('error: model.num_classes=3, but the training '
                           'data set has 4 classes '
                           '(train_dataloader.dataset.classes: ')
