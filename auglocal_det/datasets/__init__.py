from .imagenet import IMG_EXTENSIONS, ImageNet
from .pipeline_sampler import PipelineSampler
from .small_images import CIFAR10, MNIST, STL10, SVHN, FashionMNIST
from .transforms import (
    CenterCropTensor,
    LoadImageTensor,
    PackClsInputs,
    RandomCropTensor,
    RandomFlipTensor,
    RandomResizedCropTensor,
    ResizeEdgeTensor,
    decode_image_bytes,
)

__all__ = [
    'ImageNet', 'IMG_EXTENSIONS', 'CIFAR10', 'SVHN', 'STL10', 'MNIST',
    'FashionMNIST',
    'PipelineSampler', 'LoadImageTensor', 'decode_image_bytes',
    'RandomResizedCropTensor', 'RandomFlipTensor', 'ResizeEdgeTensor',
    'CenterCropTensor', 'RandomCropTensor', 'PackClsInputs'
]
