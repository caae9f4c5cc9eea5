"""Write tiny CIFAR-10, SVHN, STL-10, MNIST and Fashion-MNIST sets in their
exact on-disk formats.

For tests and demos: the files have the names, containers and byte layouts
of the official downloads (pickled CIFAR batches, SVHN's MATLAB files,
STL-10's raw binaries, the MNIST family's IDX files), so the readers of
:mod:`auglocal_det.datasets.small_images` (torchvision's) parse them as
they would parse the real data. The images are seeded oriented gratings
(:func:`make_class_images`): a convolutional network learns them, a colour
histogram does not.
"""
import gzip
import os
import os.path as osp
import pickle
import struct
from typing import Dict, Sequence, Tuple

import numpy as np

from auglocal_det.datasets.small_images import CIFAR10_CLASSES, STL10_CLASSES

__all__ = [
    'make_class_images', 'write_cifar10', 'write_svhn', 'write_stl10',
    'write_idx', 'write_fashion_mnist', 'write_small_image_set'
]

_SPLIT_SEEDS = {'train': 0, 'test': 1}


def make_class_images(num: int,
                      size: int,
                      num_classes: int = 10,
                      seed: int = 0) -> Tuple[np.ndarray, np.ndarray]:
    """Seeded (N, 3, size, size) uint8 images and their labels 0..C-1.

    Class c is a grating at the orientation ``c * 180 / C`` degrees, with a
    random phase, contrast and colour on a random background, plus pixel
    noise: the mean colour of an image says nothing about its class, its
    oriented edges do. Labels cycle through the classes, so every class
    occurs.

    Args:
        num (int): Number of images.
        size (int): Height and width.
        num_classes (int): Number of classes. Defaults to 10.
        seed (int): Seed. Defaults to 0.

    Returns:
        tuple[ndarray, ndarray]: Images (uint8) and labels (int64).
    """
    rng = np.random.default_rng(seed)
    labels = np.arange(num, dtype=np.int64) % num_classes
    rng.shuffle(labels)
    angle = labels * np.pi / num_classes
    period = size / 4
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float64)
    proj = (np.cos(angle)[:, None, None] * xs +
            np.sin(angle)[:, None, None] * ys)
    phase = rng.uniform(0, 2 * np.pi, size=(num, 1, 1))
    wave = np.sin(2 * np.pi * proj / period + phase)  # (N, H, W)
    contrast = rng.uniform(20, 70, size=(num, 3, 1, 1))
    background = rng.uniform(60, 195, size=(num, 3, 1, 1))
    noise = rng.uniform(-40, 40, size=(num, 3, size, size))
    images = background + contrast * wave[:, None] + noise
    return np.clip(images, 0, 255).astype(np.uint8), labels


def _split_images(num: int, size: int, split: str,
                  seed: int) -> Tuple[np.ndarray, np.ndarray]:
    return make_class_images(num, size, seed=2 * seed + _SPLIT_SEEDS[split])


