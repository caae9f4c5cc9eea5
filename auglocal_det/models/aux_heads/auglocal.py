"""AugLocal auxiliary networks (Ma et al., ICLR 2024)."""
from __future__ import annotations

import math
from fractions import Fraction
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.model import Sequential

from auglocal_det.errors import InputError
from auglocal_det.registry import MODELS

from ..layers import LocalLayerSpec
from .base import AuxBatch, BaseAuxHead

__all__ = [
    'AugLocalAuxHead', 'auglocal_aux_depth', 'auglocal_depth_list',
    'auglocal_sample_layers', 'auglocal_stride_rule', 'auglocal_strides'
]

#: The rules that set the strides of AugLocal's auxiliary layers.
STRIDE_RULES = ('auto', 'width', 'width-change', 'resolution')


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
        raise InputError(f'AugLocal depth must be >= 1, got {depth}')
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


def auglocal_strides(widths: Sequence[int],
                     layer_index: int,
                     sampled: Sequence[int],
                     per_change: bool = False) -> List[int]:
    """Strides of the auxiliary layers, from a progression of the layers.

    With ``widths`` the layers' widths this is the official rule of the
    ResNets: the resolution is halved every time the width doubles, but a
    layer halves at most once: with ``p`` the pending number of halvings,
    each sampled layer adds ``log2(width ratio)``; when ``p >= 1`` the
    layer gets stride 2 and ``p`` drops by one. What is left carries over
    to the following layers. With the layers' ``downsample`` factors
    instead of their widths, the auxiliary network halves where the
    backbone does (same carry-over).

    ``per_change=True`` is the official VGG rule instead: stride 2 for every
    sampled layer whose width differs from the previous one, nothing
    carried over.

    Args:
        widths (Sequence[int]): ``planes`` (or ``downsample``) of every
            local layer.
        layer_index (int): Index of the layer the head follows.
        sampled (Sequence[int]): Sampled layer indices.
        per_change (bool): One halving per change of width. Defaults to
            False.

    Returns:
        list[int]: Stride (1 or 2) of each auxiliary layer.
    """
    pending = 0.0
    current = widths[layer_index]
    strides = []
    for index in sampled:
        if per_change:
            strides.append(2 if widths[index] != current else 1)
            current = widths[index]
            continue
        pending += math.log2(widths[index] / current)
        if pending >= 1:
            strides.append(2)
            pending -= 1
        else:
            strides.append(1)
        current = widths[index]
    return strides


def auglocal_stride_rule(layer_specs: Sequence[LocalLayerSpec]) -> str:
    """The stride rule ``'auto'`` stands for, for a backbone.

    ``'width'`` (the official rule of the ResNets) for the ResNets and
    wherever else it is defined: every local layer's ``planes`` is its
    predecessor's times a power of two (VGG). ``'resolution'`` otherwise
    (MobileNetV2, EfficientNet, RegNet, whose widths grow by other factors
    or shrink).

    Args:
        layer_specs (Sequence[LocalLayerSpec]): The backbone's layers.

    Returns:
        str: ``'width'`` or ``'resolution'``.
    """
    if all(spec.block in ('stem', 'BasicBlock', 'Bottleneck')
           for spec in layer_specs):
        return 'width'
    for prev, spec in zip(layer_specs, layer_specs[1:]):
        ratio = spec.planes / prev.planes
        if ratio < 1 or not math.log2(ratio).is_integer():
            return 'resolution'
    return 'width'


