"""MLAAN auxiliary networks (Zhang et al., arXiv:2406.16633, 2024).

MLAAN ("Multilaminar Leap Augmented Auxiliary Network") gives every local
module two loss terms:

- the **independent stream**: the module's output x_i, computed from the
  detached output of the previous module, goes through a small classifier
  (:class:`MLAANIndependentHead`, the authors' ``net_classifier``; or any
  other auxiliary head, e.g. DGL's or InfoPro's);
- the **cascaded stream**: the output of the last ``span`` modules,
  recomputed from the detached output of module ``i - span``, goes through
  a *leap augmented module* (:class:`LeapAugmentedModule`): trainable
  blocks shaped like later layers of the network, the first one summed
  with an exponential-moving-average (EMA) twin of that same primary layer,
  then pooling and a linear classifier (the authors' ``aux_classifier``).

The local loss of module i is ``w_x * L_x + w_y * CE_y``, with
``(w_x, w_y) = (0.001, 0.999)`` by default. :class:`MLAANAuxHead` holds both
parts for one module; the classifier
(:class:`~auglocal_det.models.classifiers.MLAANImageClassifier`) runs the
two streams, routes the gradients and updates the EMA twins.

The leap layers of every module (``aux_config`` in the authors' code) are
given per network in :data:`MLAAN_LEAP_LAYERS`.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.model import BaseModule, Sequential

from auglocal_det.errors import InputError
from auglocal_det.registry import MODELS

from ..layers import (
    LocalLayerSpec,
    build_norm_layer,
    get_block,
    make_res_block,
)
from .base import AuxBatch, BaseAuxHead

__all__ = [
    'MLAAN_LEAP_LAYERS', 'LeapAugmentedModule', 'MLAANAuxHead',
    'MLAANIndependentHead', 'mlaan_leap_layers'
]


def _repeat(count: int, layers: Sequence[str]) -> List[List[str]]:
    return [list(layers) for _ in range(count)]


#: Primary layers copied by the leap augmented module of every local module
#: (entry i for module i = 0 .. K-2), per network, for the authors' split
#: into one-block modules (the stem joins the first block's module):
#: ResNet-34 K=16 and ResNet-101 K=33 (ImageNet), ResNet-32 K=15 and
#: ResNet-110 K=54 (CIFAR). The first layer of each entry also gets an EMA
#: twin. Entries of modules without a loss of their own are kept for
#: completeness and never built.
MLAAN_LEAP_LAYERS: Dict[str, List[List[str]]] = {
    'resnet34': (
        _repeat(3, ('layer2.0', 'layer2.1', 'layer3.0', 'layer4.0',
                    'layer4.2')) +
        _repeat(4, ('layer2.1', 'layer3.0', 'layer4.0', 'layer4.2')) +
        _repeat(6, ('layer3.1', 'layer4.0', 'layer4.1')) +
        [['layer4.1', 'layer4.1', 'layer4.2'], ['layer4.1', 'layer4.2']]),
    'resnet101': (
        _repeat(3, ('layer2.0', 'layer3.0', 'layer4.0', 'layer4.2')) +
        _repeat(4, ('layer3.0', 'layer4.0', 'layer4.1')) +
        _repeat(23, ('layer4.0', 'layer4.1')) +
        _repeat(2, ('layer4.1', 'layer4.2'))),
    'resnet32': (
        [['layer2.0', 'layer3.0', 'layer3.2', 'layer3.4'],
         ['layer2.0', 'layer3.0', 'layer3.2', 'layer3.4'],
         ['layer2.0', 'layer3.0', 'layer3.3', 'layer3.4'],
         ['layer2.0', 'layer3.0', 'layer3.2', 'layer3.4'],
         ['layer2.0', 'layer3.0', 'layer3.3', 'layer3.4']] +
        _repeat(5, ('layer3.0', 'layer3.2', 'layer3.3', 'layer3.4')) +
        [['layer3.1', 'layer3.2', 'layer3.4'],
         ['layer3.2', 'layer3.3', 'layer3.4'], ['layer3.3', 'layer3.4'],
         ['layer3.4']]),
    'resnet110': (
        _repeat(18, ('layer2.0', 'layer3.0', 'layer3.2', 'layer3.17')) +
        _repeat(17, ('layer3.0', 'layer3.2', 'layer3.3', 'layer3.17')) +
        [['layer3.0', 'layer3.3', 'layer3.4', 'layer3.17']] +
        _repeat(7, ('layer3.8', 'layer3.17')) +
        _repeat(4, ('layer3.14', 'layer3.17')) +
        _repeat(2, ('layer3.15', 'layer3.17')) +
        _repeat(3, ('layer3.16', 'layer3.17')) + [['layer3.17']]),
}

def _arch_of(layer_specs: Sequence[LocalLayerSpec]) -> Optional[str]:
    """Name of the network described by ``layer_specs`` (None if unknown).
    """
    # imported here: the backbones' module imports the layers, as this one
    from ..backbones.local_resnet import resnet_arch_name

    blocks = [spec for spec in layer_specs if spec.block != 'stem']
    if not blocks:
        return None
    stages: Dict[str, int] = OrderedDict()
    for spec in blocks:
        stage = spec.name.split('.')[0]
        stages[stage] = stages.get(stage, 0) + 1
    return resnet_arch_name(blocks[0].block, tuple(stages.values()))


def mlaan_leap_layers(layer_specs: Sequence[LocalLayerSpec],
                      num_aux: int) -> List[List[str]]:
    """The authors' leap-layer table of a network.

    Args:
        layer_specs (Sequence[LocalLayerSpec]): The backbone's specs.
        num_aux (int): Number of auxiliary heads (K - 1).

    Returns:
        list[list[str]]: Primary layer names of the leap augmented module
        of every module 0 .. K-2.

    Raises:
        KeyError: If there is no table for the network, or the table is for
            another number of modules.
    """
    arch = _arch_of(layer_specs)
    if arch not in MLAAN_LEAP_LAYERS:
        name = arch or 'not a standard ResNet'
        raise KeyError(
            f'no MLAAN leap-layer table for this backbone ({name}; tables '
            f'exist for {sorted(MLAAN_LEAP_LAYERS)}); pass leap_layers '
            'explicitly')
    table = MLAAN_LEAP_LAYERS[arch]
    if len(table) != num_aux:
        raise KeyError(
            f'the MLAAN leap-layer table of {arch} is for {len(table) + 1} '
            f'one-block local modules, but the model has {num_aux + 1} '
            'modules; use the default split_points or pass leap_layers '
            'explicitly')
    return [list(layers) for layers in table]


def _params_to_buffers(module: nn.Module) -> List[str]:
    """Turn every parameter of ``module`` into a buffer of the same name.

    The tensors keep their values and names (so they pair by name with the
    parameters of an identical module), are saved in the state dict and
    moved by ``.to()``, but hold no gradient and are not returned by
    ``parameters()``, so no optimizer sees them.

    Returns:
        list[str]: The converted names, relative to ``module``.
    """
    names = [name for name, _ in module.named_parameters()]
    for submodule in module.modules():
        for name, param in list(submodule._parameters.items()):
            if param is None:
                continue
            del submodule._parameters[name]
            submodule.register_buffer(name, param.detach())
    return names


class LeapAugmentedModule(BaseModule):
    """MLAAN's leap augmented module (LAM) on the cascaded stream.

    One new block per listed primary layer, of the same type, input width,
    planes and stride (our shared block definition; built fresh, so it is
    re-initialised independently of the primary layer, as in the authors'
    ImageNet code). The first listed layer also has an EMA twin: a second
    fresh block whose parameters are buffers (no gradient, not optimised,
    saved in checkpoints) that :meth:`update_ema` moves towards the primary
    layer's parameters. Forward::

        z = aug[0](z) + ema(z)          # summed, as in the authors' code
        z = aug[k](z)                   # k = 1 .. n-1
        logits = fc(flatten(AP(1)(z)))

    The input still receives gradients through the EMA twin; only its
    weights are fixed.

    Note:
        For synchronised BatchNorm, build the heads with
        ``norm_cfg=dict(type='SyncBN')``: converting the model afterwards
        (the Runner's ``sync_bn`` option) fails on the twin, whose norm
        weights are buffers.

    Args:
        layer_names (Sequence[str]): Primary layers to copy, e.g.
            ``['layer2.0', 'layer2.1']``; the first also gets the twin.
        layer_specs (Sequence[LocalLayerSpec]): The backbone's specs.
        in_channels (int): Channels of the features the module receives.
        num_classes (int): Number of classes.
        ema_momentum (float): m in ``theta <- m * theta + (1 - m) *
            theta_primary``. Defaults to 0.995.
        ema_buffers (bool): Also average the twin's floating-point buffers
            (BatchNorm running statistics) towards the primary layer's and
            copy its integer ones; by default the twin keeps its own running
            statistics, as in the authors' code. Defaults to False.
        zero_init_residual (bool): Zero-initialise the last norm layer of
            every block (the authors initialise the copies like the
            backbone). Applies when ``init_weights`` runs. Defaults to True.
        norm_cfg (dict, optional): Norm config of the blocks. Defaults to
            None, i.e. ``dict(type='BN')``.
        with_cp (bool): Gradient checkpointing inside the blocks. Defaults
            to False.
        init_cfg (dict | list[dict], optional): Initialization config.
            Defaults to None.
    """

    def __init__(self,
                 layer_names: Sequence[str],
                 layer_specs: Sequence[LocalLayerSpec],
                 in_channels: int,
                 num_classes: int,
                 ema_momentum: float = 0.995,
                 ema_buffers: bool = False,
                 zero_init_residual: bool = True,
                 norm_cfg: Optional[dict] = None,
                 with_cp: bool = False,
                 init_cfg: Optional[Union[dict, List[dict]]] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        if not layer_names:
            raise InputError('a leap augmented module needs at least one '
                             'primary layer')
        if not 0. <= ema_momentum <= 1.:
            raise InputError(
                f'ema_momentum must be in [0, 1], got {ema_momentum}')
        specs = {spec.name: spec for spec in layer_specs}
        chain: List[LocalLayerSpec] = []
        channels = in_channels
        for name in layer_names:
            spec = specs.get(name)
            if spec is None or spec.block == 'stem':
                raise KeyError(f'{name!r} is not a residual block of the '
                               f'backbone ({", ".join(specs)})')
            if spec.in_channels != channels:
                raise InputError(
                    f'leap layers {list(layer_names)}: {name} takes '
                    f'{spec.in_channels} channels but receives {channels}')
            chain.append(spec)
            channels = spec.out_channels
        self.layer_names = list(layer_names)
        self.ema_momentum = float(ema_momentum)
        self.ema_buffers = ema_buffers
        self.blocks = Sequential(*[
            self._make_block(spec, norm_cfg, with_cp, zero_init_residual)
            for spec in chain
        ])
        self.ema = self._make_block(chain[0], norm_cfg, with_cp,
                                    zero_init_residual)
        self.ema_param_names = tuple(_params_to_buffers(self.ema))
        self.out_channels = channels
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)

    @staticmethod
    def _make_block(spec: LocalLayerSpec, norm_cfg: Optional[dict],
                    with_cp: bool, zero_init_residual: bool) -> nn.Module:
        block = get_block(spec.block)
        init_cfg = None
        if zero_init_residual:
            init_cfg = dict(
                type='Constant',
                val=0,
                override=dict(name=block.last_norm_name))
        return make_res_block(
            block,
            spec.in_channels,
            spec.planes,
            stride=spec.stride,
            with_cp=with_cp,
            norm_cfg=norm_cfg,
            init_cfg=init_cfg)

    @property
    def ema_source(self) -> str:
        """str: Name of the primary layer the EMA twin follows."""
        return self.layer_names[0]

    def ema_state(self) -> Dict[str, torch.Tensor]:
        """The twin's averaged tensors (its former parameters), by name."""
        buffers = dict(self.ema.named_buffers())
        return OrderedDict(
            (name, buffers[name]) for name in self.ema_param_names)

    def forward_features(self, feat: torch.Tensor) -> torch.Tensor:
        """Run the blocks (the first one summed with the EMA twin).

        Args:
            feat (Tensor): Output of the cascaded stream.

        Returns:
            Tensor: Features before pooling.
        """
        out = self.blocks[0](feat) + self.ema(feat)
        for block in self.blocks[1:]:
            out = block(out)
        return out

    def forward(self, feat: torch.Tensor) -> torch.Tensor:
        """Class logits (N, num_classes) of the cascaded stream."""
        return self.fc(torch.flatten(self.pool(self.forward_features(feat)),
                                     1))

    @torch.no_grad()
    def update_ema(self, source: nn.Module) -> None:
        """One EMA step of the twin towards the primary layer ``source``.

        ``theta <- m * theta + (1 - m) * theta_source`` for every parameter
        (paired by name), and with ``ema_buffers`` also for the
        floating-point buffers (integer buffers are copied).

        Args:
            source (nn.Module): The primary layer (``backbone.<name>``).
        """
        momentum = self.ema_momentum
        buffers = dict(self.ema.named_buffers())
        pairs = [(buffers[name], param)
                 for name, param in source.named_parameters()]
        if len(pairs) != len(self.ema_param_names):
            raise RuntimeError(
                f'the EMA twin of {self.ema_source} has '
                f'{len(self.ema_param_names)} averaged tensors but the '
                f'primary layer has {len(pairs)} parameters')
        if self.ema_buffers:
            pairs += [(buffers[name], buf)
                      for name, buf in source.named_buffers()]
        for ema, value in pairs:
            if ema.shape != value.shape:
                raise RuntimeError(
                    f'EMA twin of {self.ema_source}: shape {tuple(ema.shape)}'
                    f' vs {tuple(value.shape)}')
            if ema.is_floating_point():
                ema.mul_(momentum).add_(value.detach(), alpha=1. - momentum)
            else:
                ema.copy_(value)

    def extra_repr(self) -> str:
        return (f'layers={self.layer_names}, ema={self.ema_source}, '
                f'ema_momentum={self.ema_momentum}, '
                f'ema_buffers={self.ema_buffers}')


@MODELS.register_module()
class MLAANIndependentHead(BaseAuxHead):
    """MLAAN's classifier of the independent stream (``net_classifier``).

    Features whose width is in ``expand_channels`` first go through
    ``C1 C->2C - BN - ReLU - C1 2C->C - BN - ReLU``; then ``AP(1)`` and
    ``FC(C->classes)``, trained with cross-entropy (weight ``lambda_y``).
    On an ImageNet ResNet-34 this gives 81,768 parameters at width 64,
    195,304 at 128 and a plain pooled FC at 256 and 512, as in the authors'
    code; their CIFAR networks use the pooled FC everywhere.

    Args:
        expand_channels (Sequence[int] | str): Input widths that get the two
            1x1 convolutions. ``'auto'``: (64, 128) for ImageNet-style
            backbones (whose stem downsamples), none for CIFAR ones.
            Defaults to ``'auto'``.
        **kwargs: Arguments of :class:`BaseAuxHead`.
    """

    def __init__(self,
                 expand_channels: Union[Sequence[int], str] = 'auto',
                 **kwargs) -> None:
        super().__init__(**kwargs)
        if expand_channels == 'auto':
            imagenet = self.layer_specs[0].stride > 1
            expand_channels = (64, 128) if imagenet else ()
        elif isinstance(expand_channels, str):
            raise InputError(f'unknown expand_channels {expand_channels!r}')
        self.expand_channels = tuple(int(c) for c in expand_channels)
        channels = self.in_channels
        layers: List[nn.Module] = []
        if channels in self.expand_channels:
            hidden = 2 * channels
            layers = [
                nn.Conv2d(channels, hidden, kernel_size=1, bias=False),
                self._norm(hidden),
                nn.ReLU(inplace=True),
                nn.Conv2d(hidden, channels, kernel_size=1, bias=False),
                self._norm(channels),
                nn.ReLU(inplace=True),
            ]
        self.convs = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, self.num_classes)

    def _norm(self, channels: int) -> nn.Module:
        return build_norm_layer(self.norm_cfg, channels)

    def forward(self, feat: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.convs(feat)), 1))

    def loss(self, feat: torch.Tensor, batch: AuxBatch
             ) -> Tuple[Dict[str, torch.Tensor], Optional[torch.Tensor]]:
        logits = self(feat)
        loss_ce = F.cross_entropy(logits, batch.labels)
        return dict(loss_ce=self.lambda_y * loss_ce), logits


