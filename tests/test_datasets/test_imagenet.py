"""ImageNet dataset: folder and list layouts and every data error."""
import os
import os.path as osp

import numpy as np
import pytest
import torch
from PIL import Image

from auglocal_det.datasets import ImageNet
from auglocal_det.registry import DATASETS

CLASSES = ('n01', 'n02', 'n03')


def _jpeg(path, size=(20, 16), value=0):
    os.makedirs(osp.dirname(path), exist_ok=True)
    arr = np.full((size[1], size[0], 3), value, np.uint8)
    arr[::2, ::3] = 255 - value
    Image.fromarray(arr).save(path, 'JPEG')


def make_folder_layout(root, classes=CLASSES, per_class=(3, 2)):
    """train/<cls>/*.JPEG and val/<cls>/*.JPEG plus meta lists."""
    lines = {'train': [], 'val': []}
    for split, num in zip(('train', 'val'), per_class):
        for label, name in enumerate(classes):
            for i in range(num):
                rel = f'{name}/{name}_{i}.JPEG'
                _jpeg(osp.join(root, split, rel), value=40 * label)
                lines[split].append(f'{rel} {label}')
    os.makedirs(osp.join(root, 'meta'), exist_ok=True)
    for split, split_lines in lines.items():
        with open(osp.join(root, 'meta', f'{split}.txt'), 'w') as f:
            f.write('\n'.join(split_lines) + '\n')
    return root


@pytest.fixture
def root(tmp_path):
    return make_folder_layout(str(tmp_path / 'imagenet'))


def test_folder_layout(root):
    train = DATASETS.build(
        dict(type='ImageNet', data_root=root, split='train'))
    val = ImageNet(data_root=root, split='val', num_classes=3)
    assert train.metainfo['classes'] == CLASSES
    assert val.metainfo['classes'] == CLASSES
    assert len(train) == 9 and len(val) == 6
    info = train.get_data_info(4)
    assert info['gt_label'] == 1
    assert info['img_path'] == osp.join(root, 'train', 'n02', 'n02_1.JPEG')
    assert [val.get_data_info(i)['gt_label'] for i in range(6)] == \
        [0, 0, 1, 1, 2, 2]
    assert train.get_cat_ids(8) == [2]
    assert 'number of samples: 9' in repr(train)


def test_list_layout_matches_folder_layout(root):
    folder = ImageNet(data_root=root, split='val')
    listed = ImageNet(data_root=root, split='val', ann_file='meta/val.txt')
    assert listed.metainfo['classes'] == CLASSES  # from train/ folders
    assert [listed.get_data_info(i) for i in range(len(listed))] == \
        [folder.get_data_info(i) for i in range(len(folder))]


def test_list_layout_without_train_folders(tmp_path):
    root = str(tmp_path / 'lists')
    _jpeg(osp.join(root, 'val', 'a.JPEG'))
    _jpeg(osp.join(root, 'val', 'b.JPEG'))
    os.makedirs(osp.join(root, 'meta'))
    with open(osp.join(root, 'meta', 'val.txt'), 'w') as f:
        f.write('a.JPEG 0\nb.JPEG 4\n')
    ds = ImageNet(data_root=root, split='val', ann_file='meta/val.txt',
                  num_classes=5)
    assert ds.metainfo['classes'] == ('0', '1', '2', '3', '4')
    assert ds.get_data_info(1)['gt_label'] == 4


def test_classes_argument_and_file(root, tmp_path):
    ds = ImageNet(data_root=root, split='val', classes=list(CLASSES))
    assert ds.metainfo['classes'] == CLASSES
    path = tmp_path / 'classes.txt'
    path.write_text('\n'.join(CLASSES) + '\n')
    ds = ImageNet(data_root=root, split='val', classes=str(path))
    assert ds.metainfo['classes'] == CLASSES
    with pytest.raises(ValueError,
                       match=r"\[n03\] in .*train. are not in the class"):
        ImageNet(data_root=root, split='train', classes=['n01', 'n02'])
    with pytest.raises(FileNotFoundError, match='nope.txt'):
        ImageNet(data_root=root, split='train', classes='nope.txt')


