"""MLAAN's classifier of the independent stream.

In MLAAN (Zhang et al., arXiv:2406.16633, 2024) the output of every local
module, computed from the detached output of the previous module, goes
through a small classifier: :class:`MLAANIndependentHead`, the authors'
``net_classifier``. :class:`~.mlaan.MLAANAuxHead` may use any other
auxiliary head in its place.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from auglocal_det.errors import InputError
from auglocal_det.registry import MODELS

from ..layers import build_norm_layer
from .base import AuxBatch, BaseAuxHead

__all__ = ['MLAANIndependentHead']


@MODELS.register_module()
class MLAANIndependentHead(BaseAuxHead):
    """MLAAN's classifier of the independent stream (``net_classifier``).

    Features whose width is in ``expand_channels`` first go through
    ``C1 C->2C - BN - ReLU - C1 2C->C - BN - ReLU``. Then ``AP(1)`` and
    ``FC(C->classes)`` give the logits. The loss is their cross-entropy,
    weighted by ``lambda_y``. The widths that expand are the authors'
    (docs/algorithms.md, "MLAAN").

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
