from .global_pool_fc_head import GlobalPoolFcHead
from .vgg_classifier_head import VGGClassifierHead

__all__ = ['GlobalPoolFcHead', 'VGGClassifierHead']
