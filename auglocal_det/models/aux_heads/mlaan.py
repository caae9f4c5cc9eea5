"""MLAAN auxiliary networks (Zhang et al., arXiv:2406.16633, 2024).

MLAAN ("Multilaminar Leap Augmented Auxiliary Network") gives every local
module two loss terms:

- the **independent stream**: the module's output x_i, computed from the
  detached output of the previous module, goes through a small classifier.
  That is :class:`MLAANIndependentHead` (the authors' ``net_classifier``)
  or any other auxiliary head, e.g. DGL's or InfoPro's;
- the **cascaded stream**: the last ``span`` modules are recomputed from
  the detached output of module ``i - span``. Their output goes through a
  *leap augmented module* (:class:`LeapAugmentedModule`, the authors'
  ``aux_classifier``). It holds trainable blocks shaped like later layers
  of the network, then pooling and a linear classifier. The first block's
  output is summed with that of an exponential-moving-average (EMA) twin
  of the same primary layer.

The local loss of module i is ``w_x * L_x + w_y * CE_y``.
:class:`MLAANAuxHead` holds both parts for one module. The classifier
(:class:`~auglocal_det.models.classifiers.MLAANImageClassifier`) runs the
two streams, routes the gradients and updates the EMA twins.

The leap augmented module, its EMA twin and the leap layers of every
module (``aux_config`` in the authors' code, :data:`MLAAN_LEAP_LAYERS`)
are in ``mlaan_leap.py``; the independent head is in
``mlaan_independent.py``.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Dict, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F

from auglocal_det.errors import InputError
from auglocal_det.registry import MODELS

from .base import AuxBatch, BaseAuxHead
from .mlaan_independent import MLAANIndependentHead
from .mlaan_leap import (
    MLAAN_LEAP_LAYERS,
    LeapAugmentedModule,
    mlaan_leap_layers,
)

__all__ = [
    'MLAAN_LEAP_LAYERS', 'LeapAugmentedModule', 'MLAANAuxHead',
    'MLAANIndependentHead', 'mlaan_leap_layers'
]


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
            the leap blocks and of the EMA twin; False gives them the norm
            weights of a backbone without zero-initialised residuals (see
            :class:`LeapAugmentedModule`). Defaults to True.
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
