"""MNIST and Fashion-MNIST from their IDX files, compressed or extracted."""
import gzip
import os

import numpy as np
import pytest
import torch

from auglocal_det.datasets import MNIST, FashionMNIST
from auglocal_det.datasets.small_images import read_idx
from auglocal_det.errors import InputError, InputFileNotFoundError
from auglocal_det.registry import DATASETS
from auglocal_det.testing import write_fashion_mnist, write_idx

FILES = ('train-images-idx3-ubyte', 'train-labels-idx1-ubyte',
         't10k-images-idx3-ubyte', 't10k-labels-idx1-ubyte')


@pytest.mark.parametrize('compressed', [True, False])
@pytest.mark.parametrize('split', ['train', 'test'])
@pytest.mark.parametrize('name', ['FashionMNIST', 'MNIST'])
def test_reads_exactly_what_was_written(tmp_path, compressed, split, name):
    written = write_fashion_mnist(
        str(tmp_path), num_train=12, num_test=7, seed=2,
        compressed=compressed)
    suffix = '.gz' if compressed else ''
    assert sorted(os.listdir(tmp_path)) == sorted(f + suffix for f in FILES)
    dataset = DATASETS.build(
        dict(type=name, data_root=str(tmp_path), split=split, pipeline=[]))
    images, labels = written[split]
    assert len(dataset) == len(labels)
    for i in range(len(dataset)):
        sample = dataset[i]
        assert sample['img'].dtype == torch.uint8
        assert sample['img'].shape == (1, 28, 28)
        assert torch.equal(sample['img'], torch.from_numpy(images[i]))
        assert sample['gt_label'] == labels[i]
    # writable: a pipeline may change a sample in place
    dataset[0]['img'].zero_()
    assert dataset[0]['img'].any()


def test_class_names_and_extracted_files_first(tmp_path):
    write_fashion_mnist(str(tmp_path), num_train=10, num_test=4, seed=0)
    fashion = FashionMNIST(str(tmp_path), split='test', pipeline=[])
    assert fashion.metainfo['classes'][0] == 'T-shirt/top'
    assert fashion.metainfo['classes'][9] == 'Ankle boot'
    assert MNIST(str(tmp_path), pipeline=[]).metainfo['classes'][3] == '3'
    # an extracted copy beside the .gz file is the one read
    extracted = write_fashion_mnist(
        str(tmp_path / 'other'), num_train=10, num_test=4, seed=5,
        compressed=False)
    for name in FILES:
        os.replace(tmp_path / 'other' / name, tmp_path / name)
    dataset = FashionMNIST(str(tmp_path), split='test', pipeline=[])
    assert torch.equal(dataset[1]['img'],
                       torch.from_numpy(extracted['test'][0][1]))


def test_balanced_subset_keeps_the_first_images_of_each_class(tmp_path):
    written = write_fashion_mnist(str(tmp_path), num_train=60, num_test=10)
    labels = written['train'][1]
    dataset = FashionMNIST(
        str(tmp_path), split='train', num_per_class=3, pipeline=[])
    assert len(dataset) == 30
    kept = [dataset.get_data_info(i)['img_index'] for i in range(30)]
    expected = sorted(
        int(i) for c in range(10) for i in np.flatnonzero(labels == c)[:3])
    assert kept == expected
    assert np.bincount([dataset[i]['gt_label'] for i in range(30)]).tolist() \
        == [3] * 10
    with pytest.raises(InputError, match='has only 6 images'):
        FashionMNIST(str(tmp_path), num_per_class=7, pipeline=[])
    with pytest.raises(InputError, match='num_per_class must be a positive'):
        FashionMNIST(str(tmp_path), num_per_class=0, pipeline=[])


def test_missing_file_names_the_file_layout_and_package(tmp_path):
    write_fashion_mnist(str(tmp_path), num_train=10, num_test=4)
    os.remove(tmp_path / 't10k-labels-idx1-ubyte.gz')
    assert len(FashionMNIST(str(tmp_path), pipeline=[])) == 10
    with pytest.raises(InputFileNotFoundError) as info:
        FashionMNIST(str(tmp_path), split='test', pipeline=[])
    message = str(info.value)
    assert str(tmp_path / 't10k-labels-idx1-ubyte.gz') in message
    assert 'data_root/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]' \
        in message
    assert 'apt-get install dataset-fashion-mnist' in message


@pytest.mark.parametrize('compressed', [True, False])
def test_truncated_file_is_named(tmp_path, compressed):
    write_fashion_mnist(
        str(tmp_path), num_train=10, num_test=4, compressed=compressed)
    path = tmp_path / ('train-images-idx3-ubyte' +
                       ('.gz' if compressed else ''))
    data = path.read_bytes()
    path.write_bytes(data[:len(data) * 2 // 3])
    with pytest.raises(InputError) as info:
        FashionMNIST(str(tmp_path), split='train', pipeline=[])
    message = str(info.value)
    assert str(path) in message
    assert 'apt-get install dataset-fashion-mnist' in message
    assert 'the file is truncated' in message


def test_read_idx_checks_the_header(tmp_path):
    path = str(tmp_path / 'x.idx')
    write_idx(path, np.arange(24, dtype=np.uint8).reshape(2, 3, 4))
    assert read_idx(path).tolist() == np.arange(24).reshape(2, 3, 4).tolist()
    with open(path, 'ab') as f:
        f.write(b'\0')
    with pytest.raises(ValueError, match='too long'):
        read_idx(path)
    with open(path, 'wb') as f:
        f.write(b'\x00\x00\x0d\x01\x00\x00\x00\x01abcd')  # float32 data
    with pytest.raises(ValueError, match='not an IDX file of unsigned'):
        read_idx(path)
    gz = str(tmp_path / 'empty.gz')
    with gzip.open(gz, 'wb'):
        pass
    with pytest.raises(ValueError, match='header empty'):
        read_idx(gz)


def test_images_and_labels_must_agree(tmp_path):
    write_fashion_mnist(str(tmp_path), num_train=10, num_test=4)
    write_idx(str(tmp_path / 't10k-labels-idx1-ubyte.gz'),
              np.zeros(3, np.uint8))
    with pytest.raises(InputError, match='holds 4 images but .* 3 labels'):
        FashionMNIST(str(tmp_path), split='test', pipeline=[])
    write_idx(str(tmp_path / 't10k-labels-idx1-ubyte.gz'),
              np.full(4, 10, np.uint8))
    with pytest.raises(InputError, match='label 10, outside 0..9'):
        FashionMNIST(str(tmp_path), split='test', pipeline=[])
    with pytest.raises(InputError, match='verify_md5 is not available'):
        FashionMNIST(str(tmp_path), verify_md5=True, pipeline=[])


def test_config_pipeline_gives_model_inputs(tmp_path):
    from mmengine.config import Config
    write_fashion_mnist(str(tmp_path), num_train=20, num_test=4)
    cfg = Config.fromfile('configs/_base_/datasets/fashionmnist_bs128.py')
    dataset = DATASETS.build(
        dict(cfg.train_dataloader.dataset, data_root=str(tmp_path),
             num_per_class=2))
    assert len(dataset) == 20
    packed = dataset[0]
    assert packed['inputs'].dtype == torch.uint8
    assert packed['inputs'].shape == (1, 28, 28)
    assert packed['data_samples'].gt_label.numel() == 1
