"""AugLocal auxiliary networks (Ma et al., ICLR 2024)."""
from __future__ import annotations

import math
from fractions import Fraction
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.model import Sequential

from auglocal_det.registry import MODELS

from ..layers import get_block, make_res_block
from .base import AuxBatch, BaseAuxHead

__all__ = [
    'AugLocalAuxHead', 'auglocal_aux_depth', 'auglocal_depth_list',
    'auglocal_sample_layers', 'auglocal_strides'
]


def auglocal_aux_depth(depth: int,
                       module_index: int,
                       num_aux: int,
                       pyramid: bool = False,
                       tau: float = 0.5) -> int:
    """Depth of AugLocal's auxiliary network number ``module_index``.

    Without the pyramid every head has ``depth`` layers. With it the depth
    falls linearly from ``depth`` at the first head to
    ``depth * (1 - tau) + tau`` at the last one:
    ``d_j = max(1, round(depth * (1 - x_j) + x_j))`` with
    ``x_j = j * tau / (num_aux - 1)``, rounded half to even (Python's
    ``round``). The arithmetic is exact (fractions), so ties such as 3.5
    round as the formula says.

    Args:
        depth (int): Base depth d.
        module_index (int): Head index j, ``0 <= j < num_aux``.
        num_aux (int): Number of auxiliary heads.
        pyramid (bool): Use the pyramidal depth. Defaults to False.
        tau (float): Pyramid coefficient. Defaults to 0.5.

    Returns:
        int: The head's depth.
    """
    if depth < 1:
        raise ValueError(f'AugLocal depth must be >= 1, got {depth}')
    if not pyramid or num_aux <= 1:
        return depth
    x = module_index * Fraction(tau) / (num_aux - 1)
    return max(1, round(depth * (1 - x) + x))


def auglocal_depth_list(depth: int,
                        num_aux: int,
                        pyramid: bool = False,
                        tau: float = 0.5) -> List[int]:
    """Depths of all ``num_aux`` AugLocal heads (see
    :func:`auglocal_aux_depth`).

    Args:
        depth (int): Base depth d.
        num_aux (int): Number of auxiliary heads.
        pyramid (bool): Use the pyramidal depth. Defaults to False.
        tau (float): Pyramid coefficient. Defaults to 0.5.

    Returns:
        list[int]: Depth of head j for j = 0 .. num_aux - 1.
    """
    return [
        auglocal_aux_depth(depth, j, num_aux, pyramid, tau)
        for j in range(num_aux)
    ]


def auglocal_sample_layers(layer_index: int, depth: int,
                           num_layers: int) -> List[int]:
    """Layers sampled uniformly from the ones after ``layer_index``.

    With ``n = num_layers - 1 - layer_index`` later layers: all of them
    when ``depth >= n``, else
    ``round(layer_index + k * n / depth)`` for k = 1 .. depth, rounding
    half to even. The last layer is always included.

    Args:
        layer_index (int): Index i of the layer the head follows.
        depth (int): Number of layers to sample.
        num_layers (int): Number of local layers L of the network.

    Returns:
        list[int]: The sampled layer indices, increasing.
    """
    remaining = num_layers - 1 - layer_index
    if depth >= remaining:
        return list(range(layer_index + 1, num_layers))
    return [
        round(layer_index + Fraction(k * remaining, depth))
        for k in range(1, depth + 1)
    ]


def auglocal_strides(widths: Sequence[int], layer_index: int,
                     sampled: Sequence[int]) -> List[int]:
    """Strides of the auxiliary blocks, from the width progression.

    The resolution is halved every time the width doubles, as in the
    backbone, but a block halves at most once: with ``p`` the pending
    number of halvings, each sampled layer adds ``log2(width ratio)``;
    when ``p >= 1`` the block gets stride 2 and ``p`` drops by one. What is
    left carries over to the following blocks.

    Args:
        widths (Sequence[int]): ``planes`` of every local layer.
        layer_index (int): Index of the layer the head follows.
        sampled (Sequence[int]): Sampled layer indices.

    Returns:
        list[int]: Stride (1 or 2) of each auxiliary block.
    """
    pending = 0.0
    current = widths[layer_index]
    strides = []
    for index in sampled:
        pending += math.log2(widths[index] / current)
        if pending >= 1:
            strides.append(2)
            pending -= 1
        else:
            strides.append(1)
        current = widths[index]
    return strides


