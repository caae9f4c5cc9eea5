from .local_image_classifier import GlobalPoolFcHead, LocalImageClassifier

__all__ = ['LocalImageClassifier', 'GlobalPoolFcHead']
