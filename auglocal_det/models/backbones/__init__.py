from ..layers.local_layer_spec import LocalLayerSpec
from .local_resnet import LocalCifarResNet, LocalResNet

__all__ = ['LocalResNet', 'LocalCifarResNet', 'LocalLayerSpec']
