"""ResNet backbones split into local layers (the stem and every block)."""
from __future__ import annotations

import warnings
from collections import OrderedDict
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
from mmengine.model import BaseModule
from torch.nn.modules.batchnorm import _BatchNorm

from auglocal_det.errors import InputError
from auglocal_det.registry import MODELS

from ..layers import (
    LeanStem,
    LocalLayerSpec,
    build_norm_layer,
    make_res_layer,
)
from .pretrained import check_backbone_checkpoint
from .resnet_depths import CIFAR_RESNETS, IMAGENET_RESNETS, resnet_arch_name

__all__ = [
    'LocalResNet', 'LocalCifarResNet', 'resnet_archs', 'resnet_arch_name',
    'num_local_layers'
]


@MODELS.register_module()
class LocalResNet(BaseModule):
    """ImageNet ResNet whose stem and blocks are exposed as local layers.

    With local learning off it is mmdet's ``ResNet`` (``style='pytorch'``,
    no deep stem, no DCN or plugins): same arguments and defaults, same
    tuple of stage outputs, same parameter and buffer names (those of
    torchvision's ``resnet{depth}`` without ``fc``), so ``type='LocalResNet'``
    drops into a detector config and loads mmdet and torchvision
    checkpoints unchanged.

    For local learning, :meth:`local_layers` returns the stem and every
    residual block in order, and :meth:`local_layer_specs` their shapes.

    Args:
        depth (int): 18, 34, 50, 101 or 152.
        in_channels (int): Input image channels. Defaults to 3.
        stem_channels (int, optional): Stem output channels. Defaults to
            None (``base_channels``).
        base_channels (int): Planes of the first stage; stage ``i`` has
            ``base_channels * 2**i``. Defaults to 64.
        num_stages (int): Number of stages (1-4). Defaults to 4.
        strides (Sequence[int]): Stride of the first block of each stage.
            Defaults to (1, 2, 2, 2).
        dilations (Sequence[int]): Dilation of each stage. Defaults to
            (1, 1, 1, 1).
        out_indices (Sequence[int]): Stages whose outputs are returned.
            Defaults to (0, 1, 2, 3).
        style (str): ``'pytorch'`` (stride on the 3x3 convolution) or
            ``'caffe'`` (on the first 1x1 of a Bottleneck). Defaults to
            ``'pytorch'``.
        frozen_stages (int): Stages to freeze (parameters fixed, norm layers
            in eval mode); 0 freezes the stem only, -1 nothing. Defaults to
            -1.
        norm_cfg (dict, optional): Normalization config (``'BN'`` or
            ``'SyncBN'``). Defaults to None, i.e.
            ``dict(type='BN', requires_grad=True)``.
        norm_eval (bool): Keep every BatchNorm in eval mode during training
            (running statistics frozen). Defaults to True, as mmdet's
            ``ResNet`` (the fine-tuning setting); ``LocalImageClassifier``
            sets False for its backbone unless the config says otherwise.
        with_cp (bool | str): Gradient checkpointing inside the blocks;
            ``'nested'`` also checkpoints each block's first convolution
            stage on its own (see :class:`~auglocal_det.models.layers.
            BasicBlock`). Defaults to False.
        cp_stages (Sequence[int], optional): The residual stages (0 for
            ``layer1``) whose blocks ``with_cp`` applies to, e.g. ``(0, )``
            for the stage at the highest resolution, whose activations are
            the largest, at a fraction of the recomputation. Defaults to
            None: every stage.
        stem_chunk_size (int, optional): Run the stem as
            :class:`~auglocal_det.models.layers.LeanStem` with this many
            images per chunk: the same outputs, gradients and BatchNorm
            statistics, without keeping the stem's full-batch
            intermediate tensors (the largest of a local module at
            ImageNet sizes), for three recomputations of the stem
            convolution per iteration. Parameter names and checkpoints are
            unchanged. Defaults to None (the plain stem).
        zero_init_residual (bool): Initialise the last norm layer of every
            block to zero, so each block starts as the identity. Applies to
            the default initialisation only. Defaults to True.
        pretrained (str, optional): Deprecated, use ``init_cfg``. Defaults
            to None.
        init_cfg (dict or list[dict], optional): Initialization config.
            Defaults to None, which means Kaiming-normal (fan_out) for
            convolutions and weight 1 / bias 0 for norm layers.
    """

    arch_settings = IMAGENET_RESNETS
    #: Largest number of stages of this family.
    max_stages = 4

    def __init__(self,
                 depth: int,
                 in_channels: int = 3,
                 stem_channels: Optional[int] = None,
                 base_channels: int = 64,
                 num_stages: int = 4,
                 strides: Sequence[int] = (1, 2, 2, 2),
                 dilations: Sequence[int] = (1, 1, 1, 1),
                 out_indices: Sequence[int] = (0, 1, 2, 3),
                 style: str = 'pytorch',
                 frozen_stages: int = -1,
                 norm_cfg: Optional[dict] = None,
                 norm_eval: bool = True,
                 with_cp: Union[bool, str] = False,
                 cp_stages: Optional[Sequence[int]] = None,
                 stem_chunk_size: Optional[int] = None,
                 zero_init_residual: bool = True,
                 pretrained: Optional[str] = None,
                 init_cfg: Optional[Union[dict, list]] = None) -> None:
        super().__init__(init_cfg)
        if depth not in self.arch_settings:
            raise KeyError(f'invalid depth {depth} for {type(self).__name__}'
                           f'; expected one of {sorted(self.arch_settings)}')
        assert not (init_cfg and pretrained), \
            'init_cfg and pretrained cannot be specified at the same time'
        assert 1 <= num_stages <= self.max_stages
        assert len(strides) >= num_stages and len(dilations) >= num_stages
        assert max(out_indices) < num_stages
        assert style in ('pytorch', 'caffe')

        self.depth = depth
        self.zero_init_residual = zero_init_residual
        block, stage_blocks = self.arch_settings[depth]
        self.block = block
        self.stage_blocks = stage_blocks[:num_stages]
        if stem_channels is None:
            stem_channels = base_channels
        self.in_channels = in_channels
        self.stem_channels = stem_channels
        self.base_channels = base_channels
        self.num_stages = num_stages
        self.strides = tuple(strides)
        self.dilations = tuple(dilations)
        self.out_indices = tuple(out_indices)
        self.style = style
        self.frozen_stages = frozen_stages
        if norm_cfg is None:
            norm_cfg = dict(type='BN', requires_grad=True)
        self.norm_cfg = norm_cfg
        self.norm_eval = norm_eval
        self.with_cp = with_cp
        if cp_stages is not None:
            cp_stages = tuple(int(s) for s in cp_stages)
            if not set(cp_stages) <= set(range(num_stages)):
                raise InputError(
                    f'cp_stages={list(cp_stages)} (model.backbone.'
                    f'cp_stages) must name residual stages 0 .. '
                    f'{num_stages - 1}')
        self.cp_stages = cp_stages
        if stem_chunk_size is not None and int(stem_chunk_size) < 1:
            raise ValueError('stem_chunk_size (model.backbone.'
                             'stem_chunk_size) must be None or >= 1, got '
                             f'{stem_chunk_size}')
        self.stem_chunk_size = stem_chunk_size

        block_init_cfg = None
        if isinstance(pretrained, str):
            warnings.warn('DeprecationWarning: pretrained is deprecated, '
                          'please use "init_cfg" instead',
                          stacklevel=2)
            self.init_cfg = dict(type='Pretrained', checkpoint=pretrained)
        elif pretrained is None:
            if init_cfg is None:
                self.init_cfg = [
                    dict(type='Kaiming', layer='Conv2d'),
                    dict(
                        type='Constant',
                        val=1,
                        layer=['_BatchNorm', 'GroupNorm'])
                ]
                if zero_init_residual:
                    block_init_cfg = dict(
                        type='Constant',
                        val=0,
                        override=dict(name=block.last_norm_name))
        else:
            raise TypeError('pretrained must be a str or None')

        self._make_stem_layer(in_channels, stem_channels)

        self.res_layers = []
        inplanes = stem_channels
        for i, num_blocks in enumerate(self.stage_blocks):
            planes = base_channels * 2**i
            res_layer = make_res_layer(
                block,
                inplanes,
                planes,
                num_blocks,
                stride=strides[i],
                dilation=dilations[i],
                style=style,
                with_cp=with_cp if cp_stages is None or i in cp_stages
                else False,
                norm_cfg=norm_cfg,
                block_init_cfg=block_init_cfg)
            inplanes = planes * block.expansion
            layer_name = f'layer{i + 1}'
            self.add_module(layer_name, res_layer)
            self.res_layers.append(layer_name)

        self._freeze_stages()
        self.feat_dim = inplanes

    # ------------------------------------------------------------------
    # stem
    # ------------------------------------------------------------------
    #: Total stride of the stem.
    stem_stride = 4

    def _make_stem_layer(self, in_channels: int, stem_channels: int) -> None:
        """7x7/2 convolution, norm, ReLU and 3x3/2 max-pool."""
        self.conv1 = nn.Conv2d(
            in_channels,
            stem_channels,
            kernel_size=7,
            stride=2,
            padding=3,
            bias=False)
        self.bn1 = build_norm_layer(self.norm_cfg, stem_channels)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)

    def _stem_modules(self) -> OrderedDict[str, nn.Module]:
        """The stem's modules in order, under their attribute names."""
        return OrderedDict(
            conv1=self.conv1,
            bn1=self.bn1,
            relu=self.relu,
            maxpool=self.maxpool)

    def stem(self) -> nn.Module:
        """The stem as one (unregistered) module over the stem's own
        layers: :class:`LeanStem` with ``stem_chunk_size``, else an
        ``nn.Sequential`` of :meth:`_stem_modules`."""
        modules = self._stem_modules()
        if self.stem_chunk_size is None:
            return nn.Sequential(modules)
        return LeanStem(
            modules['conv1'],
            modules['bn1'],
            modules['relu'],
            modules.get('maxpool'),
            chunk_size=self.stem_chunk_size)

    @property
    def norm1(self) -> nn.Module:
        """The stem's norm layer (mmdet's name for ``bn1``)."""
        return self.bn1

    # ------------------------------------------------------------------
    # local layers
    # ------------------------------------------------------------------
    def local_layers(self) -> List[nn.Module]:
        """The local layers in order: the stem, then every residual block.

        The list holds views of the backbone's own modules: calling them in
        order on an image equals the backbone's forward, and their
        parameters are the backbone's (the stem view's are ``conv1.*`` and
        ``bn1.*``). The stem view (:meth:`stem`) is built on each call and
        never registered, so no parameter is registered twice.

        Returns:
            list[nn.Module]: ``1 + sum(stage_blocks)`` modules.
        """
        layers: List[nn.Module] = [self.stem()]
        for layer_name in self.res_layers:
            layers.extend(getattr(self, layer_name))
        return layers

    def local_layer_specs(self) -> List[LocalLayerSpec]:
        """Shape information of every local layer, in the same order.

        Returns:
            list[LocalLayerSpec]: One spec per local layer.
        """
        downsample = self.stem_stride
        specs = [
            LocalLayerSpec(
                name='stem',
                block='stem',
                in_channels=self.in_channels,
                out_channels=self.stem_channels,
                planes=self.stem_channels,
                stride=self.stem_stride,
                downsample=downsample)
        ]
        for layer_name in self.res_layers:
            for j, block in enumerate(getattr(self, layer_name)):
                downsample *= block.stride
                specs.append(
                    LocalLayerSpec(
                        name=f'{layer_name}.{j}',
                        block=type(block).__name__,
                        in_channels=block.inplanes,
                        out_channels=block.planes * block.expansion,
                        planes=block.planes,
                        stride=block.stride,
                        downsample=downsample))
        return specs

    @property
    def num_local_layers(self) -> int:
        """Number of local layers (K when every layer is its own module)."""
        return 1 + sum(self.stage_blocks)

    # ------------------------------------------------------------------
    # mmdet ResNet behaviour
    # ------------------------------------------------------------------
    def _freeze_stages(self) -> None:
        """Freeze the stem and the first ``frozen_stages`` stages."""
        if self.frozen_stages >= 0:
            self.bn1.eval()
            for module in (self.conv1, self.bn1):
                for param in module.parameters():
                    param.requires_grad = False
        for i in range(1, self.frozen_stages + 1):
            module = getattr(self, f'layer{i}')
            module.eval()
            for param in module.parameters():
                param.requires_grad = False

    def init_weights(self) -> None:
        """Initialise as ``BaseModule`` does; with
        ``init_cfg=dict(type='Pretrained', ...)`` first check that the file
        holds weights of this network
        (:func:`~auglocal_det.models.backbones.pretrained.check_backbone_checkpoint`),
        since MMEngine would load a wrong file partially with a warning."""
        cfg = self.init_cfg
        if not self._is_init and isinstance(cfg, dict) and \
                cfg.get('type') == 'Pretrained' and cfg.get('checkpoint'):
            check_backbone_checkpoint(
                cfg['checkpoint'], self, prefix=cfg.get('prefix'))
        super().init_weights()

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        """Forward function.

        Args:
            x (Tensor): Images of shape (N, C, H, W).

        Returns:
            tuple[Tensor]: Outputs of the stages in ``out_indices``.
        """
        x = self.stem()(x)
        outs = []
        for i, layer_name in enumerate(self.res_layers):
            x = getattr(self, layer_name)(x)
            if i in self.out_indices:
                outs.append(x)
        return tuple(outs)

    def train(self, mode: bool = True) -> LocalResNet:
        """Set the training mode, keeping frozen stages and, with
        ``norm_eval``, every BatchNorm in eval mode."""
        super().train(mode)
        self._freeze_stages()
        if mode and self.norm_eval:
            for module in self.modules():
                if isinstance(module, _BatchNorm):
                    module.eval()
        return self


