"""Tensor transforms of the classification pipeline."""
import io

import numpy as np
import pytest
import torch
from mmengine.dataset import Compose
from PIL import Image

from auglocal_det.datasets import (
    CenterCropTensor,
    LoadImageTensor,
    PackClsInputs,
    RandomFlipTensor,
    RandomResizedCropTensor,
    ResizeEdgeTensor,
    decode_image_bytes,
)
from auglocal_det.registry import TRANSFORMS
from auglocal_det.structures import ClsDataSample


def _encode(arr, fmt):
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, fmt)
    return buf.getvalue()


@pytest.fixture
def image():
    rng = np.random.default_rng(0)
    return rng.integers(0, 255, (30, 40, 3), dtype=np.uint8)


@pytest.mark.parametrize('fmt', ['JPEG', 'PNG', 'BMP'])
def test_decode_formats(image, fmt):
    img = decode_image_bytes(_encode(image, fmt))
    assert img.dtype == torch.uint8 and img.shape == (3, 30, 40)
    if fmt != 'JPEG':  # lossless: exact RGB order
        assert torch.equal(img, torch.from_numpy(image).permute(2, 0, 1))


def test_decode_grey_and_rgba_to_rgb(image):
    grey = decode_image_bytes(_encode(image[..., 0], 'PNG'))
    assert grey.shape == (3, 30, 40)
    rgba = np.dstack([image, np.full(image.shape[:2], 255, np.uint8)])
    assert decode_image_bytes(_encode(rgba, 'PNG')).shape == (3, 30, 40)


def test_decode_error_names_path():
    with pytest.raises(OSError, match='some/file.JPEG'):
        decode_image_bytes(b'\xff\xd8garbage', 'some/file.JPEG')


def test_load(tmp_path, image):
    path = tmp_path / 'x.JPEG'
    path.write_bytes(_encode(image, 'JPEG'))
    out = TRANSFORMS.build(dict(type='LoadImageTensor'))(
        dict(img_path=str(path)))
    assert out['img'].shape == (3, 30, 40)
    assert out['ori_shape'] == out['img_shape'] == (30, 40)
    assert 'LoadImageTensor' in repr(LoadImageTensor())


def test_random_resized_crop():
    np.random.seed(0)
    t = RandomResizedCropTensor(size=(12, 16), scale=(0.2, 0.9))
    img = torch.randint(0, 255, (3, 50, 70), dtype=torch.uint8)
    for _ in range(20):
        top, left, h, w = t.crop_box(50, 70)
        assert 0 <= top and top + h <= 50 and 0 <= left and left + w <= 70
        assert 0.2 * 3500 * 0.8 <= h * w <= 0.9 * 3500 * 1.2
    out = t(dict(img=img))
    assert out['img'].shape == (3, 12, 16)
    assert out['img'].dtype == torch.uint8
    assert out['img_shape'] == (12, 16)
    # an impossible aspect ratio falls back to a centred crop
    fallback = RandomResizedCropTensor(8, scale=(1., 1.), ratio=(3., 3.))
    assert fallback.crop_box(50, 70) == (13, 0, 23, 70)
    with pytest.raises(ValueError, match='scale'):
        RandomResizedCropTensor(8, scale=(0.5, 2.0))


def test_flip():
    img = torch.arange(6, dtype=torch.uint8).reshape(1, 2, 3)
    flipped = RandomFlipTensor(prob=1.)(dict(img=img))
    assert flipped['flip'] and torch.equal(flipped['img'], img.flip(-1))
    kept = RandomFlipTensor(prob=0.)(dict(img=img))
    assert not kept['flip'] and torch.equal(kept['img'], img)
    with pytest.raises(ValueError, match='prob'):
        RandomFlipTensor(prob=2)


def test_resize_edge_and_center_crop():
    img = torch.randint(0, 255, (3, 50, 100), dtype=torch.uint8)
    out = ResizeEdgeTensor(scale=20)(dict(img=img))
    assert out['img'].shape == (3, 20, 40) and out['img_shape'] == (20, 40)
    out = ResizeEdgeTensor(scale=20, edge='long')(dict(img=img))
    assert out['img'].shape == (3, 10, 20)
    out = CenterCropTensor(16)(dict(img=img))
    assert out['img'].shape == (3, 16, 16)
    assert torch.equal(out['img'], img[:, 17:33, 42:58])


def test_pack_and_full_pipelines(tmp_path, image):
    path = tmp_path / 'x.JPEG'
    path.write_bytes(_encode(image, 'JPEG'))
    train = Compose([
        dict(type='LoadImageTensor'),
        dict(type='RandomResizedCropTensor', size=24),
        dict(type='RandomFlipTensor', prob=0.5),
        dict(type='PackClsInputs'),
    ])
    test = Compose([
        dict(type='LoadImageTensor'),
        dict(type='ResizeEdgeTensor', scale=28),
        dict(type='CenterCropTensor', size=24),
        dict(type='PackClsInputs'),
    ])
    for pipeline in (train, test):
        out = pipeline(dict(img_path=str(path), gt_label=3))
        assert set(out) == {'inputs', 'data_samples'}
        assert out['inputs'].shape == (3, 24, 24)
        assert out['inputs'].dtype == torch.uint8
        assert out['inputs'].is_contiguous()
        sample = out['data_samples']
        assert isinstance(sample, ClsDataSample)
        assert sample.gt_label.tolist() == [3]
        assert sample.img_shape == (24, 24)
        assert sample.ori_shape == (30, 40)
    with pytest.raises(KeyError, match='loading transform'):
        PackClsInputs()(dict(gt_label=1))
