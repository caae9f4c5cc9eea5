"""Geometric transforms on uint8 CHW image tensors (torchvision kernels)."""
import math
from typing import Sequence, Tuple, Union

import numpy as np
import torchvision.transforms.v2.functional as F
from torchvision.transforms import InterpolationMode

from auglocal_det.registry import TRANSFORMS

__all__ = [
    'RandomResizedCropTensor', 'RandomFlipTensor', 'ResizeEdgeTensor',
    'CenterCropTensor', 'RandomCropTensor'
]

_INTERP = {
    'nearest': InterpolationMode.NEAREST,
    'bilinear': InterpolationMode.BILINEAR,
    'bicubic': InterpolationMode.BICUBIC,
}


def _pair(size: Union[int, Sequence[int]], name: str) -> Tuple[int, int]:
    """``size`` as ``(h, w)``; an int means a square."""
    if isinstance(size, int):
        size = (size, size)
    size = tuple(int(s) for s in size)
    if len(size) != 2 or min(size) <= 0:
        raise ValueError(f'{name}: size must be a positive int or (h, w), '
                         f'got {size}')
    return size


def _interp(name: str, owner: str) -> InterpolationMode:
    if name not in _INTERP:
        raise ValueError(f'{owner}: interpolation must be one of '
                         f'{sorted(_INTERP)}, got {name!r}')
    return _INTERP[name]


@TRANSFORMS.register_module()
class RandomResizedCropTensor:
    """Crop a random area and aspect ratio, then resize it (Inception crop).

    The crop covers a fraction of the image area drawn uniformly from
    ``scale`` and has an aspect ratio (w / h) drawn log-uniformly from
    ``ratio``; after ``max_attempts`` draws that do not fit, the largest
    centred crop with an aspect ratio inside ``ratio`` is used.

    Args:
        size (int | Sequence[int]): Output size, ``s`` or ``(h, w)``.
        scale (Sequence[float]): Range of the crop's area fraction.
            Defaults to (0.08, 1.0).
        ratio (Sequence[float]): Range of the crop's aspect ratio.
            Defaults to (3/4, 4/3).
        max_attempts (int): Random draws before the fallback. Defaults to
            10.
        interpolation (str): 'bilinear', 'bicubic' or 'nearest'. Defaults
            to 'bilinear'.
        antialias (bool): Antialiasing when shrinking. Defaults to True.
    """

    def __init__(self,
                 size: Union[int, Sequence[int]],
                 scale: Sequence[float] = (0.08, 1.0),
                 ratio: Sequence[float] = (3. / 4., 4. / 3.),
                 max_attempts: int = 10,
                 interpolation: str = 'bilinear',
                 antialias: bool = True) -> None:
        name = self.__class__.__name__
        self.size = _pair(size, name)
        if not (0 < scale[0] <= scale[1] <= 1):
            raise ValueError(f'{name}: scale must satisfy 0 < min <= max <= '
                             f'1, got {scale}')
        if not (0 < ratio[0] <= ratio[1]):
            raise ValueError(f'{name}: ratio must satisfy 0 < min <= max, '
                             f'got {ratio}')
        self.scale = tuple(scale)
        self.ratio = tuple(ratio)
        self.max_attempts = max_attempts
        self.interpolation = interpolation
        self._mode = _interp(interpolation, name)
        self.antialias = antialias

    def crop_box(self, height: int, width: int) -> Tuple[int, int, int, int]:
        """Draw a crop ``(top, left, h, w)`` for an image of this size."""
        area = height * width
        log_lo, log_hi = math.log(self.ratio[0]), math.log(self.ratio[1])
        for _ in range(self.max_attempts):
            target = area * np.random.uniform(*self.scale)
            aspect = math.exp(np.random.uniform(log_lo, log_hi))
            w = int(round(math.sqrt(target * aspect)))
            h = int(round(math.sqrt(target / aspect)))
            if 0 < w <= width and 0 < h <= height:
                top = np.random.randint(0, height - h + 1)
                left = np.random.randint(0, width - w + 1)
                return int(top), int(left), h, w
        # fallback: the whole image, trimmed to the allowed aspect ratios
        aspect = width / height
        if aspect < self.ratio[0]:
            w, h = width, int(round(width / self.ratio[0]))
        elif aspect > self.ratio[1]:
            h, w = height, int(round(height * self.ratio[1]))
        else:
            h, w = height, width
        return (height - h) // 2, (width - w) // 2, h, w

    def __call__(self, results: dict) -> dict:
        img = results['img']
        top, left, h, w = self.crop_box(*img.shape[-2:])
        results['img'] = F.resized_crop(
            img,
            top,
            left,
            h,
            w,
            list(self.size),
            interpolation=self._mode,
            antialias=self.antialias)
        results['img_shape'] = self.size
        results['crop_bbox'] = (left, top, left + w, top + h)
        return results

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}(size={self.size}, '
                f'scale={self.scale}, ratio={self.ratio}, '
                f'interpolation={self.interpolation!r})')


