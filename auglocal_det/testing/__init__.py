"""Data writers for tests, demos and tools (no test framework needed)."""
from .small_image_files import (
    make_class_images,
    write_cifar10,
    write_fashion_mnist,
    write_idx,
    write_small_image_set,
    write_stl10,
    write_svhn,
)
from .synthetic_shapes import (
    COCO_SHAPE_CLASSES,
    IMAGENET_SHAPE_CLASSES,
    ensure_synthetic,
    generate_coco_shapes,
    generate_imagenet_shapes,
)

__all__ = [
    'IMAGENET_SHAPE_CLASSES', 'COCO_SHAPE_CLASSES', 'generate_imagenet_shapes',
    'generate_coco_shapes', 'ensure_synthetic', 'make_class_images',
    'write_cifar10', 'write_svhn', 'write_stl10', 'write_idx',
    'write_fashion_mnist', 'write_small_image_set'
]
