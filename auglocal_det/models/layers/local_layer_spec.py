"""Description of one local layer of a backbone."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence, Tuple, Union

__all__ = ['LocalLayerSpec', 'to_2tuple_size']


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
    """Shape information of one local layer (the stem or one block).

    Args:
        name (str): ``'stem'`` or the block's module path, e.g.
            ``'layer1.0'``. The stem's parameters are the backbone's
            ``conv1.*`` and ``bn1.*``.
        block (str): ``'stem'``, ``'BasicBlock'`` or ``'Bottleneck'``.
        in_channels (int): Input channels of the layer.
        out_channels (int): Output channels of the layer.
        planes (int): The layer's width as AugLocal counts it
            (``net_dim``): the stem's output channels, or a block's
            ``planes`` (a Bottleneck outputs ``4 * planes``).
        stride (int): Total stride of the layer (4 for the ImageNet stem:
            strided conv and max-pool).
        downsample (int): Output resolution factor relative to the input
            image (4, 8, 16, 32 for an ImageNet ResNet's stages).
    """

    name: str
    block: str
    in_channels: int
    out_channels: int
    planes: int
    stride: int
    downsample: int

    def feature_size(
            self, image_size: Union[int, Sequence[int]]) -> Tuple[int, int]:
        """Spatial size ``(H, W)`` of this layer's output.

        Every strided layer of the ResNets here maps a side ``s`` to
        ``ceil(s / stride)``, so the output side is
        ``ceil(image side / downsample)``.

        Args:
            image_size (int or Sequence[int]): Input image size.

        Returns:
            tuple[int, int]: Output height and width.
        """
        height, width = to_2tuple_size(image_size)
        return (math.ceil(height / self.downsample),
                math.ceil(width / self.downsample))
