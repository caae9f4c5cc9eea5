"""Read and decode image files into uint8 CHW tensors."""
import io
import warnings
from typing import Optional

import numpy as np
import torch
from mmengine.fileio import get
from PIL import Image
from torchvision.io import ImageReadMode, decode_image

from auglocal_det.registry import TRANSFORMS

__all__ = ['LoadImageTensor', 'decode_image_bytes']

# torchvision 0.29 flags its image codecs as deprecated in favour of
# TorchCodec (not a dependency here); they remain the fastest decoders we
# have (libjpeg-turbo), so keep the notice out of every worker's log.
warnings.filterwarnings(
    'ignore',
    message='The image decoding and encoding capabilities of TorchVision',
    category=DeprecationWarning)


def decode_image_bytes(data: bytes, path: str = '<bytes>') -> torch.Tensor:
    """Decode an encoded image to an RGB uint8 tensor of shape (3, H, W).

    JPEG, PNG, WebP and GIF go through torchvision's decoders
    (libjpeg-turbo for JPEG, chosen from the file's magic bytes, so a PNG
    named ``.JPEG`` also works); anything else, or a file torchvision
    rejects (e.g. an unusual JPEG colour space), falls back to PIL.

    Args:
        data (bytes): The encoded file.
        path (str): Name used in the error message. Defaults to '<bytes>'.

    Returns:
        torch.Tensor: uint8 tensor (3, H, W) in RGB order.

    Raises:
        OSError: If neither decoder can read the data; the message names
            ``path``.
    """
    buf = torch.frombuffer(bytearray(data), dtype=torch.uint8)
    try:
        return decode_image(buf, mode=ImageReadMode.RGB)
    except (RuntimeError, ValueError):
        pass
    try:
        with Image.open(io.BytesIO(data)) as im:
            arr = np.asarray(im.convert('RGB'))
    except Exception as exc:
        raise OSError(f'cannot decode image {path!r} ({len(data)} bytes): '
                      f'{type(exc).__name__}: {exc}') from exc
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous()


@TRANSFORMS.register_module()
class LoadImageTensor:
    """Load ``results['img_path']`` as an RGB uint8 tensor (3, H, W).

    Adds ``img``, ``ori_shape`` and ``img_shape`` (both ``(H, W)``).

    Args:
        backend_args (dict, optional): MMEngine file backend arguments
            (e.g. to read from object storage). Defaults to None.
    """

    def __init__(self, backend_args: Optional[dict] = None) -> None:
        self.backend_args = backend_args

    def __call__(self, results: dict) -> dict:
        path = results['img_path']
        try:
            data = get(path, backend_args=self.backend_args)
        except FileNotFoundError as exc:
            raise FileNotFoundError(
                f'image file {path!r} does not exist') from exc
        except OSError as exc:
            raise OSError(f'cannot read image file {path!r}: {exc}') from exc
        img = decode_image_bytes(data, path)
        results['img'] = img
        results['ori_shape'] = tuple(img.shape[-2:])
        results['img_shape'] = tuple(img.shape[-2:])
        return results

    def __repr__(self) -> str:
        return f'{self.__class__.__name__}(backend_args={self.backend_args})'