def test_pipeline_output(root):
    ds = ImageNet(
        data_root=root,
        split='train',
        pipeline=[
            dict(type='LoadImageTensor'),
            dict(type='RandomResizedCropTensor', size=8),
            dict(type='RandomFlipTensor'),
            dict(type='PackClsInputs'),
        ])
    out = ds[5]
    assert out['inputs'].shape == (3, 8, 8)
    assert out['inputs'].dtype == torch.uint8
    assert out['data_samples'].gt_label.tolist() == [1]
    assert out['data_samples'].img_path.endswith('n02_2.JPEG')


# ---------------------------------------------------------------- errors
def test_missing_root_fails_at_build(tmp_path):
    missing = str(tmp_path / 'no_such_imagenet')
    with pytest.raises(FileNotFoundError) as err:
        DATASETS.build(
            dict(type='ImageNet', data_root=missing, split='train'))
    msg = str(err.value)
    assert missing in msg and 'tools/demo.py' in msg
    assert 'train/<wnid>' in msg


def test_missing_split_folder(root):
    with pytest.raises(FileNotFoundError, match=r"test'? does not exist"):
        ImageNet(data_root=root, split='test')


def test_class_missing_from_val(root):
    for name in os.listdir(osp.join(root, 'val', 'n02')):
        os.remove(osp.join(root, 'val', 'n02', name))
    os.rmdir(osp.join(root, 'val', 'n02'))
    with pytest.raises(FileNotFoundError) as err:
        ImageNet(data_root=root, split='val')
    assert '[n02] missing from' in str(err.value)
    assert osp.join(root, 'val') in str(err.value)


def test_val_class_not_in_train(root):
    _jpeg(osp.join(root, 'val', 'n99', 'x.JPEG'))
    with pytest.raises(ValueError) as err:
        ImageNet(data_root=root, split='val')
    assert '[n99]' in str(err.value)
    assert osp.join(root, 'val') in str(err.value)


def test_empty_class_folder(root):
    os.makedirs(osp.join(root, 'val', 'n03', 'sub'))
    for name in os.listdir(osp.join(root, 'val', 'n03')):
        if name.endswith('.JPEG'):
            os.remove(osp.join(root, 'val', 'n03', name))
    with pytest.raises(FileNotFoundError, match='has no images'):
        ImageNet(data_root=root, split='val')


def test_empty_split_and_flat_val(tmp_path):
    root = make_folder_layout(str(tmp_path / 'r'), per_class=(1, 1))
    empty = osp.join(root, 'empty')
    os.makedirs(empty)
    with pytest.raises(FileNotFoundError, match='no class folders'):
        ImageNet(data_root=root, split='empty')
    flat = osp.join(root, 'flat')
    _jpeg(osp.join(flat, 'ILSVRC2012_val_00000001.JPEG'))
    with pytest.raises(FileNotFoundError, match='meta/flat.txt'):
        ImageNet(data_root=root, split='flat')


def test_wrong_class_count(root):
    with pytest.raises(ValueError, match='num_classes=1000'):
        ImageNet(data_root=root, split='train', num_classes=1000)


def test_bad_list_files(root):
    with pytest.raises(FileNotFoundError, match='meta/none.txt'):
        ImageNet(data_root=root, split='val', ann_file='meta/none.txt')
    bad = osp.join(root, 'meta', 'bad.txt')
    with open(bad, 'w') as f:
        f.write('n01/n01_0.JPEG 0\nn01/n01_1.JPEG zero\n')
    with pytest.raises(ValueError, match=r'bad.txt:2'):
        ImageNet(data_root=root, split='val', ann_file='meta/bad.txt')
    with open(bad, 'w') as f:
        f.write('n01/n01_0.JPEG 7\n')
    with pytest.raises(ValueError, match=r'bad.txt:1: label 7 out of range'):
        ImageNet(data_root=root, split='val', ann_file='meta/bad.txt')
    with open(bad, 'w') as f:
        f.write('\n')
    with pytest.raises(ValueError, match='has no images'):
        ImageNet(data_root=root, split='val', ann_file='meta/bad.txt')


def test_unreadable_image_fails_at_load(root):
    path = osp.join(root, 'val', 'n01', 'n01_1.JPEG')
    with open(path, 'wb') as f:
        f.write(b'not an image at all')
    ds = ImageNet(
        data_root=root,
        split='val',
        test_mode=True,
        pipeline=[dict(type='LoadImageTensor')])
    ds[0]  # the other images load
    with pytest.raises(OSError, match='n01_1.JPEG'):
        ds[1]
    os.remove(path)
    with pytest.raises(FileNotFoundError, match='n01_1.JPEG'):
        ds[1]
