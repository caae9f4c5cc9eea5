from .imagenet import IMG_EXTENSIONS, ImageNet
from .transforms import (
    CenterCropTensor,
    LoadImageTensor,
    PackClsInputs,
    RandomFlipTensor,
    RandomResizedCropTensor,
    ResizeEdgeTensor,
    decode_image_bytes,
)

__all__ = [
    'ImageNet', 'IMG_EXTENSIONS', 'LoadImageTensor', 'decode_image_bytes',
    'RandomResizedCropTensor', 'RandomFlipTensor', 'ResizeEdgeTensor',
    'CenterCropTensor', 'PackClsInputs'
]
