"""Description of one local layer of a backbone."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence, Tuple, Union

import torch.nn as nn

from auglocal_det.errors import InputError

from .res_blocks import get_block, make_res_block

__all__ = ['LayerFactory', 'LocalLayerSpec', 'to_2tuple_size']

#: ``factory(in_channels, width, stride, norm_cfg) -> (layer, out_channels)``
#: builds a new, randomly initialised layer of one kind (see
#: :meth:`LocalLayerSpec.fresh_layer`).
LayerFactory = Callable[[int, int, int, dict], Tuple[nn.Module, int]]


def to_2tuple_size(size: Union[int, Sequence[int]]) -> Tuple[int, int]:
    """Return an image size as ``(height, width)``.

    Args:
        size (int or Sequence[int]): One side of a square image, or
            ``(height, width)``.

    Returns:
        tuple[int, int]: ``(height, width)``.
    """
    if isinstance(size, int):
        return size, size
    height, width = size
    return int(height), int(width)


@dataclass(frozen=True)
class LocalLayerSpec:
    """Shape information of one local layer, and how to build another one.

    A local layer is what one local loss may train alone: the stem or one
    residual block of a ResNet, one block of a MobileNetV2, EfficientNet or
    RegNet, one convolution of a VGG.

    Args:
        name (str): ``'stem'`` or the layer's module path in the backbone,
            e.g. ``'layer1.0'`` or ``'features.3'``. The ResNet stem's
            parameters are the backbone's ``conv1.*`` and ``bn1.*``.
        block (str): Kind of the layer: ``'stem'``, ``'BasicBlock'``,
            ``'Bottleneck'``, or the name of the layer's class in the
            backbone (``'InvertedResidual'``, ``'MBConv'``, ...).
        in_channels (int): Input channels of the layer.
        out_channels (int): Output channels of the layer.
        planes (int): The layer's width as AugLocal counts it
            (``net_dim``): the output channels, except for a Bottleneck,
            whose ``planes`` is a quarter of its output.
        stride (int): Total stride of the layer (4 for the ImageNet ResNet
            stem: strided conv and max-pool).
        downsample (int): Output resolution factor relative to the input
            image (4, 8, 16, 32 for an ImageNet ResNet's stages).
        size_rounding (str): How the layer's strided operations round an
            odd side: ``'ceil'`` (padded strided convolutions) or
            ``'floor'`` (2 x 2 max-pooling, VGG). Defaults to ``'ceil'``.
        factory (LayerFactory, optional): Builds a fresh layer of the same
            kind (:meth:`fresh_layer`). Defaults to None: residual blocks
            are built by :func:`~auglocal_det.models.layers.make_res_block`,
            other kinds (the stems) cannot be rebuilt.
    """

    name: str
    block: str
    in_channels: int
    out_channels: int
    planes: int
    stride: int
    downsample: int
    size_rounding: str = 'ceil'
    factory: Optional[LayerFactory] = field(
        default=None, compare=False, repr=False)

    def feature_size(
            self, image_size: Union[int, Sequence[int]]) -> Tuple[int, int]:
        """Spatial size ``(H, W)`` of this layer's output.

        The strided layers of every backbone here map a side ``s`` to
        ``ceil(s / stride)`` (padded convolutions) or, for VGG's max-pools,
        ``floor(s / stride)``; either composes, so the output side is the
        image side divided by ``downsample`` and rounded that way.

        Args:
            image_size (int or Sequence[int]): Input image size.

        Returns:
            tuple[int, int]: Output height and width.
        """
        height, width = to_2tuple_size(image_size)
        if self.size_rounding == 'floor':
            return height // self.downsample, width // self.downsample
        return (math.ceil(height / self.downsample),
                math.ceil(width / self.downsample))

    @property
    def expansion(self) -> int:
        """int: Output channels per unit of ``planes`` (4 for a
        Bottleneck, 1 otherwise)."""
        return self.out_channels // self.planes

    def fresh_layer(self,
                    in_channels: int,
                    stride: int = 1,
                    widen_factor: float = 1.0,
                    norm_cfg: Optional[dict] = None,
                    with_cp: bool = False) -> Tuple[nn.Module, int]:
        """A new, randomly initialised layer of this layer's kind.

        This is what AugLocal builds for its auxiliary networks: a layer
        shaped like this one (width ``planes * widen_factor``) that takes
        ``in_channels`` channels and has the given stride.

        Args:
            in_channels (int): Input channels of the new layer.
            stride (int): Its stride (1 or 2). Defaults to 1.
            widen_factor (float): Width multiplier. Defaults to 1.0.
            norm_cfg (dict, optional): Config of its norm layers. Defaults
                to None, i.e. ``dict(type='BN')``.
            with_cp (bool): Gradient checkpointing inside the layer (only
                residual blocks support it). Defaults to False.

        Returns:
            tuple[nn.Module, int]: The layer and its output channels.
        """
        norm_cfg = dict(type='BN') if norm_cfg is None else norm_cfg
        width = int(self.planes * widen_factor)
        if self.factory is None:
            if self.block not in ('BasicBlock', 'Bottleneck'):
                raise InputError(
                    f'local layer {self.name} ({self.block}) has no '
                    'definition to build a fresh layer of its kind from')
            block = get_block(self.block)
            layer = make_res_block(
                block,
                in_channels,
                width,
                stride=stride,
                with_cp=with_cp,
                norm_cfg=norm_cfg)
            return layer, width * block.expansion
        if with_cp:
            raise InputError(
                f'with_cp=True: gradient checkpointing inside fresh '
                f'{self.block} layers is not supported (only residual '
                'blocks have it); set with_cp=False in model.aux_head')
        return self.factory(in_channels, width, stride, norm_cfg)
