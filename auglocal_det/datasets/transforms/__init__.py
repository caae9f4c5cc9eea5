from .formatting import PackClsInputs
from .loading import (
    LoadImageTensor,
    decode_image_bytes,
    decode_image_with_depth,
)
from .processing import (
    CenterCropTensor,
    RandomCropTensor,
    RandomFlipTensor,
    RandomResizedCropTensor,
    ResizeEdgeTensor,
)

__all__ = [
    'LoadImageTensor', 'decode_image_bytes', 'decode_image_with_depth',
    'RandomResizedCropTensor',
    'RandomFlipTensor', 'ResizeEdgeTensor', 'CenterCropTensor',
    'RandomCropTensor', 'PackClsInputs'
]