def write_cifar10(root: str,
                  num_train: int = 50,
                  num_test: int = 20,
                  seed: int = 0,
                  classes: Sequence[str] = ()) -> Dict[str, tuple]:
    """Write ``root/cifar-10-batches-py`` as the CIFAR-10 python version.

    Five ``data_batch_i`` files (the train images split between them) and
    ``test_batch``: pickled dicts with ``data`` (N, 3072) uint8 rows of
    1024 red, 1024 green and 1024 blue values in row-major order,
    ``labels``, ``filenames`` and ``batch_label``; ``batches.meta`` with
    ``label_names``.

    Args:
        root (str): Data root to create.
        num_train (int): Training images (at least 5). Defaults to 50.
        num_test (int): Test images. Defaults to 20.
        seed (int): Seed of the images. Defaults to 0.
        classes (Sequence[str]): Class names; defaults to CIFAR-10's.

    Returns:
        dict: ``{'train': (images, labels), 'test': (images, labels)}``,
        the arrays written (images (N, 3, 32, 32)).
    """
    folder = osp.join(root, 'cifar-10-batches-py')
    os.makedirs(folder, exist_ok=True)
    written = {}
    for split, num in (('train', num_train), ('test', num_test)):
        images, labels = _split_images(num, 32, split, seed)
        written[split] = (images, labels)
        if split == 'train':
            parts = np.array_split(np.arange(num), 5)
            names = [f'data_batch_{i + 1}' for i in range(5)]
        else:
            parts, names = [np.arange(num)], ['test_batch']
        for index, name in zip(parts, names):
            entry = {
                'batch_label': f'{name} (generated)',
                'labels': [int(y) for y in labels[index]],
                'data': images[index].reshape(len(index), -1),
                'filenames': [f'img_{i:05d}.png' for i in index],
            }
            with open(osp.join(folder, name), 'wb') as f:
                pickle.dump(entry, f, protocol=2)
    meta = {
        'label_names': list(classes or CIFAR10_CLASSES),
        'num_cases_per_batch': max(1, num_train // 5),
        'num_vis': 3072,
    }
    with open(osp.join(folder, 'batches.meta'), 'wb') as f:
        pickle.dump(meta, f, protocol=2)
    return written


def write_svhn(root: str,
               num_train: int = 50,
               num_test: int = 20,
               seed: int = 0) -> Dict[str, tuple]:
    """Write ``root/{train,test}_32x32.mat`` as SVHN's cropped digits.

    MATLAB files with ``X`` of shape (32, 32, 3, N) uint8 and ``y`` of
    shape (N, 1) holding 1..10 (10 for the digit 0). Needs scipy.

    Args:
        root (str): Data root to create.
        num_train (int): Training images. Defaults to 50.
        num_test (int): Test images. Defaults to 20.
        seed (int): Seed of the images. Defaults to 0.

    Returns:
        dict: The arrays written, images (N, 3, 32, 32) and labels 0..9.
    """
    from scipy.io import savemat
    os.makedirs(root, exist_ok=True)
    written = {}
    for split, num in (('train', num_train), ('test', num_test)):
        images, labels = _split_images(num, 32, split, seed)
        written[split] = (images, labels)
        digits = np.where(labels == 0, 10, labels).astype(np.uint8)
        savemat(
            osp.join(root, f'{split}_32x32.mat'),
            dict(X=images.transpose(2, 3, 1, 0), y=digits[:, None]))
    return written


def write_stl10(root: str,
                num_train: int = 20,
                num_test: int = 10,
                seed: int = 0,
                image_size: int = 96) -> Dict[str, tuple]:
    """Write ``root/stl10_binary`` as the STL-10 binary version.

    ``{train,test}_X.bin``: raw uint8, per image the red, green and blue
    planes, each stored column by column (MATLAB order);
    ``{train,test}_y.bin``: one uint8 label 1..10 per image;
    ``class_names.txt``. ``image_size`` must stay 96 for readers of the real
    format.

    Args:
        root (str): Data root to create.
        num_train (int): Training images. Defaults to 20.
        num_test (int): Test images. Defaults to 10.
        seed (int): Seed of the images. Defaults to 0.
        image_size (int): Side of the images. Defaults to 96.

    Returns:
        dict: The arrays written, images (N, 3, 96, 96) and labels 0..9.
    """
    folder = osp.join(root, 'stl10_binary')
    os.makedirs(folder, exist_ok=True)
    written = {}
    for split, num in (('train', num_train), ('test', num_test)):
        images, labels = _split_images(num, image_size, split, seed)
        written[split] = (images, labels)
        images.transpose(0, 1, 3, 2).tofile(
            osp.join(folder, f'{split}_X.bin'))
        (labels + 1).astype(np.uint8).tofile(
            osp.join(folder, f'{split}_y.bin'))
    with open(osp.join(folder, 'class_names.txt'), 'w') as f:
        f.write('\n'.join(STL10_CLASSES) + '\n')
    return written


def write_idx(path: str, array: np.ndarray) -> None:
    """Write a uint8 array as an IDX file, gzip-compressed if ``path``
    ends in ``.gz``.

    The header is two zero bytes, the type code 0x08 (unsigned byte), the
    number of dimensions and each dimension as a big-endian 32-bit
    integer; the bytes follow in row-major order.
    """
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(
        f'>{array.ndim}I', *array.shape)
    opener = gzip.open if path.endswith('.gz') else open
    with opener(path, 'wb') as f:
        f.write(header + array.tobytes())


def write_fashion_mnist(root: str,
                        num_train: int = 50,
                        num_test: int = 20,
                        seed: int = 0,
                        compressed: bool = True) -> Dict[str, tuple]:
    """Write the four IDX files of Fashion-MNIST (or MNIST) into ``root``.

    ``{train,t10k}-images-idx3-ubyte`` hold (N, 28, 28) grey images and
    ``{train,t10k}-labels-idx1-ubyte`` the (N,) labels 0..9, with ``.gz``
    appended when ``compressed`` (the form in which they are distributed).
    The images are the first channel of :func:`make_class_images`.

    Args:
        root (str): Data root to create.
        num_train (int): Training images. Defaults to 50.
        num_test (int): Test images. Defaults to 20.
        seed (int): Seed of the images. Defaults to 0.
        compressed (bool): Write ``.gz`` files. Defaults to True.

    Returns:
        dict: The arrays written, images (N, 1, 28, 28) and labels 0..9.
    """
    os.makedirs(root, exist_ok=True)
    suffix = '.gz' if compressed else ''
    written = {}
    for split, prefix, num in (('train', 'train', num_train),
                               ('test', 't10k', num_test)):
        images, labels = _split_images(num, 28, split, seed)
        images = images[:, :1]
        written[split] = (images, labels)
        write_idx(
            osp.join(root, f'{prefix}-images-idx3-ubyte{suffix}'),
            images[:, 0])
        write_idx(
            osp.join(root, f'{prefix}-labels-idx1-ubyte{suffix}'),
            labels.astype(np.uint8))
    return written


_WRITERS = {'CIFAR10': write_cifar10, 'SVHN': write_svhn,
            'STL10': write_stl10, 'FashionMNIST': write_fashion_mnist,
            'MNIST': write_fashion_mnist}


def write_small_image_set(dataset_type: str, root: str, num_train: int,
                          num_test: int, seed: int = 0) -> Dict[str, tuple]:
    """Write a tiny set for a dataset type name (``'CIFAR10'``, ``'SVHN'``,
    ``'STL10'``, ``'FashionMNIST'``, ``'MNIST'``), e.g. the ``type`` of a
    config's dataset.

    Returns:
        dict: The arrays written (see the writers).
    """
    if dataset_type not in _WRITERS:
        raise KeyError(f'no writer for dataset type {dataset_type!r}; '
                       f'expected one of {sorted(_WRITERS)}')
    return _WRITERS[dataset_type](
        root, num_train=num_train, num_test=num_test, seed=seed)
