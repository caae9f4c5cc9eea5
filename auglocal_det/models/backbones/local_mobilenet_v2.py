"""MobileNetV2 (torchvision's definition) split into local layers."""
from __future__ import annotations

import functools
from typing import List, Optional, Sequence, Tuple, Union

import torch.nn as nn
from torchvision.models import mobilenet_v2
from torchvision.models.mobilenetv2 import InvertedResidual
from torchvision.ops.misc import Conv2dNormActivation

from auglocal_det.registry import MODELS

from .torchvision_local_backbone import (
    LocalLayerDef,
    TorchvisionLocalBackbone,
    norm_layer_of,
)

__all__ = ['LocalMobileNetV2']


def _inverted_residual(in_channels: int, width: int, stride: int,
                       norm_cfg: dict,
                       expand_ratio: int) -> Tuple[nn.Module, int]:
    """A fresh inverted residual block (a :data:`LayerFactory` once
    ``expand_ratio`` is bound)."""
    return InvertedResidual(
        in_channels,
        width,
        stride,
        expand_ratio,
        norm_layer=norm_layer_of(norm_cfg)), width


def _last_conv_factory(in_channels: int, width: int, stride: int,
                       norm_cfg: dict) -> Tuple[nn.Module, int]:
    """Factory of fresh 1x1 conv - norm - ReLU6 layers (the last layer)."""
    return Conv2dNormActivation(
        in_channels,
        width,
        kernel_size=1,
        stride=stride,
        norm_layer=norm_layer_of(norm_cfg),
        activation_layer=nn.ReLU6), width


@MODELS.register_module()
class LocalMobileNetV2(TorchvisionLocalBackbone):
    """torchvision's ``mobilenet_v2`` features, one local layer per module.

    The parameters are those of ``torchvision.models.mobilenet_v2``
    (``features.0`` ... ``features.18``) without its classifier, which the
    ``LocalImageClassifier``'s ``head.fc`` replaces
    (``classifier.1`` in torchvision's model). The local layers are the
    19 modules of ``features``: the stem convolution, the 17 inverted
    residual blocks and the last 1x1 convolution (L = 19, as the AugLocal
    paper counts them, Ma et al., ICLR 2024, Table 3).

    Args:
        width_mult (float): torchvision's width multiplier. Defaults to
            1.0.
        stem_stride (int): Stride of the stem convolution: 2 as in
            torchvision (ImageNet); 1 for 32 x 32 images (the CIFAR
            variant), which leaves a 2 x 2 map after the four strided
            stages instead of 1 x 1. Defaults to 2.
        norm_cfg (dict, optional): Norm layers of the backbone. Defaults
            to None: torchvision's ``nn.BatchNorm2d``.
        **kwargs: ``out_indices``, ``norm_eval``, ``init_cfg`` of
            :class:`TorchvisionLocalBackbone`.
    """

    torchvision_head_keys = {'fc.': 'classifier.1.'}

    def __init__(self,
                 width_mult: float = 1.0,
                 stem_stride: int = 2,
                 norm_cfg: Optional[dict] = None,
                 out_indices: Sequence[int] = (-1, ),
                 norm_eval: bool = False,
                 init_cfg: Optional[Union[dict, List[dict]]] = None) -> None:
        super().__init__(
            out_indices=out_indices, norm_eval=norm_eval, init_cfg=init_cfg)
        extra = {} if norm_cfg is None else dict(
            norm_layer=norm_layer_of(norm_cfg))
        net = mobilenet_v2(num_classes=1, width_mult=width_mult, **extra)
        self.features = net.features
        self.features[0][0].stride = (stem_stride, stem_stride)

        layers = []
        channels = 3
        for index, module in enumerate(self.features):
            name = f'features.{index}'
            if isinstance(module, InvertedResidual):
                # an expanding block starts with its 1x1 expansion conv
                hidden = module.conv[0].out_channels if len(
                    module.conv) == 4 else channels
                layers.append(
                    LocalLayerDef(
                        name, 'InvertedResidual', (name, ), channels,
                        module.out_channels, module.stride,
                        functools.partial(
                            _inverted_residual,
                            expand_ratio=hidden // channels)))
                channels = module.out_channels
                continue
            out_channels = module[0].out_channels
            if index == 0:
                layers.append(
                    LocalLayerDef(name, 'stem', (name, ), channels,
                                  out_channels, stem_stride))
            else:
                layers.append(
                    LocalLayerDef(name, 'Conv2dNormActivation', (name, ),
                                  channels, out_channels, 1,
                                  _last_conv_factory))
            channels = out_channels
        self._set_local_layers(layers)
