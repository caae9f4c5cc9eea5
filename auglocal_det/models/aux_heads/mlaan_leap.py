"""MLAAN's leap augmented module and its EMA twin.

The cascaded stream of MLAAN (Zhang et al., arXiv:2406.16633, 2024) ends
in a *leap augmented module* (:class:`LeapAugmentedModule`, the authors'
``aux_classifier``): trainable blocks shaped like later layers of the
network, then pooling and a linear classifier. The first block's output is
summed with that of an exponential-moving-average (EMA) twin of the same
primary layer.

The leap layers of every module (``aux_config`` in the authors' code) are
given per network in :data:`MLAAN_LEAP_LAYERS`.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Dict, List, Optional, Sequence, Union

import torch
import torch.nn as nn
from mmengine.model import BaseModule, Sequential

from auglocal_det.errors import InputError

from ..backbones.resnet_depths import resnet_arch_name
from ..layers import LocalLayerSpec, get_block, make_res_block

__all__ = ['MLAAN_LEAP_LAYERS', 'LeapAugmentedModule', 'mlaan_leap_layers']


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
            every block, as the authors' ImageNet code does for its
            re-initialised copies (and for its backbone). Their CIFAR code
            copies the initialised backbone blocks, whose norm weights are
            all 1: use False with a backbone without zero-initialised
            residuals (``LocalCifarResNet``). Applies when
            ``init_weights`` runs. Defaults to True.
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
