"""The in-memory image classification set the small data sets share.

:class:`_SmallImageDataset` checks a split's files, reads them through its
subclass, holds the images as one uint8 array and hands every sample to
the pipeline as a uint8 (C, H, W) tensor ``img`` with its ``gt_label``.
CIFAR-10, SVHN and STL-10 (``small_images.py``) and MNIST and
Fashion-MNIST (``idx_images.py``) say which files a split needs and how
to read them.
"""
import os.path as osp
import pickle
import zlib
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
from mmengine.dataset import BaseDataset

from auglocal_det.errors import InputError, InputFileNotFoundError


class _SmallImageDataset(BaseDataset):
    """An in-memory image classification set read by a torchvision class.

    Subclasses say which files a split needs (:meth:`required_files`), how
    to read them (:meth:`read_split`, returning (N, C, H, W) uint8 images,
    (N,) labels and the class names) and how the files are laid out
    (``LAYOUT``, quoted in the error for a missing file).

    Args:
        data_root (str): Folder of the data set (see the class docstring).
        split (str): ``'train'`` or ``'test'``.
        verify_md5 (bool): Check the MD5 sums of the official files, as
            torchvision does (for STL-10 this needs every file of the
            archive, ``unlabeled_X.bin`` included). Defaults to False.
        num_per_class (int, optional): Keep only the first
            ``num_per_class`` images of every class, in the files' order: a
            fixed, class-balanced subset, the same on every machine.
            Defaults to None (every image).
        **kwargs: Passed to :class:`mmengine.dataset.BaseDataset`
            (``pipeline``, ``test_mode``, ``indices``, ...).
    """

    #: How the files are laid out under ``data_root``; set by subclasses.
    LAYOUT = ''
    #: The splits this data set reads.
    SPLITS: Tuple[str, ...] = ('train', 'test')
    #: Channels of the images (3: colour, 1: grey).
    CHANNELS = 3

    def __init__(self,
                 data_root: str,
                 split: str = 'train',
                 verify_md5: bool = False,
                 num_per_class: Optional[int] = None,
                 **kwargs) -> None:
        name = type(self).__name__
        if split not in self.SPLITS:
            raise InputError(
                f'{name}: split must be one of {list(self.SPLITS)}, got '
                f'{split!r} (train_dataloader.dataset.split / '
                'val_dataloader.dataset.split)')
        if num_per_class is not None and (
                isinstance(num_per_class, bool)
                or not isinstance(num_per_class, int) or num_per_class < 1):
            raise InputError(
                f'{name}: num_per_class must be a positive integer or None, '
                f'got {num_per_class!r} (train_dataloader.dataset.'
                'num_per_class)')
        self.split = split
        self.verify_md5 = verify_md5
        self.num_per_class = num_per_class
        self._images: Optional[np.ndarray] = None
        super().__init__(data_root=data_root, ann_file='', **kwargs)

    # ------------------------------------------------------------ subclass
    def required_files(self) -> List[str]:
        """Paths (relative to ``data_root``) the split needs."""
        raise NotImplementedError

    def read_split(self) -> Tuple[np.ndarray, np.ndarray, Sequence[str]]:
        """Read the split: images (N, 3, H, W) uint8, labels, class names."""
        raise NotImplementedError

    # -------------------------------------------------------------- loading
    def load_data_list(self) -> List[dict]:
        """Check the files, read the split and list its samples.

        Returns:
            list[dict]: ``dict(img_index=i, gt_label=label)`` per image.
        """
        name = type(self).__name__
        root = self.data_root or '.'
        missing = [
            path for path in self.required_files()
            if not osp.isfile(osp.join(root, path))
        ]
        if missing:
            where = (f'data root {self.data_root!r}' if osp.isdir(root) else
                     f'data root {self.data_root!r} (absolute: '
                     f'{osp.abspath(root)!r}) does not exist')
            raise InputFileNotFoundError(
                f'{name}: {where}; the {self.split!r} split needs '
                f'{", ".join(osp.join(root, p) for p in missing)}. '
                f'{self.LAYOUT} Set the folder with --cfg-options '
                'train_dataloader.dataset.data_root=PATH '
                'val_dataloader.dataset.data_root=PATH (the data are never '
                'downloaded at run time).')
        try:
            images, labels, classes = self.read_split()
        except RuntimeError as exc:  # torchvision: MD5 mismatch
            raise InputError(
                f'{name}: the files of the {self.split!r} split under '
                f'{self.data_root!r} fail torchvision\'s check ({exc}); with '
                'verify_md5=True they must be the official files') from exc
        except (OSError, ValueError, EOFError, KeyError, TypeError,
                pickle.UnpicklingError, zlib.error) as exc:
            raise InputError(
                f'{name}: cannot read the {self.split!r} split from '
                f'{", ".join(self.required_files())} under '
                f'{self.data_root!r}: {type(exc).__name__}: {exc}. '
                f'{self.LAYOUT}') from exc
        images = np.ascontiguousarray(images, dtype=np.uint8)
        labels = np.asarray(labels, dtype=np.int64).reshape(-1)
        if images.ndim != 4 or images.shape[1] != self.CHANNELS or \
                len(images) != len(labels):
            raise InputError(
                f'{name}: the {self.split!r} split under {self.data_root!r} '
                f'holds images of shape {images.shape} and {len(labels)} '
                f'labels; expected (N, {self.CHANNELS}, H, W) images and N '
                'labels')
        if len(labels) == 0:
            raise InputError(f'{name}: the {self.split!r} split under '
                             f'{self.data_root!r} holds no images')
        bad = labels[(labels < 0) | (labels >= len(classes))]
        if bad.size:
            raise InputError(
                f'{name}: the {self.split!r} split under {self.data_root!r} '
                f'has label {int(bad[0])}, outside 0..{len(classes) - 1}')
        self._images = images
        self._metainfo['classes'] = tuple(classes)
        kept = self._balanced_subset(labels, len(classes))
        return [dict(img_index=int(i), gt_label=int(labels[i])) for i in kept]

    def _balanced_subset(self, labels: np.ndarray,
                         num_classes: int) -> np.ndarray:
        """Indices of the first ``num_per_class`` images of every class."""
        if self.num_per_class is None:
            return np.arange(len(labels))
        counts = np.bincount(labels, minlength=num_classes)
        if counts.min() < self.num_per_class:
            raise InputError(
                f'{type(self).__name__}: num_per_class={self.num_per_class} '
                f'but class {int(counts.argmin())} of the {self.split!r} '
                f'split under {self.data_root!r} has only '
                f'{int(counts.min())} images')
        # rank of every image within its class, in file order
        order = np.argsort(labels, kind='stable')
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        rank = np.empty(len(labels), dtype=np.int64)
        rank[order] = np.arange(len(labels)) - np.repeat(starts, counts)
        return np.flatnonzero(rank < self.num_per_class)

    def get_data_info(self, idx: int) -> dict:
        """The sample's annotation plus its image as ``img`` (uint8 CHW).
        """
        info = super().get_data_info(idx)
        img = torch.from_numpy(self._images[info['img_index']]).clone()
        info['img'] = img
        info['ori_shape'] = info['img_shape'] = tuple(img.shape[-2:])
        return info

    def get_cat_ids(self, idx: int) -> List[int]:
        """Label of an image, as a one-element list (for samplers)."""
        return [int(super().get_data_info(idx)['gt_label'])]

    def __repr__(self) -> str:
        lines = [f'split: {self.split}', f'data_root: {self.data_root}']
        if self.num_per_class is not None:
            lines.append(f'images per class: {self.num_per_class}')
        if self._fully_initialized:
            lines.append(f'number of samples: {len(self)}')
        return '\n'.join([f'Dataset {type(self).__name__}'] +
                         ['    ' + ln for ln in lines])
