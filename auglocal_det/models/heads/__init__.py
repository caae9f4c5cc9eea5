from .vgg_classifier_head import VGGClassifierHead

__all__ = ['VGGClassifierHead']