@TRANSFORMS.register_module()
class RandomFlipTensor:
    """Flip the image left-right with probability ``prob``.

    Args:
        prob (float): Probability of a flip. Defaults to 0.5.
    """

    def __init__(self, prob: float = 0.5) -> None:
        if not 0 <= prob <= 1:
            raise ValueError(f'{self.__class__.__name__}: prob must be in '
                             f'[0, 1], got {prob}')
        self.prob = prob

    def __call__(self, results: dict) -> dict:
        flip = bool(np.random.rand() < self.prob)
        if flip:
            results['img'] = results['img'].flip(-1)
        results['flip'] = flip
        return results

    def __repr__(self) -> str:
        return f'{self.__class__.__name__}(prob={self.prob})'


@TRANSFORMS.register_module()
class ResizeEdgeTensor:
    """Resize so that the shorter (or longer) edge has a given length.

    Args:
        scale (int): Target length of the edge.
        edge (str): 'short' or 'long'. Defaults to 'short'.
        interpolation (str): 'bilinear', 'bicubic' or 'nearest'. Defaults
            to 'bilinear'.
        antialias (bool): Antialiasing when shrinking. Defaults to True.
    """

    def __init__(self,
                 scale: int,
                 edge: str = 'short',
                 interpolation: str = 'bilinear',
                 antialias: bool = True) -> None:
        name = self.__class__.__name__
        if int(scale) <= 0:
            raise ValueError(f'{name}: scale must be positive, got {scale}')
        if edge not in ('short', 'long'):
            raise ValueError(f'{name}: edge must be "short" or "long", got '
                             f'{edge!r}')
        self.scale = int(scale)
        self.edge = edge
        self.interpolation = interpolation
        self._mode = _interp(interpolation, name)
        self.antialias = antialias

    def __call__(self, results: dict) -> dict:
        img = results['img']
        h, w = img.shape[-2:]
        ref = min(h, w) if self.edge == 'short' else max(h, w)
        factor = self.scale / ref
        new = (max(1, int(round(h * factor))), max(1, int(round(w * factor))))
        if new != (h, w):
            img = F.resize(
                img,
                list(new),
                interpolation=self._mode,
                antialias=self.antialias)
        results['img'] = img
        results['img_shape'] = new
        return results

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}(scale={self.scale}, '
                f'edge={self.edge!r}, interpolation={self.interpolation!r})')


@TRANSFORMS.register_module()
class CenterCropTensor:
    """Crop the centre of the image (zero-padded if the image is smaller).

    Args:
        size (int | Sequence[int]): Crop size, ``s`` or ``(h, w)``.
    """

    def __init__(self, size: Union[int, Sequence[int]]) -> None:
        self.size = _pair(size, self.__class__.__name__)

    def __call__(self, results: dict) -> dict:
        results['img'] = F.center_crop(results['img'], list(self.size))
        results['img_shape'] = self.size
        return results

    def __repr__(self) -> str:
        return f'{self.__class__.__name__}(size={self.size})'


@TRANSFORMS.register_module()
class RandomCropTensor:
    """Pad the image on every side, then crop a random window of ``size``.

    The small-image recipe of the local-learning papers: CIFAR-10 pads 4
    pixels by reflection and crops 32, SVHN pads 2 with zeros and crops 32,
    STL-10 pads 4 with zeros and crops 96 (the official AugLocal code).
    ``padding_mode='reflect'`` mirrors the border without repeating the
    edge pixel, as ``torch.nn.functional.pad(mode='reflect')`` does.

    Args:
        size (int | Sequence[int]): Crop size, ``s`` or ``(h, w)``.
        padding (int): Pixels added on each side. Defaults to 0.
        padding_mode (str): ``'constant'``, ``'reflect'``, ``'edge'`` or
            ``'symmetric'``. Defaults to ``'constant'``.
        fill (int): Value of constant padding. Defaults to 0.
    """

    _MODES = ('constant', 'reflect', 'edge', 'symmetric')

    def __init__(self,
                 size: Union[int, Sequence[int]],
                 padding: int = 0,
                 padding_mode: str = 'constant',
                 fill: int = 0) -> None:
        name = self.__class__.__name__
        self.size = _pair(size, name)
        if int(padding) != padding or padding < 0:
            raise ValueError(f'{name}: padding must be an int >= 0, got '
                             f'{padding!r}')
        if padding_mode not in self._MODES:
            raise ValueError(f'{name}: padding_mode must be one of '
                             f'{list(self._MODES)}, got {padding_mode!r}')
        self.padding = int(padding)
        self.padding_mode = padding_mode
        self.fill = fill

    def __call__(self, results: dict) -> dict:
        img = results['img']
        if self.padding:
            img = F.pad(
                img, [self.padding] * 4,
                fill=self.fill,
                padding_mode=self.padding_mode)
        height, width = img.shape[-2:]
        out_h, out_w = self.size
        if out_h > height or out_w > width:
            raise ValueError(
                f'{self.__class__.__name__}: crop {self.size} is larger than '
                f'the padded image ({height}, {width})')
        top = int(np.random.randint(0, height - out_h + 1))
        left = int(np.random.randint(0, width - out_w + 1))
        results['img'] = img[..., top:top + out_h, left:left + out_w]
        results['img_shape'] = self.size
        results['crop_bbox'] = (left - self.padding, top - self.padding,
                                left - self.padding + out_w,
                                top - self.padding + out_h)
        return results

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}(size={self.size}, '
                f'padding={self.padding}, '
                f'padding_mode={self.padding_mode!r})')
