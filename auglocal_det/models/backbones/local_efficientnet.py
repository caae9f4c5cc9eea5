"""EfficientNet-B0 (torchvision's definition) split into local layers."""
from __future__ import annotations

import functools
from typing import List, Optional, Sequence, Tuple, Union

import torch.nn as nn
from torchvision.models.efficientnet import (
    EfficientNet,
    MBConv,
    MBConvConfig,
    _efficientnet_conf,
)
from torchvision.ops.misc import Conv2dNormActivation

from auglocal_det.registry import MODELS

from .torchvision_local_backbone import (
    LocalLayerDef,
    TorchvisionLocalBackbone,
    norm_layer_of,
)

__all__ = ['LocalEfficientNet']


def _mbconv(in_channels: int, width: int, stride: int, norm_cfg: dict,
            expand_ratio: float, kernel: int,
            stochastic_depth_prob: float) -> MBConv:
    """A fresh MBConv block (expansion, depthwise conv, squeeze-excitation,
    projection) with exactly these input and output widths."""
    cnf = MBConvConfig(expand_ratio, kernel, stride, in_channels, width, 1)
    # MBConvConfig rounds the widths to multiples of 8; keep them exact
    cnf.input_channels, cnf.out_channels = in_channels, width
    return MBConv(cnf, stochastic_depth_prob, norm_layer_of(norm_cfg))


def _mbconv_layer(in_channels: int,
                  width: int,
                  stride: int,
                  norm_cfg: dict,
                  expand_ratio: float,
                  kernel: int,
                  stochastic_depth_prob: float,
                  last_conv: Optional[Tuple[int, int]] = None
                  ) -> Tuple[nn.Module, int]:
    """A fresh MBConv layer (a :data:`LayerFactory` once the keyword
    arguments are bound); with ``last_conv`` = (MBConv width, conv width)
    the layer also ends with the network's last 1x1 conv - norm - SiLU,
    whose width is the layer's width."""
    if last_conv is None:
        return _mbconv(in_channels, width, stride, norm_cfg, expand_ratio,
                       kernel, stochastic_depth_prob), width
    mid = max(1, round(width * last_conv[0] / last_conv[1]))
    return nn.Sequential(
        _mbconv(in_channels, mid, stride, norm_cfg, expand_ratio, kernel,
                stochastic_depth_prob),
        Conv2dNormActivation(
            mid,
            width,
            kernel_size=1,
            norm_layer=norm_layer_of(norm_cfg),
            activation_layer=nn.SiLU)), width


@MODELS.register_module()
class LocalEfficientNet(TorchvisionLocalBackbone):
    """torchvision's ``efficientnet_b0`` features, one local layer per block.

    The parameters are those of ``torchvision.models.efficientnet_b0``
    (``features.0`` ... ``features.8``) without its classifier, which the
    ``LocalImageClassifier``'s ``head.fc`` replaces (``classifier.1`` in
    torchvision's model). The local layers are the stem convolution and
    the 16 MBConv blocks (L = 17, as the AugLocal paper counts them, Ma et
    al., ICLR 2024, Table 3); the network's last 1x1 convolution
    (``features.8``) belongs to the last block's local layer.

    Args:
        arch (str): ``'b0'``. Defaults to ``'b0'``.
        width_mult (float): Width multiplier of torchvision's
            configuration (1.0 for B0). Defaults to 1.0.
        stochastic_depth_prob (float): torchvision's stochastic depth
            probability (of the last block; it grows linearly along the
            blocks). Defaults to 0.2.
        stem_stride (int): Stride of the stem convolution: 2 as in
            torchvision (ImageNet); 1 for 32 x 32 images (the CIFAR
            variant), which leaves a 2 x 2 map instead of 1 x 1.
            Defaults to 2.
        norm_cfg (dict, optional): Norm layers of the backbone. Defaults
            to None: torchvision's ``nn.BatchNorm2d``.
        **kwargs: ``out_indices``, ``norm_eval``, ``init_cfg`` of
            :class:`TorchvisionLocalBackbone`.
    """

    torchvision_head_keys = {'fc.': 'classifier.1.'}
    archs = ('b0', )

    def __init__(self,
                 arch: str = 'b0',
                 width_mult: float = 1.0,
                 stochastic_depth_prob: float = 0.2,
                 stem_stride: int = 2,
                 norm_cfg: Optional[dict] = None,
                 out_indices: Sequence[int] = (-1, ),
                 norm_eval: bool = False,
                 init_cfg: Optional[Union[dict, List[dict]]] = None) -> None:
        super().__init__(
            out_indices=out_indices, norm_eval=norm_eval, init_cfg=init_cfg)
        if arch not in self.archs:
            raise KeyError(f'LocalEfficientNet: unknown arch {arch!r} '
                           f'(model.backbone.arch); expected {self.archs}')
        setting, last_channel = _efficientnet_conf(
            f'efficientnet_{arch}', width_mult=width_mult, depth_mult=1.0)
        extra = {} if norm_cfg is None else dict(
            norm_layer=norm_layer_of(norm_cfg))
        net = EfficientNet(
            setting,
            dropout=0.2,
            stochastic_depth_prob=stochastic_depth_prob,
            num_classes=1,
            last_channel=last_channel,
            **extra)
        self.features = net.features
        self.features[0][0].stride = (stem_stride, stem_stride)

        last_conv = self.features[-1]
        last_index = len(self.features) - 1
        layers = [
            LocalLayerDef('features.0', 'stem', ('features.0', ), 3,
                          self.features[0][0].out_channels, stem_stride)
        ]
        channels = layers[0].out_channels
        for stage, cnf in enumerate(setting, start=1):
            for j, block in enumerate(self.features[stage]):
                name = f'features.{stage}.{j}'
                stride = cnf.stride if j == 0 else 1
                prob = block.stochastic_depth.p
                if stage == last_index - 1 and j == len(
                        self.features[stage]) - 1:
                    out_channels = last_conv[0].out_channels
                    layers.append(
                        LocalLayerDef(
                            f'{name}+features.{last_index}', 'MBConv',
                            (name, f'features.{last_index}'), channels,
                            out_channels, stride,
                            functools.partial(
                                _mbconv_layer,
                                expand_ratio=cnf.expand_ratio,
                                kernel=cnf.kernel,
                                stochastic_depth_prob=prob,
                                last_conv=(block.out_channels,
                                           out_channels))))
                else:
                    out_channels = block.out_channels
                    layers.append(
                        LocalLayerDef(
                            name, 'MBConv', (name, ), channels, out_channels,
                            stride,
                            functools.partial(
                                _mbconv_layer,
                                expand_ratio=cnf.expand_ratio,
                                kernel=cnf.kernel,
                                stochastic_depth_prob=prob)))
                channels = out_channels
        self._set_local_layers(layers)
