from ..layers.local_layer_spec import LocalLayerSpec
from .local_efficientnet import LocalEfficientNet
from .local_mobilenet_v2 import LocalMobileNetV2
from .local_regnet import LocalRegNet
from .local_resnet import (
    LocalCifarResNet,
    LocalResNet,
    num_local_layers,
    resnet_arch_name,
    resnet_archs,
)
from .local_vgg import LocalVGG
from .torchvision_local_backbone import (
    LocalLayerDef,
    TorchvisionLocalBackbone,
)

__all__ = [
    'LocalResNet', 'LocalCifarResNet', 'LocalLayerSpec', 'num_local_layers',
    'resnet_arch_name', 'resnet_archs', 'LocalEfficientNet',
    'LocalMobileNetV2', 'LocalRegNet', 'LocalVGG', 'LocalLayerDef',
    'TorchvisionLocalBackbone'
]
