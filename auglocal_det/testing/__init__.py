"""Data writers for tests, demos and tools (no test framework needed)."""
from .small_image_files import (
    make_class_images,
    write_cifar10,
    write_small_image_set,
    write_stl10,
    write_svhn,
)

__all__ = [
    'make_class_images', 'write_cifar10', 'write_svhn', 'write_stl10',
    'write_small_image_set'
]