@MODELS.register_module()
class LocalCifarResNet(LocalResNet):
    """The CIFAR ResNets of the local-learning papers (ResNet-32, -110).

    Stem ``16C3s1``-BN-ReLU without max-pool, then three stages of
    ``(depth - 2) / 6`` BasicBlocks of widths 16/32/64; the first block of
    stages 2 and 3 has stride 2 and a 1x1-conv + BN shortcut. Layer names
    follow :class:`LocalResNet` (``conv1``, ``bn1``, ``layer1.0``, ...).
    The initialisation is the papers' CIFAR one: every convolution
    ~ N(0, 2 / (k^2 C_out)) (Kaiming fan_out), norm weight 1 and bias 0,
    no zero-initialised residual.

    Args:
        depth (int): 20, 32, 44, 56 or 110.
        base_channels (int): Planes of the first stage. Defaults to 16.
        num_stages (int): Number of stages (1-3). Defaults to 3.
        strides (Sequence[int]): Defaults to (1, 2, 2).
        dilations (Sequence[int]): Defaults to (1, 1, 1).
        out_indices (Sequence[int]): Defaults to (0, 1, 2).
        zero_init_residual (bool): Defaults to False.
        **kwargs: The other arguments of :class:`LocalResNet`.
    """

    arch_settings = CIFAR_RESNETS
    max_stages = 3
    stem_stride = 1

    def __init__(self,
                 depth: int,
                 base_channels: int = 16,
                 num_stages: int = 3,
                 strides: Sequence[int] = (1, 2, 2),
                 dilations: Sequence[int] = (1, 1, 1),
                 out_indices: Sequence[int] = (0, 1, 2),
                 zero_init_residual: bool = False,
                 **kwargs) -> None:
        super().__init__(
            depth,
            base_channels=base_channels,
            num_stages=num_stages,
            strides=strides,
            dilations=dilations,
            out_indices=out_indices,
            zero_init_residual=zero_init_residual,
            **kwargs)

    def _make_stem_layer(self, in_channels: int, stem_channels: int) -> None:
        """3x3/1 convolution, norm and ReLU."""
        self.conv1 = nn.Conv2d(
            in_channels,
            stem_channels,
            kernel_size=3,
            stride=1,
            padding=1,
            bias=False)
        self.bn1 = build_norm_layer(self.norm_cfg, stem_channels)
        self.relu = nn.ReLU(inplace=True)

    def _stem_modules(self) -> OrderedDict[str, nn.Module]:
        return OrderedDict(conv1=self.conv1, bn1=self.bn1, relu=self.relu)


def resnet_archs() -> Dict[str, Tuple[type, int]]:
    """Every named ResNet of the two backbone classes.

    Derived from ``arch_settings`` of :class:`LocalResNet` (ImageNet) and
    :class:`LocalCifarResNet` (CIFAR), the one table of depths, block types
    and blocks per stage.

    Returns:
        dict[str, tuple[type, int]]: ``'resnet34' -> (LocalResNet, 34)``,
        ``'resnet110' -> (LocalCifarResNet, 110)``, ...
    """
    return {
        f'resnet{depth}': (cls, depth)
        for cls in (LocalResNet, LocalCifarResNet)
        for depth in cls.arch_settings
    }


def num_local_layers(arch: str) -> int:
    """Number of local layers of a named ResNet (stem + blocks).

    Args:
        arch (str): ``'resnet34'``, ``'resnet110'``, ...

    Returns:
        int: E.g. 17 for ResNet-34, 55 for ResNet-110.

    Raises:
        KeyError: For an unknown name.
    """
    archs = resnet_archs()
    if arch not in archs:
        raise KeyError(f'unknown arch {arch!r}; expected one of '
                       f'{sorted(archs)}')
    cls, depth = archs[arch]
    return 1 + sum(cls.arch_settings[depth][1])
