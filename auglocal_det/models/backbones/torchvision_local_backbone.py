"""Base of the backbones built from torchvision's model definitions."""
from __future__ import annotations

import functools
from collections import OrderedDict
from typing import (
    Callable,
    Dict,
    List,
    NamedTuple,
    Optional,
    Sequence,
    Tuple,
    Union,
)

import torch
import torch.nn as nn
from mmengine.model import BaseModule
from torch.nn.modules.batchnorm import _BatchNorm

from auglocal_det.errors import InputError

from ..layers import LayerFactory, LocalLayerSpec, build_norm_layer

__all__ = ['LocalLayerDef', 'TorchvisionLocalBackbone', 'norm_layer_of']


def norm_layer_of(norm_cfg: dict) -> Callable[[int], nn.Module]:
    """The ``norm_layer`` callable torchvision's blocks take, from a
    norm config (``dict(type='BN')``, ``dict(type='SyncBN')``, ...)."""
    return functools.partial(build_norm_layer, norm_cfg)


class LocalLayerDef(NamedTuple):
    """One local layer of a torchvision network, as the backbone lists it.

    Attributes:
        name (str): Its name (the module path of its main module).
        block (str): Its kind (``'stem'``, ``'InvertedResidual'``, ...).
        modules (tuple[str]): Paths of the backbone's modules it runs, in
            order (several for a layer that also owns a pooling or a final
            1x1 convolution).
        in_channels (int): Input channels.
        out_channels (int): Output channels.
        stride (int): Total stride.
        factory (LayerFactory, optional): Builds a fresh layer of this
            kind; None for the stem (never sampled by AugLocal).
    """

    name: str
    block: str
    modules: Tuple[str, ...]
    in_channels: int
    out_channels: int
    stride: int
    factory: Optional[LayerFactory] = None


class TorchvisionLocalBackbone(BaseModule):
    """A torchvision network's feature extractor split into local layers.

    A subclass builds torchvision's modules under torchvision's attribute
    names (so the state dict has torchvision's keys, the classifier's
    excepted) and calls :meth:`_set_local_layers` with the list of its
    local layers. This class gives them the interface of
    :class:`LocalResNet`: :meth:`local_layers`, :meth:`local_layer_specs`,
    :attr:`num_local_layers`, a forward returning a tuple of feature maps,
    ``norm_eval``, and :meth:`to_torchvision_state_dict` to turn a
    classifier's weights into those of the torchvision model.

    Args:
        out_indices (Sequence[int]): Local layers whose outputs
            :meth:`forward` returns (negative indices count from the end).
            Defaults to ``(-1, )``.
        norm_eval (bool): Keep every BatchNorm in eval mode during
            training. Defaults to False.
        init_cfg (dict or list[dict], optional): Initialization config.
            Defaults to None: torchvision's own initialisation, done when
            the modules are built.
    """

    #: How the keys of the classifier's ``head`` map to those of the
    #: torchvision model (prefix of ours -> prefix of torchvision's).
    torchvision_head_keys: Dict[str, str] = {'fc.': 'fc.'}
    #: How the strided operations of the layers round an odd side.
    size_rounding = 'ceil'

    def __init__(self,
                 out_indices: Sequence[int] = (-1, ),
                 norm_eval: bool = False,
                 init_cfg: Optional[Union[dict, List[dict]]] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        self.out_indices = tuple(out_indices)
        self.norm_eval = norm_eval
        self._layer_defs: List[LocalLayerDef] = []

    def _set_local_layers(self, layer_defs: Sequence[LocalLayerDef]) -> None:
        """Record the local layers (called once by the subclass)."""
        self._layer_defs = list(layer_defs)
        num_layers = len(self._layer_defs)
        for index in self.out_indices:
            if not -num_layers <= index < num_layers:
                raise InputError(
                    f'{type(self).__name__}: out_indices {self.out_indices} '
                    f'(model.backbone.out_indices) out of range for '
                    f'{num_layers} local layers')
        self.feat_dim = self._layer_defs[-1].out_channels

    # ------------------------------------------------------------------
    # local layers
    # ------------------------------------------------------------------
    def local_layers(self) -> List[nn.Module]:
        """The local layers in order, as views of the backbone's modules.

        A layer of one module is that module; a layer of several is an
        ``nn.Sequential`` built on each call and never registered, so no
        parameter is registered twice.

        Returns:
            list[nn.Module]: One module per local layer.
        """
        layers = []
        for layer in self._layer_defs:
            modules = [self.get_submodule(path) for path in layer.modules]
            layers.append(modules[0] if len(modules) == 1 else nn.Sequential(
                OrderedDict((path.replace('.', '_'), module)
                            for path, module in zip(layer.modules, modules))))
        return layers

    def local_layer_specs(self) -> List[LocalLayerSpec]:
        """Shape information of every local layer, in the same order.

        Returns:
            list[LocalLayerSpec]: One spec per local layer; ``planes`` is
            the output width.
        """
        specs = []
        downsample = 1
        for layer in self._layer_defs:
            downsample *= layer.stride
            specs.append(
                LocalLayerSpec(
                    name=layer.name,
                    block=layer.block,
                    in_channels=layer.in_channels,
                    out_channels=layer.out_channels,
                    planes=layer.out_channels,
                    stride=layer.stride,
                    downsample=downsample,
                    size_rounding=self.size_rounding,
                    factory=layer.factory))
        return specs

    @property
    def num_local_layers(self) -> int:
        """Number of local layers (K when every layer is its own module)."""
        return len(self._layer_defs)

    # ------------------------------------------------------------------
    # weights
    # ------------------------------------------------------------------
    def to_torchvision_state_dict(
            self, state_dict: Dict[str, torch.Tensor]
    ) -> OrderedDict[str, torch.Tensor]:
        """Turn a classifier's weights into the torchvision model's.

        Args:
            state_dict (dict): State dict of a ``LocalImageClassifier``
                with this backbone (``backbone.*``, ``head.*``; auxiliary
                heads are dropped).

        Returns:
            OrderedDict: Keys of the torchvision model this backbone comes
            from, its classifier included.
        """
        out: OrderedDict[str, torch.Tensor] = OrderedDict()
        for key, value in state_dict.items():
            if key.startswith('backbone.'):
                out[key[len('backbone.'):]] = value
            elif key.startswith('head.'):
                rest = key[len('head.'):]
                for ours, theirs in self.torchvision_head_keys.items():
                    if rest.startswith(ours):
                        out[theirs + rest[len(ours):]] = value
                        break
                else:
                    raise InputError(
                        f'{type(self).__name__}: classifier key {key!r} '
                        "has no place in torchvision's model (expected "
                        f'head.{list(self.torchvision_head_keys)})')
        return out

    # ------------------------------------------------------------------
    # forward
    # ------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        """Forward function.

        Args:
            x (Tensor): Images of shape (N, C, H, W).

        Returns:
            tuple[Tensor]: Outputs of the local layers in ``out_indices``.
        """
        num_layers = self.num_local_layers
        wanted = {i % num_layers for i in self.out_indices}
        outs = []
        for index, layer in enumerate(self.local_layers()):
            x = layer(x)
            if index in wanted:
                outs.append(x)
        return tuple(outs)

    def train(self, mode: bool = True) -> TorchvisionLocalBackbone:
        """Set the training mode, with ``norm_eval`` keeping every
        BatchNorm in eval mode."""
        super().train(mode)
        if mode and self.norm_eval:
            for module in self.modules():
                if isinstance(module, _BatchNorm):
                    module.eval()
        return self
