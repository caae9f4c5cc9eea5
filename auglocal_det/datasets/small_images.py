"""CIFAR-10, SVHN, STL-10, MNIST and Fashion-MNIST from their standard
on-disk formats.

CIFAR-10, SVHN and STL-10 are read by torchvision's own dataset classes
with ``download=False`` (this module); MNIST and Fashion-MNIST by
:func:`read_idx`, which takes the IDX files as they are distributed
(gzip-compressed or extracted; ``idx_images.py``).
Nothing is fetched at run time. Each data set is held in memory as one
uint8 array and every sample is handed to the pipeline as a uint8
(C, H, W) tensor ``img`` with its ``gt_label``, which is what the tensor
transforms and :class:`~auglocal_det.datasets.PackClsInputs` take.

torchvision checks the MD5 sums of the official files before reading them;
that check is on with ``verify_md5=True``. By default only the presence of
the files is checked (the format itself is checked as they are read), so
subsets or re-packed copies in the same format load too.
"""
import os.path as osp
from typing import Dict, List, Sequence, Tuple

import numpy as np
from torchvision import datasets as tv_datasets

from auglocal_det.registry import DATASETS

from .idx_images import FASHION_MNIST_CLASSES, MNIST, FashionMNIST, read_idx
from .small_image_dataset import _SmallImageDataset

__all__ = [
    'CIFAR10', 'SVHN', 'STL10', 'MNIST', 'FashionMNIST', 'read_idx',
    'CIFAR10_CLASSES', 'STL10_CLASSES', 'FASHION_MNIST_CLASSES'
]

#: CIFAR-10 class names in label order (those of ``batches.meta``).
CIFAR10_CLASSES = ('airplane', 'automobile', 'bird', 'cat', 'deer', 'dog',
                   'frog', 'horse', 'ship', 'truck')
#: STL-10 class names in label order (those of ``class_names.txt``).
STL10_CLASSES = ('airplane', 'bird', 'car', 'cat', 'deer', 'dog', 'horse',
                 'monkey', 'ship', 'truck')
#: SVHN digits; torchvision maps the files' label 10 to digit 0.
SVHN_CLASSES = tuple(str(d) for d in range(10))


def _without_md5(entries: Sequence[Sequence]) -> List[list]:
    """``[[name, md5], ...]`` with every MD5 sum dropped (None)."""
    return [[entry[0], None, *entry[2:]] for entry in entries]


class _CIFAR10Files(tv_datasets.CIFAR10):
    """torchvision's CIFAR-10 reader, checking file presence only."""

    train_list = _without_md5(tv_datasets.CIFAR10.train_list)
    test_list = _without_md5(tv_datasets.CIFAR10.test_list)
    meta = dict(tv_datasets.CIFAR10.meta, md5=None)


class _SVHNFiles(tv_datasets.SVHN):
    """torchvision's SVHN reader, checking file presence only."""

    split_list = {
        split: [url, name, None]
        for split, (url, name, _) in tv_datasets.SVHN.split_list.items()
    }


class _STL10Files(tv_datasets.STL10):
    """torchvision's STL-10 reader for the labelled splits.

    torchvision requires every file of the archive (the 2.7 GB
    ``unlabeled_X.bin`` included) before it reads any split; this reader
    needs only the two files of the split it reads, which the dataset class
    has already checked.
    """

    def _check_integrity(self) -> bool:
        return True