@MODELS.register_module()
class AugLocalAuxHead(BaseAuxHead):
    """AugLocal's auxiliary network: fresh blocks shaped like later layers.

    The head after local layer i samples ``d_i`` of the later layers
    uniformly (:func:`auglocal_sample_layers`), builds a new, randomly
    initialised residual block of each sampled layer's type and width, and
    ends with global average pooling and a linear classifier trained with
    cross-entropy. Block strides follow the width progression
    (:func:`auglocal_strides`); a block has a 1x1-conv + BN shortcut when
    its stride is not 1 or its width changes. For an ImageNet ResNet-34
    every head therefore ends at 512 x 7 x 7 for a 224 x 224 crop.

    Args:
        depth (int): Base depth d (number of sampled layers). Defaults to
            4.
        pyramid (bool): Pyramidal depth along the network (see
            :func:`auglocal_aux_depth`). Defaults to False.
        tau (float): Pyramid coefficient. Defaults to 0.5.
        widen_factor (float): Width multiplier of the auxiliary blocks; the
            classifier takes the widened width. Defaults to 1.0.
        bn1d_if_shallow (bool): Put a BatchNorm1d before the classifier
            when the head's depth is at most 1 (the papers' CIFAR
            networks). Defaults to False.
        with_cp (bool | int): Gradient checkpointing inside the blocks:
            True for every block, an int ``n`` for the first ``n`` blocks
            only (the largest: they run at the highest resolution).
            Defaults to False.
        **kwargs: Arguments of :class:`BaseAuxHead` (``layer_index``,
            ``layer_specs``, ``module_index``, ``num_aux``, ``num_classes``,
            ``image_size``, ``lambda_y``, ``norm_cfg``, ``init_cfg``).
    """

    def __init__(self,
                 depth: int = 4,
                 pyramid: bool = False,
                 tau: float = 0.5,
                 widen_factor: float = 1.0,
                 bn1d_if_shallow: bool = False,
                 with_cp: Union[bool, int] = False,
                 **kwargs) -> None:
        super().__init__(**kwargs)
        if widen_factor <= 0:
            raise ValueError('widen_factor must be positive')
        num_later = len(self.layer_specs) - 1
        if depth > num_later:
            raise ValueError(
                f'AugLocalAuxHead: depth={depth} (model.aux_head.depth) is '
                f'larger than the {num_later} local layers that can follow '
                f'an auxiliary head in a backbone of {num_later + 1} local '
                f'layers; choose a depth from 1 to {num_later} (heads near '
                'the end use all the layers left in any case)')
        self.depth = auglocal_aux_depth(depth, self.module_index,
                                        self.num_aux, pyramid, tau)
        self.widen_factor = widen_factor
        specs = self.layer_specs
        self.sampled_layers = auglocal_sample_layers(self.layer_index,
                                                     self.depth, len(specs))
        self.block_strides = auglocal_strides([s.planes for s in specs],
                                              self.layer_index,
                                              self.sampled_layers)

        if isinstance(with_cp, bool):
            num_cp = len(self.sampled_layers) if with_cp else 0
        elif isinstance(with_cp, int) and with_cp >= 0:
            num_cp = with_cp
        else:
            raise ValueError('AugLocalAuxHead: with_cp (model.aux_head.'
                             'with_cp) must be a bool or a number of blocks '
                             f'>= 0, got {with_cp!r}')
        blocks = []
        channels = self.in_channels
        for index, stride in zip(self.sampled_layers, self.block_strides):
            block = get_block(specs[index].block)
            planes = int(specs[index].planes * widen_factor)
            blocks.append(
                make_res_block(
                    block,
                    channels,
                    planes,
                    stride=stride,
                    with_cp=len(blocks) < num_cp,
                    norm_cfg=self.norm_cfg))
            channels = planes * block.expansion
        self.blocks = Sequential(*blocks)
        self.out_channels = channels
        self.pool = nn.AdaptiveAvgPool2d(1)
        if bn1d_if_shallow and self.depth <= 1:
            self.norm = nn.BatchNorm1d(channels)
        else:
            self.norm = None
        self.fc = nn.Linear(channels, self.num_classes)

    def forward_features(self, feat: torch.Tensor) -> torch.Tensor:
        """Run the auxiliary blocks only.

        Args:
            feat (Tensor): Output of the local module.

        Returns:
            Tensor: Features before pooling.
        """
        return self.blocks(feat)

    def forward(self, feat: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(self.pool(self.forward_features(feat)), 1)
        if self.norm is not None:
            x = self.norm(x)
        return self.fc(x)

    def loss(self, feat: torch.Tensor, batch: AuxBatch
             ) -> Tuple[Dict[str, torch.Tensor], Optional[torch.Tensor]]:
        logits = self(feat)
        loss_ce = F.cross_entropy(logits, batch.labels)
        return dict(loss_ce=self.lambda_y * loss_ce), logits

    def extra_repr(self) -> str:
        return (super().extra_repr() + f', depth={self.depth}, '
                f'sampled_layers={self.sampled_layers}')
