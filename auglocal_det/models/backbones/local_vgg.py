"""VGG with batch normalisation (torchvision's definition) split into
local layers."""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple, Union

import torch.nn as nn
from torchvision.models.vgg import cfgs, make_layers

from auglocal_det.registry import MODELS

from ..layers import build_norm_layer
from .torchvision_local_backbone import (
    LocalLayerDef,
    TorchvisionLocalBackbone,
)

__all__ = ['LocalVGG']


def _vgg_layer(in_channels: int, width: int, stride: int,
               norm_cfg: dict) -> Tuple[nn.Module, int]:
    """A fresh VGG layer: [2 x 2 max-pool when ``stride`` is 2], 3x3 conv
    (with bias) - norm - ReLU, as the layers of ``features``."""
    layers = [nn.MaxPool2d(kernel_size=2, stride=2)] if stride == 2 else []
    layers += [
        nn.Conv2d(in_channels, width, kernel_size=3, padding=1),
        build_norm_layer(norm_cfg, width),
        nn.ReLU(inplace=True)
    ]
    return nn.Sequential(*layers), width


@MODELS.register_module()
class LocalVGG(TorchvisionLocalBackbone):
    """torchvision's ``vgg{depth}_bn`` features, one local layer per conv.

    The parameters are those of ``torchvision.models.vgg{depth}_bn``'s
    ``features`` (``features.0``, ``features.1``, ...): every convolution
    has a bias and is followed by BatchNorm and ReLU, the VGG of the
    official AugLocal ImageNet code (``exp_imagenet/networks/vgg.py``). A
    local layer is one conv - BN - ReLU together with the max-pool before
    it; the last one also owns the final max-pool: L = 10 for VGG-13 and
    16 for VGG-19 (Ma et al., ICLR 2024). The classifier is the
    ``LocalImageClassifier``'s head: :class:`VGGClassifierHead`
    (torchvision's ``avgpool`` + ``classifier``) on ImageNet, global
    pooling + one FC for 32 x 32 images, where the five max-pools leave
    1 x 1 (the usual CIFAR VGG).

    The weights start as torchvision's: Kaiming-normal (fan_out)
    convolutions with zero bias, BatchNorm weight 1 and bias 0.

    Args:
        depth (int): 11, 13, 16 or 19. Defaults to 13.
        **kwargs: ``out_indices``, ``norm_eval``, ``init_cfg`` of
            :class:`TorchvisionLocalBackbone`.
    """

    torchvision_head_keys = {'classifier.': 'classifier.'}
    size_rounding = 'floor'
    arch_settings = {11: 'A', 13: 'B', 16: 'D', 19: 'E'}

    def __init__(self,
                 depth: int = 13,
                 out_indices: Sequence[int] = (-1, ),
                 norm_eval: bool = False,
                 init_cfg: Optional[Union[dict, List[dict]]] = None) -> None:
        if init_cfg is None:
            init_cfg = [
                dict(type='Kaiming', layer='Conv2d', bias=0),
                dict(type='Constant', val=1, bias=0, layer='_BatchNorm')
            ]
        super().__init__(
            out_indices=out_indices, norm_eval=norm_eval, init_cfg=init_cfg)
        if depth not in self.arch_settings:
            raise KeyError(f'LocalVGG: invalid depth {depth} '
                           '(model.backbone.depth); expected one of '
                           f'{sorted(self.arch_settings)}')
        self.depth = depth
        self.features = make_layers(
            cfgs[self.arch_settings[depth]], batch_norm=True)

        layers: List[LocalLayerDef] = []
        pending: List[str] = []  # a max-pool waiting for the next conv
        channels = 3
        for index, module in enumerate(self.features):
            if isinstance(module, nn.MaxPool2d):
                pending.append(f'features.{index}')
            elif isinstance(module, nn.Conv2d):
                name = f'features.{index}'
                paths = tuple(pending) + tuple(
                    f'features.{i}' for i in range(index, index + 3))
                layers.append(
                    LocalLayerDef(name, 'VGGLayer', paths, channels,
                                  module.out_channels, 2**len(pending),
                                  _vgg_layer))
                channels = module.out_channels
                pending = []
        last = layers[-1]
        layers[-1] = last._replace(
            modules=last.modules + tuple(pending),
            stride=last.stride * 2**len(pending))
        self._set_local_layers(layers)
