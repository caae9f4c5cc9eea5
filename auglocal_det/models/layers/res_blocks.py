"""The residual blocks shared by the backbone and every auxiliary network.

``BasicBlock`` and ``Bottleneck`` use the parameter names of torchvision's
and mmdet's ResNet (``conv1``, ``bn1``, ``conv2``, ``bn2``[, ``conv3``,
``bn3``], ``downsample.0``, ``downsample.1``), so checkpoints move between
the three without renaming. The same classes build :class:`LocalResNet`
and the fresh blocks of the auxiliary networks (AugLocal).
"""
from __future__ import annotations

import copy
from contextlib import contextmanager
from typing import Iterator, Optional, Type, Union

import torch
import torch.nn as nn
import torch.utils.checkpoint as cp
from mmengine.model import BaseModule, Sequential
from torch.nn.modules.batchnorm import _BatchNorm

__all__ = [
    'BasicBlock', 'Bottleneck', 'build_norm_layer', 'build_shortcut',
    'get_block', 'make_res_block', 'make_res_layer'
]

_NORM_LAYERS = {
    'BN': nn.BatchNorm2d,
    'BN2d': nn.BatchNorm2d,
    'SyncBN': nn.SyncBatchNorm,
}


def build_norm_layer(norm_cfg: dict, num_features: int) -> nn.Module:
    """Build a 2D normalization layer from a config dict.

    Args:
        norm_cfg (dict): ``type`` is ``'BN'`` (``nn.BatchNorm2d``) or
            ``'SyncBN'`` (``nn.SyncBatchNorm``); ``requires_grad``
            (default True) sets whether the affine parameters are trained;
            any other key (``eps``, ``momentum``, ...) is passed to the
            layer.
        num_features (int): Number of channels.

    Returns:
        nn.Module: The normalization layer.
    """
    if not isinstance(norm_cfg, dict) or 'type' not in norm_cfg:
        raise TypeError(f'norm_cfg must be a dict with "type", got '
                        f'{norm_cfg!r}')
    cfg = dict(norm_cfg)
    layer_type = cfg.pop('type')
    requires_grad = cfg.pop('requires_grad', True)
    if layer_type not in _NORM_LAYERS:
        raise KeyError(f'Unsupported norm type {layer_type!r}; expected one '
                       f'of {sorted(_NORM_LAYERS)}')
    layer = _NORM_LAYERS[layer_type](num_features, **cfg)
    for param in layer.parameters():
        param.requires_grad = requires_grad
    return layer


def _conv3x3(in_channels: int,
             out_channels: int,
             stride: int = 1,
             dilation: int = 1) -> nn.Conv2d:
    """3x3 convolution without bias, padded to keep the size at stride 1."""
    return nn.Conv2d(
        in_channels,
        out_channels,
        kernel_size=3,
        stride=stride,
        padding=dilation,
        dilation=dilation,
        bias=False)


def _conv1x1(in_channels: int,
             out_channels: int,
             stride: int = 1) -> nn.Conv2d:
    """1x1 convolution without bias."""
    return nn.Conv2d(
        in_channels, out_channels, kernel_size=1, stride=stride, bias=False)


