"""CIFAR-10, SVHN and STL-10 from files in their exact on-disk formats."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from auglocal_det.datasets import CIFAR10, STL10, SVHN, RandomCropTensor
from auglocal_det.errors import InputError, InputFileNotFoundError
from auglocal_det.registry import DATASETS
from auglocal_det.testing import write_cifar10, write_stl10, write_svhn

pytest.importorskip('scipy')  # SVHN's .mat files

WRITERS = {
    'CIFAR10': (write_cifar10, 32, 'cifar-10-batches-py/data_batch_1'),
    'SVHN': (write_svhn, 32, 'train_32x32.mat'),
    'STL10': (write_stl10, 96, 'stl10_binary/train_X.bin'),
}


@pytest.fixture(scope='module')
def roots(tmp_path_factory):
    """Tiny sets of every format, written once; name -> (root, arrays)."""
    out = {}
    for name, (writer, _, _) in WRITERS.items():
        root = str(tmp_path_factory.mktemp(name.lower()))
        out[name] = (root, writer(root, num_train=12, num_test=6, seed=3))
    return out


@pytest.mark.parametrize('name', sorted(WRITERS))
@pytest.mark.parametrize('split', ['train', 'test'])
def test_reads_exactly_what_was_written(roots, name, split):
    root, written = roots[name]
    size = WRITERS[name][1]
    dataset = DATASETS.build(
        dict(type=name, data_root=root, split=split, pipeline=[]))
    images, labels = written[split]
    assert len(dataset) == len(labels)
    assert len(dataset.metainfo['classes']) == 10
    for i in range(len(dataset)):
        sample = dataset[i]
        assert sample['img'].dtype == torch.uint8
        assert sample['img'].shape == (3, size, size)
        assert sample['ori_shape'] == (size, size)
        assert torch.equal(sample['img'], torch.from_numpy(images[i]))
        assert sample['gt_label'] == labels[i]
        assert dataset.get_cat_ids(i) == [int(labels[i])]


def test_class_names_and_svhn_zero(roots):
    root, written = roots['CIFAR10']
    cifar = CIFAR10(root, split='test', pipeline=[])
    assert cifar.metainfo['classes'][:3] == ('airplane', 'automobile', 'bird')
    stl = STL10(roots['STL10'][0], split='train', pipeline=[])
    assert stl.metainfo['classes'][2] == 'car'
    # the .mat files store the digit 0 as label 10
    svhn_root, svhn_written = roots['SVHN']
    svhn = SVHN(svhn_root, split='train', pipeline=[])
    labels = [svhn[i]['gt_label'] for i in range(len(svhn))]
    assert 0 in labels and max(labels) <= 9
    assert labels == list(svhn_written['train'][1])


def test_samples_do_not_alias_the_data_set(roots):
    dataset = CIFAR10(roots['CIFAR10'][0], split='test', pipeline=[])
    first = dataset[0]['img']
    first.zero_()
    assert dataset[0]['img'].any()


@pytest.mark.parametrize('name', sorted(WRITERS))
def test_missing_root_names_the_files_and_layout(tmp_path, name):
    missing = tmp_path / 'nothing_here'
    relpath = WRITERS[name][2]
    with pytest.raises(InputFileNotFoundError) as info:
        DATASETS.build(dict(type=name, data_root=str(missing), pipeline=[]))
    message = str(info.value)
    assert 'does not exist' in message
    assert str(missing / relpath) in message
    assert 'data_root' in message and 'never downloaded' in message


def test_stl10_needs_only_the_labelled_files(tmp_path):
    write_stl10(str(tmp_path), num_train=4, num_test=2)
    assert not (tmp_path / 'stl10_binary' / 'unlabeled_X.bin').exists()
    assert len(STL10(str(tmp_path), split='test', pipeline=[])) == 2
    (tmp_path / 'stl10_binary' / 'test_y.bin').unlink()
    with pytest.raises(InputFileNotFoundError, match='test_y.bin'):
        STL10(str(tmp_path), split='test', pipeline=[])


def test_bad_inputs(tmp_path):
    with pytest.raises(InputError, match="split must be one of.*'val'"):
        CIFAR10(str(tmp_path), split='val', pipeline=[])
    write_cifar10(str(tmp_path), num_train=5, num_test=2)
    # the official MD5 sums cannot match the generated files
    with pytest.raises(InputError, match="fail torchvision's check"):
        CIFAR10(str(tmp_path), split='test', verify_md5=True, pipeline=[])
    batch = tmp_path / 'cifar-10-batches-py' / 'test_batch'
    batch.write_bytes(batch.read_bytes()[:40])
    with pytest.raises(InputError, match='cannot read the .test. split'):
        CIFAR10(str(tmp_path), split='test', pipeline=[])
    stl = tmp_path / 'stl'
    write_stl10(str(stl), num_train=2, num_test=2)
    # label 0 in the file is out of range (the files count from 1)
    np.zeros(2, np.uint8).tofile(stl / 'stl10_binary' / 'test_y.bin')
    with pytest.raises(InputError, match='label 255, outside 0..9'):
        STL10(str(stl), split='test', pipeline=[])


def test_random_crop_reflect_matches_torch_pad():
    img = torch.arange(3 * 6 * 6, dtype=torch.uint8).reshape(3, 6, 6)
    crop = RandomCropTensor(6, padding=2, padding_mode='reflect')
    np.random.seed(0)
    out = crop(dict(img=img))
    padded = F.pad(img[None].float(), (2, 2, 2, 2), mode='reflect')[0]
    left, top, right, bottom = out['crop_bbox']
    assert (right - left, bottom - top) == (6, 6)
    expected = padded[:, top + 2:bottom + 2, left + 2:right + 2]
    assert torch.equal(out['img'].float(), expected)
    assert out['img'].dtype == torch.uint8 and out['img_shape'] == (6, 6)


def test_random_crop_zero_padding_and_errors():
    img = torch.full((3, 4, 4), 7, dtype=torch.uint8)
    crop = RandomCropTensor(4, padding=3)
    seen_zero = False
    for seed in range(20):
        np.random.seed(seed)
        out = crop(dict(img=img))['img']
        assert out.shape == (3, 4, 4)
        seen_zero |= bool((out == 0).any())
    assert seen_zero
    with pytest.raises(ValueError, match='larger than the padded image'):
        RandomCropTensor(9, padding=2)(dict(img=img))
    with pytest.raises(ValueError, match='padding_mode'):
        RandomCropTensor(4, padding_mode='wrap')


@pytest.mark.parametrize('config', [
    'configs/_base_/datasets/cifar10_bs1024.py',
    'configs/_base_/datasets/svhn_bs1024.py',
    'configs/_base_/datasets/stl10_bs128.py',
])
def test_config_pipelines_give_model_inputs(roots, config):
    from mmengine.config import Config
    cfg = Config.fromfile(config)
    dataset_cfg = cfg.train_dataloader.dataset
    root, _ = roots[dataset_cfg.type]
    size = WRITERS[dataset_cfg.type][1]
    dataset = DATASETS.build(dict(dataset_cfg, data_root=root))
    packed = dataset[0]
    assert packed['inputs'].dtype == torch.uint8
    assert packed['inputs'].shape == (3, size, size)
    assert packed['data_samples'].gt_label.numel() == 1
