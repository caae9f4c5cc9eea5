from ..layers.local_layer_spec import LocalLayerSpec
from .local_resnet import (
    LocalCifarResNet,
    LocalResNet,
    num_local_layers,
    resnet_arch_name,
    resnet_archs,
)

__all__ = [
    'LocalResNet', 'LocalCifarResNet', 'LocalLayerSpec', 'num_local_layers',
    'resnet_arch_name', 'resnet_archs'
]
