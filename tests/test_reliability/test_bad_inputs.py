"""Wrong inputs stop with a message that names the file, key or option.

One test per row of the table in docs/reliability.md; the tests print the
messages quoted there (``pytest -s``). COCO files, a full disk, a
non-finite loss and a resume with another batch size have their own test
files.
"""
import os
import os.path as osp

import pytest
import torch
from common_utils import tiny_auglocal_model
from PIL import Image
from reliability_utils import run_train

from auglocal_det.datasets import ImageNet, LoadImageTensor
from auglocal_det.models.backbones.pretrained import check_backbone_checkpoint
from auglocal_det.registry import MODELS


def _image(path: str, size: int = 8) -> None:
    os.makedirs(osp.dirname(path), exist_ok=True)
    Image.new('RGB', (size, size), (200, 30, 30)).save(path, 'JPEG')


def _imagenet(root: str, train=('a', 'b'), val=('a', 'b'), empty=()):
    for split, classes in (('train', train), ('val', val)):
        for name in classes:
            folder = osp.join(root, split, name)
            os.makedirs(folder, exist_ok=True)
            if name not in empty:
                _image(osp.join(folder, f'{name}_0.JPEG'))


def _raises(exc_type, fn, *args, **kwargs) -> str:
    with pytest.raises(exc_type) as info:
        fn(*args, **kwargs)
    print(f'{type(info.value).__name__}: {info.value}')
    return str(info.value)


