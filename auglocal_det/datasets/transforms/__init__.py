from .formatting import PackClsInputs
from .loading import LoadImageTensor, decode_image_bytes
from .processing import (
    CenterCropTensor,
    RandomCropTensor,
    RandomFlipTensor,
    RandomResizedCropTensor,
    ResizeEdgeTensor,
)

__all__ = [
    'LoadImageTensor', 'decode_image_bytes', 'RandomResizedCropTensor',
    'RandomFlipTensor', 'ResizeEdgeTensor', 'CenterCropTensor',
    'RandomCropTensor', 'PackClsInputs'
]
