"""Synthetic data generators: formats, determinism, regeneration."""
import hashlib
import json
import os
import os.path as osp

import numpy as np
import pytest
from PIL import Image

from auglocal_det.datasets import ImageNet
from auglocal_det.testing import (
    COCO_SHAPE_CLASSES,
    ensure_synthetic,
    generate_coco_shapes,
    generate_imagenet_shapes,
)


def _digest(root):
    h = hashlib.sha256()
    for folder, _, files in sorted(os.walk(root)):
        for name in sorted(files):
            with open(osp.join(folder, name), 'rb') as f:
                h.update(name.encode() + f.read())
    return h.hexdigest()


def test_imagenet_shapes_layout_and_determinism(tmp_path):
    classes = ('circle', 'stripes', 'triangle')
    a, b = str(tmp_path / 'a'), str(tmp_path / 'b')
    stamp = generate_imagenet_shapes(
        a, 4, 2, image_size=24, classes=classes, progress=False)
    generate_imagenet_shapes(
        b, 4, 2, image_size=24, classes=classes, progress=False)
    assert stamp['num_images'] == {'train': 12, 'val': 6}
    assert _digest(a) == _digest(b)
    img = Image.open(osp.join(a, 'train', 'stripes', 'stripes_00003.JPEG'))
    assert img.size == (24, 24) and img.mode == 'RGB'
    # both dataset layouts read it, with the same labels
    folder = ImageNet(data_root=a, split='train')
    listed = ImageNet(data_root=a, split='train', ann_file='meta/train.txt',
                      classes='meta/classes.txt')
    assert folder.metainfo['classes'] == classes
    assert [folder.get_data_info(i) for i in range(12)] == \
        [listed.get_data_info(i) for i in range(12)]
    # a different seed gives different images
    c = str(tmp_path / 'c')
    generate_imagenet_shapes(
        c, 4, 2, image_size=24, classes=classes, seed=1, progress=False)
    assert _digest(c) != _digest(a)


def test_imagenet_shapes_mean_colour_is_not_the_class(tmp_path):
    root = str(tmp_path / 'd')
    generate_imagenet_shapes(root, 12, 0, image_size=32, progress=False)
    means = {}
    for cls in os.listdir(osp.join(root, 'train')):
        folder = osp.join(root, 'train', cls)
        means[cls] = [
            np.asarray(Image.open(osp.join(folder, f))).mean((0, 1))
            for f in sorted(os.listdir(folder))
        ]
    # per-class spread of mean colour is as large as the spread of the
    # class averages: colour alone cannot tell the classes apart
    within = np.mean([np.std(m, axis=0).mean() for m in means.values()])
    between = np.std([np.mean(m, axis=0) for m in means.values()],
                     axis=0).mean()
    assert within > 2 * between


def test_ensure_synthetic_regenerates_only_on_change(tmp_path):
    root = str(tmp_path / 's')
    kwargs = dict(
        num_train_per_class=2, num_val_per_class=1, image_size=16,
        classes=('circle', 'square'), progress=False)
    _, made = ensure_synthetic(generate_imagenet_shapes, root, **kwargs)
    assert made
    _, made = ensure_synthetic(generate_imagenet_shapes, root, **kwargs)
    assert not made
    kwargs['num_train_per_class'] = 3
    stamp, made = ensure_synthetic(generate_imagenet_shapes, root, **kwargs)
    assert made and stamp['num_images']['train'] == 6
    assert len(os.listdir(osp.join(root, 'train', 'circle'))) == 3
    # never overwrites a folder it did not write
    other = tmp_path / 'other'
    other.mkdir()
    (other / 'precious.txt').write_text('x')
    with pytest.raises(FileExistsError, match='precious|not written'):
        generate_imagenet_shapes(str(other), 1, 1, 16, progress=False)


def test_coco_shapes(tmp_path):
    root = str(tmp_path / 'coco')
    stamp = generate_coco_shapes(
        root, num_train=5, num_val=3, image_size=64, seed=0,
        max_objects=3, progress=False)
    assert stamp['counts']['train']['images'] == 5
    for split, num in (('train', 5), ('val', 3)):
        with open(osp.join(root, 'annotations',
                           f'instances_{split}.json')) as f:
            coco = json.load(f)
        assert [c['id'] for c in coco['categories']] == \
            list(range(1, len(COCO_SHAPE_CLASSES) + 1))
        assert [c['name'] for c in coco['categories']] == \
            list(COCO_SHAPE_CLASSES)
        assert [im['id'] for im in coco['images']] == \
            list(range(1, num + 1))
        assert coco['annotations']
        ids = [a['id'] for a in coco['annotations']]
        assert ids == list(range(1, len(ids) + 1))
        for ann in coco['annotations']:
            assert ann['iscrowd'] == 0
            assert 1 <= ann['category_id'] <= len(COCO_SHAPE_CLASSES)
            poly = np.array(ann['segmentation'][0]).reshape(-1, 2)
            assert len(poly) >= 3
            x, y, w, h = ann['bbox']
            assert 0 <= x and 0 <= y and x + w <= 64 and y + h <= 64
            assert np.allclose(poly.min(0), [x, y], atol=0.02)
            assert 0 < ann['area'] <= w * h
        for im in coco['images']:
            img = Image.open(osp.join(root, split, im['file_name']))
            assert img.size == (im['width'], im['height']) == (64, 64)
    again = str(tmp_path / 'coco2')
    generate_coco_shapes(again, 5, 3, 64, seed=0, max_objects=3,
                         progress=False)
    assert _digest(again) == _digest(root)


def test_coco_shapes_load_with_pycocotools(tmp_path):
    coco_api = pytest.importorskip('pycocotools.coco')
    mask_api = pytest.importorskip('pycocotools.mask')
    root = str(tmp_path / 'coco')
    generate_coco_shapes(root, 3, 1, 64, progress=False)
    coco = coco_api.COCO(osp.join(root, 'annotations',
                                  'instances_train.json'))
    for ann in coco.loadAnns(coco.getAnnIds()):
        mask = coco.annToMask(ann)
        # rasterised polygon area agrees with the stored area
        assert abs(mask.sum() - ann['area']) < 0.25 * ann['area'] + 8
        # and the box of the rasterised mask with the stored box
        rle = mask_api.encode(np.asfortranarray(mask))
        np.testing.assert_allclose(mask_api.toBbox(rle), ann['bbox'],
                                   atol=1.5)