class _ResBlock(BaseModule):
    """Common part of :class:`BasicBlock` and :class:`Bottleneck`.

    Stores the constructor arguments, asks the subclass for its residual
    branch and runs the forward pass: shortcut, optional checkpointing and
    the final ReLU. The submodules are created in the order ``conv*`` /
    ``bn*`` of the branch, ``relu``, ``downsample``, so the state-dict
    keys, and their order, are those of torchvision's ResNet.

    Args:
        inplanes (int): Input channels.
        planes (int): Base width of the block.
        stride (int): Stride of the block. Defaults to 1.
        dilation (int): Dilation of the strided 3x3 convolution. Defaults
            to 1.
        downsample (nn.Module, optional): Shortcut projection. Defaults to
            None (identity).
        style (str): ``'pytorch'`` or ``'caffe'``. Defaults to
            ``'pytorch'``.
        with_cp (bool | str): Use gradient checkpointing. ``'nested'``
            also checkpoints the first convolution, norm and ReLU inside
            the block, so that the backward's recomputation of the block
            holds one feature map less at its peak, for one more
            recomputation of that convolution. Defaults to False.
        norm_cfg (dict, optional): Normalization config. Defaults to None,
            i.e. ``dict(type='BN')``.
        init_cfg (dict or list[dict], optional): Initialization config.
            Defaults to None.
    """

    def __init__(self,
                 inplanes: int,
                 planes: int,
                 stride: int = 1,
                 dilation: int = 1,
                 downsample: Optional[nn.Module] = None,
                 style: str = 'pytorch',
                 with_cp: Union[bool, str] = False,
                 norm_cfg: Optional[dict] = None,
                 init_cfg: Optional[Union[dict, list]] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        assert style in ('pytorch', 'caffe'), f'unknown style {style!r}'
        if not isinstance(with_cp, bool) and with_cp != 'nested':
            raise ValueError("with_cp must be True, False or 'nested', got "
                             f'{with_cp!r}')
        if norm_cfg is None:
            norm_cfg = dict(type='BN')
        self.inplanes = inplanes
        self.planes = planes
        self.stride = stride
        self.dilation = dilation
        self.style = style
        self.with_cp = with_cp

        self._build_branch(norm_cfg)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def _build_branch(self, norm_cfg: dict) -> None:
        """Create the convolutions and norm layers of the residual branch.

        Args:
            norm_cfg (dict): Normalization config.
        """
        raise NotImplementedError

    def _residual(self, x: torch.Tensor) -> torch.Tensor:
        """Residual branch, without the shortcut and the final ReLU."""
        raise NotImplementedError

    def _first_stage(self, x: torch.Tensor) -> torch.Tensor:
        """``relu(bn1(conv1(x)))``, checkpointed on its own with
        ``with_cp='nested'``."""

        def stage(inp: torch.Tensor) -> torch.Tensor:
            return self.relu(self.bn1(self.conv1(inp)))

        if self.with_cp == 'nested' and torch.is_grad_enabled():
            return _checkpoint(stage, x, self.bn1)
        return stage(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Forward function.

        Args:
            x (Tensor): Input of shape (N, C, H, W).

        Returns:
            Tensor: Output feature map.
        """

        def _inner_forward(inp: torch.Tensor) -> torch.Tensor:
            identity = inp
            if self.downsample is not None:
                identity = self.downsample(inp)
            return self._residual(inp) + identity

        if self.with_cp and torch.is_grad_enabled():
            out = _checkpoint(_inner_forward, x, self)
        else:
            out = _inner_forward(x)
        return self.relu(out)


def _checkpoint(function, x: torch.Tensor,
                module: nn.Module) -> torch.Tensor:
    """Non-reentrant gradient checkpointing of ``function(x)`` whose
    recomputation in the backward leaves the running statistics of the
    BatchNorms in ``module`` alone (the forward updated them already).

    Non-reentrant checkpointing also works when the input is detached,
    which is the case for every local module's first block, and nests.
    """
    calls = []

    def run_once(inp: torch.Tensor) -> torch.Tensor:
        if not calls:
            calls.append(True)
            return function(inp)
        with _running_stats_frozen(module):
            return function(inp)

    return cp.checkpoint(run_once, x, use_reentrant=False)


@contextmanager
def _running_stats_frozen(module: nn.Module) -> Iterator[None]:
    """Run the BatchNorms of ``module`` (in training mode) without changing
    their running statistics.

    Momentum 0 leaves the statistics bit-identical (``1 * r + 0 * s``)
    while autograd saves the same tensors as in the original forward,
    which checkpointing checks; the batch counter is set back afterwards.
    """
    norms = [
        m for m in module.modules()
        if isinstance(m, _BatchNorm) and m.training and m.track_running_stats
    ]
    momenta = [norm.momentum for norm in norms]
    for norm in norms:
        norm.momentum = 0.0
    try:
        yield
    finally:
        for norm, momentum in zip(norms, momenta):
            norm.momentum = momentum
            norm.num_batches_tracked.sub_(1)


class BasicBlock(_ResBlock):
    """Two 3x3 convolutions with an identity (or projection) shortcut.

    Args:
        inplanes (int): Input channels.
        planes (int): Output channels (``expansion`` is 1).
        stride (int): Stride of the first convolution. Defaults to 1.
        dilation (int): Dilation of the first convolution. Defaults to 1.
        downsample (nn.Module, optional): Shortcut projection. Defaults to
            None (identity).
        style (str): ``'pytorch'`` or ``'caffe'``; a BasicBlock places the
            stride on its first 3x3 convolution in both. Defaults to
            ``'pytorch'``.
        with_cp (bool): Use gradient checkpointing, trading compute for
            memory. Defaults to False.
        norm_cfg (dict, optional): Normalization config. Defaults to None,
            i.e. ``dict(type='BN')``.
        init_cfg (dict or list[dict], optional): Initialization config.
            Defaults to None.
    """

    expansion = 1
    last_norm_name = 'bn2'

    def _build_branch(self, norm_cfg: dict) -> None:
        self.conv1 = _conv3x3(self.inplanes, self.planes, self.stride,
                              self.dilation)
        self.bn1 = build_norm_layer(norm_cfg, self.planes)
        self.conv2 = _conv3x3(self.planes, self.planes)
        self.bn2 = build_norm_layer(norm_cfg, self.planes)

    def _residual(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn2(self.conv2(self._first_stage(x)))


class Bottleneck(_ResBlock):
    """1x1 - 3x3 - 1x1 bottleneck block with output width ``4 * planes``.

    Args:
        inplanes (int): Input channels.
        planes (int): Width of the inner 3x3 convolution; the block outputs
            ``planes * expansion`` channels.
        stride (int): Stride of the block. Defaults to 1.
        dilation (int): Dilation of the 3x3 convolution. Defaults to 1.
        downsample (nn.Module, optional): Shortcut projection. Defaults to
            None (identity).
        style (str): ``'pytorch'`` puts the stride on the 3x3 convolution
            (torchvision's ResNet v1.5), ``'caffe'`` on the first 1x1
            convolution. Defaults to ``'pytorch'``.
        with_cp (bool): Use gradient checkpointing. Defaults to False.
        norm_cfg (dict, optional): Normalization config. Defaults to None,
            i.e. ``dict(type='BN')``.
        init_cfg (dict or list[dict], optional): Initialization config.
            Defaults to None.
    """

    expansion = 4
    last_norm_name = 'bn3'

    def _build_branch(self, norm_cfg: dict) -> None:
        planes = self.planes
        if self.style == 'pytorch':
            conv1_stride, conv2_stride = 1, self.stride
        else:
            conv1_stride, conv2_stride = self.stride, 1

        self.conv1 = _conv1x1(self.inplanes, planes, conv1_stride)
        self.bn1 = build_norm_layer(norm_cfg, planes)
        self.conv2 = _conv3x3(planes, planes, conv2_stride, self.dilation)
        self.bn2 = build_norm_layer(norm_cfg, planes)
        self.conv3 = _conv1x1(planes, planes * self.expansion)
        self.bn3 = build_norm_layer(norm_cfg, planes * self.expansion)

    def _residual(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn2(self.conv2(self._first_stage(x))))
        return self.bn3(self.conv3(out))


ResBlock = Union[Type[BasicBlock], Type[Bottleneck]]

_BLOCKS = {'BasicBlock': BasicBlock, 'Bottleneck': Bottleneck}


def get_block(block: Union[str, ResBlock]) -> ResBlock:
    """Return the block class for ``'BasicBlock'`` or ``'Bottleneck'``.

    Args:
        block (str or type): Block name or class.

    Returns:
        type: :class:`BasicBlock` or :class:`Bottleneck`.
    """
    if isinstance(block, str):
        if block not in _BLOCKS:
            raise KeyError(f'Unknown residual block {block!r}; expected one '
                           f'of {sorted(_BLOCKS)}')
        return _BLOCKS[block]
    if block not in _BLOCKS.values():
        raise TypeError(f'Unknown residual block class {block!r}')
    return block


def build_shortcut(inplanes: int,
                   out_channels: int,
                   stride: int = 1,
                   norm_cfg: Optional[dict] = None) -> Optional[nn.Module]:
    """Build the 1x1-conv + norm shortcut, or None when none is needed.

    Args:
        inplanes (int): Input channels.
        out_channels (int): Output channels of the block.
        stride (int): Stride of the block. Defaults to 1.
        norm_cfg (dict, optional): Normalization config. Defaults to None,
            i.e. ``dict(type='BN')``.

    Returns:
        nn.Sequential or None: ``Sequential(conv, norm)`` (parameter names
        ``0.weight``, ``1.weight``, ...) when the stride is not 1 or the
        width changes, else None.
    """
    if stride == 1 and inplanes == out_channels:
        return None
    if norm_cfg is None:
        norm_cfg = dict(type='BN')
    return nn.Sequential(
        _conv1x1(inplanes, out_channels, stride),
        build_norm_layer(norm_cfg, out_channels))


def make_res_block(block: Union[str, ResBlock],
                   inplanes: int,
                   planes: int,
                   stride: int = 1,
                   **kwargs) -> nn.Module:
    """Build one residual block, with a projection shortcut if needed.

    Args:
        block (str or type): ``'BasicBlock'``/``'Bottleneck'`` or the class.
        inplanes (int): Input channels.
        planes (int): Block planes (output is ``planes * expansion``).
        stride (int): Stride. Defaults to 1.
        **kwargs: Other block arguments (``dilation``, ``style``,
            ``with_cp``, ``norm_cfg``, ``init_cfg``).

    Returns:
        nn.Module: The block.
    """
    block = get_block(block)
    norm_cfg = kwargs.get('norm_cfg')
    downsample = build_shortcut(inplanes, planes * block.expansion, stride,
                                norm_cfg)
    return block(
        inplanes, planes, stride=stride, downsample=downsample, **kwargs)


def make_res_layer(block: Union[str, ResBlock],
                   inplanes: int,
                   planes: int,
                   num_blocks: int,
                   stride: int = 1,
                   dilation: int = 1,
                   style: str = 'pytorch',
                   with_cp: Union[bool, str] = False,
                   norm_cfg: Optional[dict] = None,
                   block_init_cfg: Optional[Union[dict, list]] = None
                   ) -> Sequential:
    """Build one ResNet stage: ``num_blocks`` blocks in a ``Sequential``.

    The first block carries the stride and, when the stride is not 1 or the
    width changes, a 1x1-conv + norm shortcut (``<i>.downsample.0/1``).

    Args:
        block (str or type): ``'BasicBlock'``/``'Bottleneck'`` or the class.
        inplanes (int): Input channels of the stage.
        planes (int): Planes of every block.
        num_blocks (int): Number of blocks.
        stride (int): Stride of the first block. Defaults to 1.
        dilation (int): Dilation of every block. Defaults to 1.
        style (str): ``'pytorch'`` or ``'caffe'``. Defaults to
            ``'pytorch'``.
        with_cp (bool): Gradient checkpointing. Defaults to False.
        norm_cfg (dict, optional): Normalization config. Defaults to None,
            i.e. ``dict(type='BN')``.
        block_init_cfg (dict or list[dict], optional): ``init_cfg`` of each
            block. Defaults to None.

    Returns:
        Sequential: The stage (mmengine's ``Sequential``, which passes
        ``init_weights`` on to the blocks).
    """
    block = get_block(block)
    layers = []
    for i in range(num_blocks):
        layers.append(
            make_res_block(
                block,
                inplanes,
                planes,
                stride=stride if i == 0 else 1,
                dilation=dilation,
                style=style,
                with_cp=with_cp,
                norm_cfg=norm_cfg,
                init_cfg=copy.deepcopy(block_init_cfg)))
        inplanes = planes * block.expansion
    return Sequential(*layers)