@MODELS.register_module()
class AugLocalAuxHead(BaseAuxHead):
    """AugLocal's auxiliary network: fresh layers shaped like later layers.

    The head after local layer i samples ``d_i`` of the later layers
    uniformly (:func:`auglocal_sample_layers`), builds a new, randomly
    initialised layer of each sampled layer's kind and width
    (:meth:`LocalLayerSpec.fresh_layer`: a residual block for a ResNet, an
    inverted residual for MobileNetV2, an MBConv with squeeze-excitation
    for EfficientNet, ...), and ends with global average pooling,
    optional hidden FC layers and a linear classifier trained with
    cross-entropy. Layer strides follow ``stride_rule``
    (:func:`auglocal_strides`); a residual block has a 1x1-conv + BN
    shortcut when its stride is not 1 or its width changes. For an
    ImageNet ResNet-34 every head therefore ends at 512 x 7 x 7 for a
    224 x 224 crop.

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
        with_cp (bool | int): Gradient checkpointing inside the blocks
            (residual blocks only): True for every block, an int ``n`` for
            the first ``n`` blocks only (the largest: they run at the
            highest resolution). Defaults to False.
        cp_max_downsample (int, optional): Apply ``with_cp`` only if the
            head's input is downsampled at most this much from the image
            (``LocalLayerSpec.downsample``; e.g. 4 for the heads of
            ResNet-34's stem and ``layer1`` at 56 x 56, whose tensors are
            the largest, at a quarter of the recomputation of all heads).
            Defaults to None: every head.
        stride_rule (str): ``'width'``: halve the resolution where the
            sampled layers' width doubles (the official ResNet code);
            ``'width-change'``: halve once wherever the width changes (the
            official VGG code); ``'resolution'``: halve where the backbone
            does; ``'auto'``: ``'width'`` for backbones whose widths only
            double, else ``'resolution'`` (:func:`auglocal_stride_rule`).
            Defaults to ``'auto'``.
        hidden_channels (Sequence[int]): Widths of hidden FC layers (each
            FC with bias, BatchNorm1d, ReLU) between the pooling and the
            classifier. Defaults to ``()``; the VGG-13 ImageNet network of
            the AugLocal paper uses ``(512, 512)``.
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
                 cp_max_downsample: Optional[int] = None,
                 stride_rule: str = 'auto',
                 hidden_channels: Sequence[int] = (),
                 **kwargs) -> None:
        super().__init__(**kwargs)
        if stride_rule not in STRIDE_RULES:
            raise InputError(
                f'AugLocalAuxHead: stride_rule={stride_rule!r} '
                f'(model.aux_head.stride_rule); expected one of '
                f'{list(STRIDE_RULES)}')
        if not widen_factor > 0:
            raise InputError(
                f'AugLocalAuxHead: widen_factor={widen_factor} '
                '(model.aux_head.widen_factor) must be positive; 1.0 gives '
                'the auxiliary blocks the widths of the backbone layers they '
                'copy, 0.5 half of them')
        if depth < 1:
            raise InputError(
                f'AugLocalAuxHead: depth={depth} (model.aux_head.depth) must '
                'be at least 1 (the number of residual blocks of each '
                'auxiliary network)')
        num_later = len(self.layer_specs) - 1
        if depth > num_later:
            raise InputError(
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
        if stride_rule == 'auto':
            stride_rule = auglocal_stride_rule(specs)
        self.stride_rule = stride_rule
        progression = [
            s.downsample if stride_rule == 'resolution' else s.planes
            for s in specs
        ]
        self.block_strides = auglocal_strides(
            progression,
            self.layer_index,
            self.sampled_layers,
            per_change=stride_rule == 'width-change')

        if isinstance(with_cp, bool):
            num_cp = len(self.sampled_layers) if with_cp else 0
        elif isinstance(with_cp, int) and with_cp >= 0:
            num_cp = with_cp
        else:
            raise InputError('AugLocalAuxHead: with_cp (model.aux_head.'
                             'with_cp) must be a bool or a number of blocks '
                             f'>= 0, got {with_cp!r}')
        if cp_max_downsample is not None:
            if not isinstance(cp_max_downsample, int) or \
                    cp_max_downsample < 1:
                raise InputError(
                    'AugLocalAuxHead: cp_max_downsample (model.aux_head.'
                    'cp_max_downsample) must be None or a downsampling '
                    f'factor >= 1, got {cp_max_downsample!r}')
            if specs[self.layer_index].downsample > cp_max_downsample:
                num_cp = 0
        blocks = []
        channels = self.in_channels
        for index, stride in zip(self.sampled_layers, self.block_strides):
            planes = int(specs[index].planes * widen_factor)
            if planes < 1:
                raise InputError(
                    f'AugLocalAuxHead: widen_factor={widen_factor} '
                    '(model.aux_head.widen_factor) leaves no channel in the '
                    f'auxiliary copy of {specs[index].name} '
                    f'({specs[index].planes} x {widen_factor} < 1); choose '
                    f'at least {1 / specs[index].planes:g}')
            block, channels = specs[index].fresh_layer(
                channels,
                stride=stride,
                widen_factor=widen_factor,
                norm_cfg=self.norm_cfg,
                with_cp=len(blocks) < num_cp)
            blocks.append(block)
        self.blocks = Sequential(*blocks)
        self.out_channels = channels
        self.pool = nn.AdaptiveAvgPool2d(1)
        if bn1d_if_shallow and self.depth <= 1:
            self.norm = nn.BatchNorm1d(channels)
        else:
            self.norm = None
        hidden = []
        for width in hidden_channels:
            hidden += [
                nn.Linear(channels, width),
                nn.BatchNorm1d(width),
                nn.ReLU(inplace=True)
            ]
            channels = width
        self.hidden_fc = nn.Sequential(*hidden) if hidden else None
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
        if self.hidden_fc is not None:
            x = self.hidden_fc(x)
        return self.fc(x)

    def loss(self, feat: torch.Tensor, batch: AuxBatch
             ) -> Tuple[Dict[str, torch.Tensor], Optional[torch.Tensor]]:
        logits = self(feat)
        loss_ce = F.cross_entropy(logits, batch.labels)
        return dict(loss_ce=self.lambda_y * loss_ce), logits

    def extra_repr(self) -> str:
        return (super().extra_repr() + f', depth={self.depth}, '
                f'sampled_layers={self.sampled_layers}, '
                f'strides={self.block_strides}')
