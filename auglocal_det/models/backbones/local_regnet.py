"""RegNetX (torchvision's definition) split into local layers."""
from __future__ import annotations

import functools
from typing import List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torchvision.models as tv_models
from torchvision.models.regnet import ResBottleneckBlock

from auglocal_det.errors import InputError
from auglocal_det.registry import MODELS

from .torchvision_local_backbone import (
    LocalLayerDef,
    TorchvisionLocalBackbone,
    norm_layer_of,
)

__all__ = ['LocalRegNet']


def _res_bottleneck(in_channels: int, width: int, stride: int,
                    norm_cfg: dict, group_width: int,
                    bottleneck_multiplier: float) -> Tuple[nn.Module, int]:
    """A fresh RegNetX block (1x1, grouped 3x3, 1x1, projection shortcut
    when the stride or the width changes); a :data:`LayerFactory` once the
    keyword arguments are bound."""
    inner = int(round(width * bottleneck_multiplier))
    if inner % group_width:
        raise InputError(
            f'a fresh RegNet block of width {width} needs a multiple of its '
            f'group width {group_width}; choose another '
            'model.aux_head.widen_factor')
    return ResBottleneckBlock(
        in_channels,
        width,
        stride,
        norm_layer_of(norm_cfg),
        nn.ReLU,
        group_width=group_width,
        bottleneck_multiplier=bottleneck_multiplier), width


@MODELS.register_module()
class LocalRegNet(TorchvisionLocalBackbone):
    """torchvision's RegNetX trunk, one local layer per block.

    The parameters are those of ``torchvision.models.regnet_x_400mf``
    (``stem.*``, ``trunk_output.block1.block1-0.*``, ...) without its
    ``fc``, which the ``LocalImageClassifier``'s ``head.fc`` replaces
    under the same name. The local layers are the stem and every
    ``ResBottleneckBlock``: L = 23 for RegNetX-400MF (1 + 1 + 2 + 7 + 12,
    as the AugLocal paper counts them, Ma et al., ICLR 2024, Table 3).

    Args:
        arch (str): A torchvision RegNetX constructor (no squeeze-
            excitation), e.g. ``'regnet_x_400mf'``. Defaults to
            ``'regnet_x_400mf'``.
        stem_stride (int): Stride of the stem convolution: 2 as in
            torchvision (ImageNet); 1 for 32 x 32 images (the CIFAR
            variant), which leaves a 2 x 2 map instead of 1 x 1.
            Defaults to 2.
        norm_cfg (dict, optional): Norm layers of the backbone. Defaults
            to None: torchvision's ``nn.BatchNorm2d``.
        **kwargs: ``out_indices``, ``norm_eval``, ``init_cfg`` of
            :class:`TorchvisionLocalBackbone`.
    """

    def __init__(self,
                 arch: str = 'regnet_x_400mf',
                 stem_stride: int = 2,
                 norm_cfg: Optional[dict] = None,
                 out_indices: Sequence[int] = (-1, ),
                 norm_eval: bool = False,
                 init_cfg: Optional[Union[dict, List[dict]]] = None) -> None:
        super().__init__(
            out_indices=out_indices, norm_eval=norm_eval, init_cfg=init_cfg)
        if not arch.startswith('regnet_x_') or not hasattr(tv_models, arch):
            raise KeyError(f'LocalRegNet: unknown arch {arch!r} '
                           "(model.backbone.arch); expected a torchvision "
                           "RegNetX such as 'regnet_x_400mf'")
        extra = {} if norm_cfg is None else dict(
            norm_layer=norm_layer_of(norm_cfg))
        device = torch.empty(0).device
        # torchvision derives the block widths with tensor arithmetic that
        # has no meta kernel: build on the CPU and move
        with torch.device('cpu' if device.type == 'meta' else device):
            net = getattr(tv_models, arch)(num_classes=1, **extra)
        net = net.to(device)
        self.stem = net.stem
        self.trunk_output = net.trunk_output
        self.stem[0].stride = (stem_stride, stem_stride)

        channels = self.stem[0].out_channels
        layers = [
            LocalLayerDef('stem', 'stem', ('stem', ), 3, channels,
                          stem_stride)
        ]
        for stage_name, stage in self.trunk_output.named_children():
            for block_name, block in stage.named_children():
                conv_b = block.f.b[0]
                width = block.f.c[0].out_channels
                name = f'trunk_output.{stage_name}.{block_name}'
                layers.append(
                    LocalLayerDef(
                        name, 'ResBottleneckBlock', (name, ), channels,
                        width, conv_b.stride[0],
                        functools.partial(
                            _res_bottleneck,
                            group_width=conv_b.out_channels // conv_b.groups,
                            bottleneck_multiplier=conv_b.out_channels /
                            width)))
                channels = width
        self._set_local_layers(layers)