def test_corrupt_image(tmp_path):
    path = str(tmp_path / 'n0001' / 'broken.JPEG')
    os.makedirs(osp.dirname(path))
    with open(path, 'wb') as f:
        f.write(b'\xff\xd8\xff\xe0 this is not a JPEG')
    message = _raises(OSError, LoadImageTensor(), dict(img_path=path))
    assert message.startswith(f'cannot decode image {path!r}')

    truncated = str(tmp_path / 'truncated.JPEG')
    _image(truncated, size=64)
    with open(truncated, 'rb') as f:
        data = f.read()
    with open(truncated, 'wb') as f:
        f.write(data[:len(data) // 3])
    message = _raises(OSError, LoadImageTensor(), dict(img_path=truncated))
    assert truncated in message and 'truncated' in message


def test_empty_class_folder(tmp_path):
    root = str(tmp_path)
    _imagenet(root, empty=('b', ))
    message = _raises(
        FileNotFoundError, ImageNet, data_root=root, split='train')
    assert osp.join(root, 'train', 'b') in message
    assert 'has no images' in message


def test_val_classes_not_in_train(tmp_path):
    root = str(tmp_path)
    _imagenet(root, val=('a', 'b', 'zebra'))
    message = _raises(ValueError, ImageNet, data_root=root, split='val')
    assert "class folder(s) [zebra] in" in message
    assert osp.join(root, 'val') in message


def test_missing_data_root(tmp_path):
    message = _raises(
        FileNotFoundError,
        ImageNet,
        data_root=str(tmp_path / 'nowhere'),
        split='train')
    assert str(tmp_path / 'nowhere') in message and 'does not exist' in message


def test_missing_data_root_from_the_command_line(tiny_config, tmp_path):
    """tools/train.py prints one line naming the path and the option, no
    traceback, and exits with status 1."""
    missing = str(tmp_path / 'no_imagenet')
    proc = run_train(
        tiny_config, str(tmp_path / 'work'), '--cfg-options',
        f'train_dataloader.dataset.data_root={missing}',
        f'val_dataloader.dataset.data_root={missing}')
    print(proc.stderr[-2000:])
    assert proc.returncode == 1
    assert f"error: ImageNet: data root '{missing}'" in proc.stderr
    assert 'train_dataloader.dataset.data_root' in proc.stderr
    assert 'Traceback' not in proc.stderr


def _resnet(depth: int):
    return MODELS.build(
        dict(type='LocalResNet', depth=depth, base_channels=8))


def test_backbone_of_another_depth(tmp_path):
    path = str(tmp_path / 'backbone.pth')
    torch.save(dict(state_dict=_resnet(18).state_dict(), meta={}), path)
    message = _raises(ValueError, check_backbone_checkpoint, path,
                      _resnet(34))
    assert f'pretrained backbone {path!r} does not match' in message
    assert 'The file holds ResNet-18' in message
    assert 'model.backbone.init_cfg.checkpoint' in message


def test_backbone_of_another_depth_in_a_detector_config(tmp_path):
    """The check runs when the backbone initialises its weights (what the
    Runner does for the Mask R-CNN configs), before MMEngine's partial,
    warning-only load."""
    path = str(tmp_path / 'backbone.pth')
    torch.save(dict(state_dict=_resnet(18).state_dict(), meta={}), path)
    backbone = MODELS.build(
        dict(
            type='LocalResNet',
            depth=34,
            base_channels=8,
            init_cfg=dict(type='Pretrained', checkpoint=path)))
    message = _raises(ValueError, backbone.init_weights)
    assert 'The file holds ResNet-18' in message

    ok = MODELS.build(
        dict(
            type='LocalResNet',
            depth=18,
            base_channels=8,
            init_cfg=dict(type='Pretrained', checkpoint=path)))
    ok.init_weights()  # the right file loads


def test_full_checkpoint_instead_of_exported_backbone(tmp_path):
    path = str(tmp_path / 'epoch_200.pth')
    state = {f'backbone.{k}': v for k, v in _resnet(34).state_dict().items()}
    state['aux_heads.0.fc.weight'] = torch.zeros(2, 2)
    torch.save(
        dict(state_dict=state, optimizer={}, message_hub={}, meta={}), path)
    message = _raises(ValueError, check_backbone_checkpoint, path,
                      _resnet(34))
    assert 'is a full training checkpoint' in message
    assert 'tools/model_converters/export_backbone.py' in message


def _classifier(**kwargs):
    return MODELS.build(tiny_auglocal_model(**{'num_classes': 3, **kwargs}))


def test_aux_depth_larger_than_the_layers_that_follow():
    message = _raises(
        ValueError,
        _classifier,
        aux_head=dict(type='AugLocalAuxHead', depth=12))
    assert message.startswith(
        'AugLocalAuxHead: depth=12 (model.aux_head.depth) is larger than '
        'the 9 local layers')
    _classifier(aux_head=dict(type='AugLocalAuxHead', depth=9))  # allowed


@pytest.mark.parametrize('head, start', [
    (dict(depth=0),
     'depth=0 (model.aux_head.depth) must be at least 1'),
    (dict(depth=2, widen_factor=0),
     'widen_factor=0 (model.aux_head.widen_factor) must be positive'),
    (dict(depth=2, widen_factor=0.1),
     'widen_factor=0.1 (model.aux_head.widen_factor) leaves no channel in '
     'the auxiliary copy of '),
])
def test_aux_depth_and_widen_factor_name_their_keys(head, start):
    message = _raises(
        ValueError, _classifier, aux_head=dict(type='AugLocalAuxHead', **head))
    assert message.startswith(f'AugLocalAuxHead: {start}')


def test_split_points_out_of_range():
    message = _raises(ValueError, _classifier, split_points=[3, 40])
    assert 'split_points' in message and '[3, 40]' in message
    message = _raises(ValueError, _classifier, split_points=[5, 3])
    assert 'split_points' in message


def test_16_bit_images_are_scaled_to_8_bits(tmp_path):
    """A 16-bit RGB PNG and a 16-bit grey PNG decode to uint8 in 0..255
    (round(v / 257)), like their 8-bit versions; before, they came out as
    uint16 and were normalised to values near 600."""
    import cv2
    import numpy as np
    rgb = str(tmp_path / 'rgb16.png')
    value = np.array([39321, 0, 65535], dtype=np.uint16)  # R, G, B
    assert cv2.imwrite(rgb, np.tile(value[::-1], (4, 5, 1)))  # BGR order
    grey = str(tmp_path / 'grey16.png')
    Image.fromarray(np.full((4, 5), 1000, dtype=np.uint16)).save(grey)
    assert Image.open(grey).mode.startswith('I;16')

    img = LoadImageTensor()(dict(img_path=rgb))['img']
    assert img.dtype == torch.uint8 and img.shape == (3, 4, 5)
    assert img[:, 0, 0].tolist() == [153, 0, 255]
    img = LoadImageTensor()(dict(img_path=grey))['img']
    assert img.dtype == torch.uint8 and img.shape == (3, 4, 5)
    assert img.unique().tolist() == [4]  # round(1000 / 257)
