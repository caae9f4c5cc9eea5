"""MNIST and Fashion-MNIST from their IDX files.

:func:`read_idx` takes the IDX files as they are distributed
(gzip-compressed or extracted) and checks each file's length against its
header. Nothing is fetched at run time.
"""
import gzip
import os.path as osp
import struct
import zlib
from typing import Dict, List, Sequence, Tuple

import numpy as np

from auglocal_det.errors import InputError
from auglocal_det.registry import DATASETS

from .small_image_dataset import _SmallImageDataset

__all__ = ['MNIST', 'FashionMNIST', 'read_idx', 'FASHION_MNIST_CLASSES']

#: Fashion-MNIST class names in label order (Xiao, Rasul and Vollgraf,
#: 2017).
FASHION_MNIST_CLASSES = ('T-shirt/top', 'Trouser', 'Pullover', 'Dress',
                         'Coat', 'Sandal', 'Shirt', 'Sneaker', 'Bag',
                         'Ankle boot')


def read_idx(path: str) -> np.ndarray:
    """Read an IDX file of unsigned bytes (the MNIST family's format).

    The file may be gzip-compressed (``.gz``, as distributed) or extracted.
    Its header is two zero bytes, the type code 0x08 (unsigned byte), the
    number of dimensions and each dimension as a big-endian 32-bit integer;
    the data follow in row-major order. torchvision's reader
    (``torchvision.datasets.mnist.read_sn3_pascalvincent_tensor``) takes
    only extracted files and does not compare the data with the header, so
    a truncated file would fail later without naming itself.

    Args:
        path (str): The file.

    Returns:
        ndarray: The uint8 array, shaped as the header says.

    Raises:
        ValueError: The file is not an IDX file of unsigned bytes, or holds
            more or fewer bytes than its header announces, or a ``.gz``
            file is damaged (the message names the file).
    """
    opener = gzip.open if path.endswith('.gz') else open
    try:
        with opener(path, 'rb') as f:
            data = bytearray(f.read())  # writable, so the array is too
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise ValueError(f'{path} is not a complete gzip file: the file is '
                         f'truncated or damaged ({exc})') from exc
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise ValueError(
            f'{path} is not an IDX file of unsigned bytes (header '
            f'{data[:4].hex() or "empty"}, expected 0000 08 NN)')
    ndim = data[3]
    start = 4 + 4 * ndim
    if len(data) < start:
        raise ValueError(f'{path} is truncated inside its header')
    shape = struct.unpack(f'>{ndim}I', data[4:start])
    expected = start + int(np.prod(shape, dtype=np.int64))
    if len(data) != expected:
        raise ValueError(
            f'{path} holds {len(data)} bytes, but its header announces '
            f'an array of shape {shape} ({expected} bytes): the file is '
            f'{"truncated" if len(data) < expected else "too long"}')
    return np.frombuffer(data, dtype=np.uint8, offset=start).reshape(shape)


class _IDXDataset(_SmallImageDataset):
    """A data set of grey images in the MNIST family's four IDX files.

    Layout (the official files, compressed or extracted)::

        data_root/train-images-idx3-ubyte[.gz]   (train images)
        data_root/train-labels-idx1-ubyte[.gz]   (train labels)
        data_root/t10k-images-idx3-ubyte[.gz]    (test images)
        data_root/t10k-labels-idx1-ubyte[.gz]    (test labels)

    Where both forms of a file are present the extracted one is read.
    Images are handed on as uint8 (1, 28, 28) tensors. ``verify_md5`` is
    not available (the sums differ between the compressed and extracted
    forms); each file's length is checked against its header instead.
    """

    CHANNELS = 1
    CLASSES: Tuple[str, ...] = ()
    _FILES: Dict[str, Tuple[str, str]] = {
        'train': ('train-images-idx3-ubyte', 'train-labels-idx1-ubyte'),
        'test': ('t10k-images-idx3-ubyte', 't10k-labels-idx1-ubyte'),
    }

    def __init__(self, *args, **kwargs) -> None:
        if kwargs.get('verify_md5'):
            raise InputError(
                f'{type(self).__name__}: verify_md5 is not available for '
                'IDX files; their lengths are checked against their '
                'headers')
        super().__init__(*args, **kwargs)

    def required_files(self) -> List[str]:
        root = self.data_root or '.'
        return [
            name if osp.isfile(osp.join(root, name)) else name + '.gz'
            for name in self._FILES[self.split]
        ]

    def read_split(self) -> Tuple[np.ndarray, np.ndarray, Sequence[str]]:
        root = self.data_root or '.'
        image_file, label_file = (
            osp.join(root, name) for name in self.required_files())
        images = read_idx(image_file)
        labels = read_idx(label_file)
        if images.ndim != 3 or labels.ndim != 1:
            raise ValueError(
                f'{image_file} holds an array of shape {images.shape} and '
                f'{label_file} one of shape {labels.shape}; expected '
                '(N, H, W) images and (N,) labels')
        if len(images) != len(labels):
            raise ValueError(
                f'{image_file} holds {len(images)} images but {label_file} '
                f'{len(labels)} labels')
        return images[:, None], labels, self.CLASSES


@DATASETS.register_module()
class FashionMNIST(_IDXDataset):
    """Fashion-MNIST (Xiao, Rasul and Vollgraf, 2017): 28 x 28 grey images
    of 10 kinds of clothing, 60,000 for training and 10,000 for testing.

    Layout: the four official IDX files in the data root, as distributed
    (``.gz``) or extracted (see :class:`_IDXDataset`). On Debian,
    ``apt-get install dataset-fashion-mnist`` puts them in
    ``/usr/share/datasets/fashion-mnist/``.

    Args:
        data_root (str): Folder that holds the four files.
        split (str): ``'train'`` or ``'test'``. Defaults to 'train'.
        **kwargs: See :class:`_SmallImageDataset` (``num_per_class``,
            ``pipeline``, ...).
    """

    CLASSES = FASHION_MNIST_CLASSES
    LAYOUT = ('Expected the four official Fashion-MNIST IDX files, '
              'compressed or extracted, in the data root: '
              'data_root/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz] '
              '(https://github.com/zalandoresearch/fashion-mnist; on Debian '
              '`apt-get install dataset-fashion-mnist` puts them in '
              '/usr/share/datasets/fashion-mnist/).')


@DATASETS.register_module()
class MNIST(_IDXDataset):
    """MNIST handwritten digits: 28 x 28 grey images, 60,000 for training
    and 10,000 for testing, in the same four IDX files as Fashion-MNIST.

    Args:
        data_root (str): Folder that holds the four files.
        split (str): ``'train'`` or ``'test'``. Defaults to 'train'.
        **kwargs: See :class:`_SmallImageDataset`.
    """

    CLASSES = tuple(str(d) for d in range(10))
    LAYOUT = ('Expected the four official MNIST IDX files, compressed or '
              'extracted, in the data root: '
              'data_root/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz] '
              '(http://yann.lecun.com/exdb/mnist/).')
