from .local_image_classifier import GlobalPoolFcHead, LocalImageClassifier
from .mlaan_image_classifier import MLAANImageClassifier

__all__ = ['LocalImageClassifier', 'GlobalPoolFcHead', 'MLAANImageClassifier']
