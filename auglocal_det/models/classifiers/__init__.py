from .local_image_classifier import LocalImageClassifier
from .mlaan_image_classifier import MLAANImageClassifier

__all__ = ['LocalImageClassifier', 'MLAANImageClassifier']