@DATASETS.register_module()
class CIFAR10(_SmallImageDataset):
    """CIFAR-10 in its "python version" (pickled batches).

    Layout (the extracted ``cifar-10-python.tar.gz``)::

        data_root/cifar-10-batches-py/
          data_batch_1 ... data_batch_5   (train: 50,000 images)
          test_batch                      (test: 10,000 images)
          batches.meta                    (class names)

    Args:
        data_root (str): Folder that holds ``cifar-10-batches-py``.
        split (str): ``'train'`` or ``'test'``. Defaults to 'train'.
        **kwargs: See :class:`_SmallImageDataset`.
    """

    LAYOUT = ('Expected the python version of CIFAR-10 '
              '(https://www.cs.toronto.edu/~kriz/cifar.html, '
              'cifar-10-python.tar.gz) extracted into the data root: '
              'data_root/cifar-10-batches-py/{data_batch_1..5, test_batch, '
              'batches.meta}.')

    def required_files(self) -> List[str]:
        cls = _CIFAR10Files
        files = cls.train_list if self.split == 'train' else cls.test_list
        return [
            osp.join(cls.base_folder, name)
            for name in [f[0] for f in files] + [cls.meta['filename']]
        ]

    def read_split(self) -> Tuple[np.ndarray, np.ndarray, Sequence[str]]:
        reader = (tv_datasets.CIFAR10 if self.verify_md5 else _CIFAR10Files)
        data = reader(
            self.data_root, train=self.split == 'train', download=False)
        # torchvision keeps CIFAR images as (N, H, W, C)
        return (data.data.transpose(0, 3, 1, 2), np.asarray(data.targets),
                data.classes)


@DATASETS.register_module()
class SVHN(_SmallImageDataset):
    """SVHN, cropped digits (format 2: the ``*_32x32.mat`` files).

    Layout::

        data_root/train_32x32.mat   (73,257 images)
        data_root/test_32x32.mat    (26,032 images)

    Reading the MATLAB files needs scipy. Label 10 of the files is digit 0,
    as in torchvision.

    Args:
        data_root (str): Folder that holds the ``.mat`` files.
        split (str): ``'train'`` or ``'test'``. Defaults to 'train'.
        **kwargs: See :class:`_SmallImageDataset`.
    """

    LAYOUT = ('Expected the cropped-digit SVHN files '
              '(http://ufldl.stanford.edu/housenumbers/, format 2) in the '
              'data root: data_root/train_32x32.mat and '
              'data_root/test_32x32.mat.')

    def required_files(self) -> List[str]:
        return [_SVHNFiles.split_list[self.split][1]]

    def read_split(self) -> Tuple[np.ndarray, np.ndarray, Sequence[str]]:
        reader = tv_datasets.SVHN if self.verify_md5 else _SVHNFiles
        data = reader(self.data_root, split=self.split, download=False)
        return data.data, data.labels, SVHN_CLASSES


@DATASETS.register_module()
class STL10(_SmallImageDataset):
    """STL-10, the labelled splits of the binary version.

    Layout (the extracted ``stl10_binary.tar.gz``; ``unlabeled_X.bin`` is
    not needed)::

        data_root/stl10_binary/
          train_X.bin  train_y.bin   (train: 5,000 images of 96 x 96)
          test_X.bin   test_y.bin    (test: 8,000 images)
          class_names.txt            (optional)

    Args:
        data_root (str): Folder that holds ``stl10_binary``.
        split (str): ``'train'`` or ``'test'``. Defaults to 'train'.
        **kwargs: See :class:`_SmallImageDataset`.
    """

    LAYOUT = ('Expected the binary version of STL-10 '
              '(https://cs.stanford.edu/~acoates/stl10/, '
              'stl10_binary.tar.gz) extracted into the data root: '
              'data_root/stl10_binary/{train_X.bin, train_y.bin, '
              'test_X.bin, test_y.bin}.')
    _FILES: Dict[str, Tuple[str, str]] = {
        'train': ('train_X.bin', 'train_y.bin'),
        'test': ('test_X.bin', 'test_y.bin'),
    }

    def required_files(self) -> List[str]:
        return [
            osp.join(_STL10Files.base_folder, name)
            for name in self._FILES[self.split]
        ]

    def read_split(self) -> Tuple[np.ndarray, np.ndarray, Sequence[str]]:
        reader = tv_datasets.STL10 if self.verify_md5 else _STL10Files
        data = reader(self.data_root, split=self.split, download=False)
        classes = getattr(data, 'classes', None) or STL10_CLASSES
        return data.data, data.labels, classes