@MODELS.register_module()
class MLAANAuxHead(BaseAuxHead):
    """Both MLAAN loss terms of one local module.

    For module i (0-based) with output x_i, and the output z_i of the
    cascaded stream (the last ``span`` modules recomputed from the detached
    output of module ``i - span``)::

        loss_i = w_x * L_x(independent_head(x_i))
               + w_y * CE(leap_module(z_i))

    ``independent_head`` is MLAAN's :class:`MLAANIndependentHead` by
    default, or any other auxiliary head (DGL's, InfoPro's, ...), whose own
    weighted losses form ``L_x``. The leap augmented module
    (:class:`LeapAugmentedModule`) copies the primary layers
    ``leap_layers[i]``.

    The first ``span - 1`` modules have no loss of their own, as in the
    authors' code: their parameters learn only through the cascades of the
    following modules. Their heads are empty (no parameters, no
    prediction).

    Args:
        independent_head (dict, optional): Config of the independent
            stream's head; it receives the same per-module arguments as this
            head. Defaults to None, i.e.
            ``dict(type='MLAANIndependentHead')``.
        leap_layers (str | Sequence[Sequence[str]]): Primary layers of the
            leap augmented module of every module (one list per auxiliary
            head, layer names such as ``'layer3.1'``), or ``'auto'`` for the
            authors' tables (:data:`MLAAN_LEAP_LAYERS`). Defaults to
            ``'auto'``.
        span (int): Number of modules the cascaded stream spans (3 in the
            authors' ImageNet code, 2 in their CIFAR code). Set by the
            classifier. Defaults to 3.
        loss_weights (Sequence[float]): ``(w_x, w_y)``. Set by the
            classifier. Defaults to (0.001, 0.999).
        ema_momentum (float): Momentum of the EMA twin. Defaults to 0.995.
        ema_buffers (bool): Also average the twin's BatchNorm statistics.
            Defaults to False.
        zero_init_residual (bool): Zero-initialise the last norm layer of
            the leap blocks. Defaults to True.
        with_cp (bool): Gradient checkpointing inside the leap blocks.
            Defaults to False.
        **kwargs: Arguments of :class:`BaseAuxHead`.
    """

    def __init__(self,
                 independent_head: Optional[dict] = None,
                 leap_layers: Union[str, Sequence[Sequence[str]]] = 'auto',
                 span: int = 3,
                 loss_weights: Sequence[float] = (0.001, 0.999),
                 ema_momentum: float = 0.995,
                 ema_buffers: bool = False,
                 zero_init_residual: bool = True,
                 with_cp: bool = False,
                 **kwargs) -> None:
        super().__init__(**kwargs)
        others = sorted({
            spec.block
            for spec in self.layer_specs
            if spec.block not in ('stem', 'BasicBlock', 'Bottleneck')
        })
        if others:
            raise InputError(
                'MLAANAuxHead (model.aux_head): MLAAN copies residual blocks '
                'of ResNets into its leap modules and is not defined for a '
                f'backbone with {", ".join(others)} layers; use a '
                'LocalResNet or LocalCifarResNet backbone')
        if span < 1:
            raise InputError(f'span must be >= 1, got {span}')
        weights = tuple(float(w) for w in loss_weights)
        if len(weights) != 2:
            raise InputError(
                f'loss_weights must be (w_x, w_y), got {loss_weights}')
        self.span = span
        self.loss_weights = weights
        #: Whether this module has a loss of its own.
        self.has_loss = self.module_index >= span - 1
        self.independent: Optional[BaseAuxHead] = None
        self.lam: Optional[LeapAugmentedModule] = None
        if not self.has_loss:
            return
        cfg = dict(independent_head or dict(type='MLAANIndependentHead'))
        cfg.update(
            layer_index=self.layer_index,
            layer_specs=self.layer_specs,
            module_index=self.module_index,
            num_aux=self.num_aux,
            num_classes=self.num_classes,
            image_size=self.image_size)
        cfg.setdefault('norm_cfg', self.norm_cfg)
        self.independent = MODELS.build(cfg)
        if leap_layers == 'auto':
            leap_layers = mlaan_leap_layers(self.layer_specs, self.num_aux)
        elif isinstance(leap_layers, str):
            raise InputError(f'unknown leap_layers {leap_layers!r}')
        if len(leap_layers) != self.num_aux:
            raise InputError(
                f'leap_layers has {len(leap_layers)} entries for '
                f'{self.num_aux} auxiliary heads')
        self.lam = LeapAugmentedModule(
            leap_layers[self.module_index],
            self.layer_specs,
            in_channels=self.in_channels,
            num_classes=self.num_classes,
            ema_momentum=ema_momentum,
            ema_buffers=ema_buffers,
            zero_init_residual=zero_init_residual,
            norm_cfg=self.norm_cfg,
            with_cp=with_cp)

    @property
    def reads_images(self) -> bool:  # type: ignore[override]
        """Whether the independent head reads the [0, 1] images."""
        return self.independent is not None and \
            self.independent.reads_images

    def forward(self, feat: torch.Tensor) -> Optional[torch.Tensor]:
        """Logits of the independent stream (None without a loss)."""
        if self.independent is None:
            return None
        return self.independent(feat)

    def predict(self, feat: torch.Tensor) -> Optional[torch.Tensor]:
        """Logits of the cascaded stream (None without a loss).

        This is the prediction the w_y-weighted loss trains. At inference
        (BatchNorm in eval mode) the cascaded stream's input has the same
        values as the module's output ``feat``, so the leap augmented
        module runs on ``feat`` directly.
        """
        if self.lam is None:
            return None
        return self.lam(feat)

    def loss_both_streams(
        self, feat: torch.Tensor, batch: AuxBatch,
        cascade: Optional[torch.Tensor]
    ) -> Tuple[Dict[str, torch.Tensor], Optional[torch.Tensor],
               Optional[torch.Tensor]]:
        """Weighted losses and the logits of both streams.

        Args:
            feat (Tensor): Output x_i of the independent stream.
            batch (AuxBatch): Labels and images.
            cascade (Tensor, optional): Output z_i of the cascaded stream;
                None: ``feat`` (both streams compute the same values; only
                their graphs differ).

        Returns:
            tuple: ``loss_x_<part>`` (the independent head's losses times
            w_x) and ``loss_y_ce`` (w_y times the cascade's cross-entropy),
            whose sum is the local loss; the independent head's logits
            (None for heads without any) and the cascaded stream's. Empty
            and None for a module without a loss of its own.
        """
        if not self.has_loss:
            return OrderedDict(), None, None
        weight_x, weight_y = self.loss_weights
        losses_x, logits_x = self.independent.loss(feat, batch)
        losses: Dict[str, torch.Tensor] = OrderedDict()
        for name, value in losses_x.items():
            part = name[len('loss'):] if name.startswith('loss') else name
            losses[f'loss_x_{part.strip("_") or "part"}'] = weight_x * value
        logits_y = self.lam(feat if cascade is None else cascade)
        losses['loss_y_ce'] = weight_y * F.cross_entropy(
            logits_y, batch.labels)
        return losses, logits_x, logits_y

    def loss(self,
             feat: torch.Tensor,
             batch: AuxBatch,
             cascade: Optional[torch.Tensor] = None
             ) -> Tuple[Dict[str, torch.Tensor], Optional[torch.Tensor]]:
        """Weighted losses of both streams (see :meth:`loss_both_streams`).

        Returns:
            tuple[dict[str, Tensor], Tensor | None]: The losses and the
            cascaded stream's logits.
        """
        losses, _, logits_y = self.loss_both_streams(feat, batch, cascade)
        return losses, logits_y

    def extra_repr(self) -> str:
        text = super().extra_repr() + f', span={self.span}'
        if not self.has_loss:
            return text + ', no loss of its own'
        return text + f', loss_weights={self.loss_weights}'
