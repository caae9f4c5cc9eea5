"""Read and decode image files into uint8 CHW tensors."""
import io
import re
import warnings
from typing import Optional, Tuple

import numpy as np
import torch
from mmengine.fileio import get
from PIL import Image
from torchvision.io import ImageReadMode, decode_image

from auglocal_det.errors import InputFileNotFoundError
from auglocal_det.registry import TRANSFORMS

__all__ = [
    'LoadImageTensor', 'check_image_size', 'decode_image_bytes',
    'decode_image_with_depth'
]

# torchvision 0.29 flags its image codecs as deprecated in favour of
# TorchCodec (not a dependency here); they remain the fastest decoders we
# have (libjpeg-turbo), so keep the notice out of every worker's log.
warnings.filterwarnings(
    'ignore',
    message='The image decoding and encoding capabilities of TorchVision',
    category=DeprecationWarning)


def _to_8_bits(img: torch.Tensor) -> torch.Tensor:
    """Scale a 16-bit image (0..65535) to uint8 (0..255), rounding."""
    return ((img.to(torch.int32) + 128) // 257).to(torch.uint8)


def check_image_size(data: bytes,
                     path: str = '<bytes>',
                     max_pixels: Optional[int] = None) -> None:
    """Refuse an image whose decoded size is too large, from its header.

    A small file can decode to an enormous image (a "decompression bomb":
    a 1 MB PNG of 30000 x 30000 pixels takes 2.7 GB as RGB). PIL reads the
    width and height from the header without decoding; a file PIL cannot
    identify is left to the decoders.

    Args:
        data (bytes): The encoded file.
        path (str): Name used in the error message. Defaults to '<bytes>'.
        max_pixels (int, optional): Largest width x height accepted.
            Defaults to PIL's ``Image.MAX_IMAGE_PIXELS`` (89478485, about
            0.25 GB as RGB); no bound when that is None too.

    Raises:
        OSError: If the image has more pixels; the message names ``path``.
    """
    limit = Image.MAX_IMAGE_PIXELS if max_pixels is None else max_pixels
    if not limit:
        return
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', Image.DecompressionBombWarning)
        try:
            with Image.open(io.BytesIO(data)) as im:
                width, height = im.size
        except Image.DecompressionBombError as exc:  # > 2x PIL's limit
            found = re.search(r'\((\d+) pixels\)', str(exc))
            pixels = int(found.group(1)) if found else None
            size = f'{pixels} pixels' if pixels else 'too many pixels'
        except Exception:  # not identified from its header
            return
        else:
            pixels = width * height
            size = f'{width} x {height} = {pixels} pixels'
    if pixels is None or pixels > limit:
        raise OSError(
            f'refusing to decode image {path!r} ({len(data)} bytes): its '
            f'header says {size}, more than the {limit} an image may have '
            '(PIL.Image.MAX_IMAGE_PIXELS, or max_pixels of LoadImageTensor); '
            'a decompression bomb, or an image to downscale before training')


def decode_image_with_depth(
        data: bytes,
        path: str = '<bytes>',
        max_pixels: Optional[int] = None) -> Tuple[torch.Tensor, int]:
    """Decode an encoded image to RGB uint8; also say its bit depth.

    Like :func:`decode_image_bytes`, which it implements. A 16-bit image
    (PNG with 16 bits per channel, 16-bit grey TIFF or PNG) is scaled to 8
    bits (``round(v / 257)``), so that every image of a data set reaches
    the normalisation in the same range (unscaled, a 16-bit image would be
    normalised to values near 600 instead of 2, and a batch mixing both
    could not be collated).

    Args:
        data (bytes): The encoded file.
        path (str): Name used in the error message. Defaults to '<bytes>'.
        max_pixels (int, optional): Largest image accepted, checked from
            the header before decoding (see :func:`check_image_size`).
            Defaults to PIL's ``Image.MAX_IMAGE_PIXELS``.

    Returns:
        tuple[torch.Tensor, int]: uint8 tensor (3, H, W) in RGB order, and
        the bits per channel of the file (8 or 16).

    Raises:
        OSError: If the data is empty, an animation of several frames, or
            neither decoder can read it; the message names ``path``.
    """
    if not data:  # torch.frombuffer would fail naming no file
        raise OSError(f'cannot decode image {path!r}: the file is empty (0 '
                      'bytes; an interrupted download or copy?)')
    check_image_size(data, path, max_pixels)
    buf = torch.frombuffer(bytearray(data), dtype=torch.uint8)
    try:
        img = decode_image(buf, mode=ImageReadMode.RGB)
    except (RuntimeError, ValueError):
        pass
    else:
        if img.dim() == 4:  # one image per frame of an animated GIF
            kind = 'a GIF' if data[:4] == b'GIF8' else 'an image'
            raise OSError(
                f'cannot decode image {path!r} ({len(data)} bytes): it is '
                f'{kind} of {img.shape[0]} frames (an animation), not a '
                'still image; save one frame as a still image (e.g. JPEG or '
                'PNG)')
        if img.dtype == torch.uint16:
            return _to_8_bits(img), 16
        return img, 8
    try:
        with Image.open(io.BytesIO(data)) as im:
            if im.mode in ('I', 'I;16', 'I;16B', 'I;16L', 'I;16N'):
                grey = torch.from_numpy(
                    np.asarray(im).astype(np.int32).clip(0, 65535))
                return _to_8_bits(grey).expand(3, *grey.shape).contiguous(), \
                    16
            arr = np.asarray(im.convert('RGB'))
    except Exception as exc:
        raise OSError(f'cannot decode image {path!r} ({len(data)} bytes): '
                      f'{type(exc).__name__}: {exc}') from exc
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous(), 8


def decode_image_bytes(data: bytes,
                       path: str = '<bytes>',
                       max_pixels: Optional[int] = None) -> torch.Tensor:
    """Decode an encoded image to an RGB uint8 tensor of shape (3, H, W).

    JPEG, PNG, WebP and GIF go through torchvision's decoders
    (libjpeg-turbo for JPEG, chosen from the file's magic bytes, so a PNG
    named ``.JPEG`` also works); anything else, or a file torchvision
    rejects (e.g. an unusual JPEG colour space), falls back to PIL. 16-bit
    images are scaled to 8 bits (see :func:`decode_image_with_depth`).
    An image larger than ``max_pixels`` is refused before it is decoded
    (:func:`check_image_size`).

    Args:
        data (bytes): The encoded file.
        path (str): Name used in the error message. Defaults to '<bytes>'.
        max_pixels (int, optional): Largest image accepted. Defaults to
            PIL's ``Image.MAX_IMAGE_PIXELS``.

    Returns:
        torch.Tensor: uint8 tensor (3, H, W) in RGB order.

    Raises:
        OSError: If the image is too large or neither decoder can read the
            data; the message names ``path``.
    """
    return decode_image_with_depth(data, path, max_pixels)[0]


@TRANSFORMS.register_module()
class LoadImageTensor:
    """Load ``results['img_path']`` as an RGB uint8 tensor (3, H, W).

    Adds ``img``, ``ori_shape`` and ``img_shape`` (both ``(H, W)``).

    Args:
        backend_args (dict, optional): MMEngine file backend arguments
            (e.g. to read from object storage). Defaults to None.
        max_pixels (int, optional): Largest width x height accepted,
            checked from the file's header before decoding. Defaults to
            PIL's ``Image.MAX_IMAGE_PIXELS``.
    """

    def __init__(self,
                 backend_args: Optional[dict] = None,
                 max_pixels: Optional[int] = None) -> None:
        self.backend_args = backend_args
        self.max_pixels = max_pixels

    def __call__(self, results: dict) -> dict:
        path = results['img_path']
        try:
            data = get(path, backend_args=self.backend_args)
        except FileNotFoundError as exc:
            raise InputFileNotFoundError(
                f'image file {path!r} does not exist') from exc
        except OSError as exc:
            raise OSError(f'cannot read image file {path!r}: {exc}') from exc
        img = decode_image_bytes(data, path, self.max_pixels)
        results['img'] = img
        results['ori_shape'] = tuple(img.shape[-2:])
        results['img_shape'] = tuple(img.shape[-2:])
        return results

    def __repr__(self) -> str:
        return f'{self.__class__.__name__}(backend_args={self.backend_args})'
