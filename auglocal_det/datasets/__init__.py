from .imagenet import IMG_EXTENSIONS, ImageNet
from .pipeline_sampler import PipelineSampler
from .synthetic import (
    COCO_SHAPE_CLASSES,
    IMAGENET_SHAPE_CLASSES,
    ensure_synthetic,
    generate_coco_shapes,
    generate_imagenet_shapes,
)
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
    'ImageNet', 'IMG_EXTENSIONS', 'PipelineSampler', 'IMAGENET_SHAPE_CLASSES',
    'COCO_SHAPE_CLASSES', 'generate_imagenet_shapes', 'generate_coco_shapes',
    'ensure_synthetic', 'LoadImageTensor', 'decode_image_bytes',
    'RandomResizedCropTensor', 'RandomFlipTensor', 'ResizeEdgeTensor',
    'CenterCropTensor', 'PackClsInputs'
]
