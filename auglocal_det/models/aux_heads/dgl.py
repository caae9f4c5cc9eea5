"""DGL auxiliary networks (Belilovsky et al., ICML 2020)."""
from __future__ import annotations

import math
from typing import Dict, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from auglocal_det.registry import MODELS

from ..layers import build_norm_layer
from .base import AuxBatch, BaseAuxHead

__all__ = ['DGLAuxHead']


@MODELS.register_module()
class DGLAuxHead(BaseAuxHead):
    """DGL's "MLP-SR" auxiliary network.

    ``AP(ceil(H/4), ceil(W/4))`` -> ``num_convs`` x (1x1 conv C->C, BN,
    ReLU) -> ``AP(2)`` -> flatten to 4C -> ``num_hidden_fc`` x (FC 4C->4C,
    BN1d, ReLU) -> FC 4C->classes, trained with cross-entropy. The pooling
    sizes come from the real size of the input features (derived from the
    backbone's layer specs and ``image_size``).

    The default (two hidden FC layers without bias) is the variant the
    AugLocal paper compared against; ``num_hidden_fc=3,
    hidden_fc_bias=True`` is DGL's original network.

    Args:
        num_convs (int): Number of 1x1 conv blocks. Defaults to 3.
        num_hidden_fc (int): Number of hidden FC blocks. Defaults to 2.
        hidden_fc_bias (bool): Bias in the hidden FC layers. Defaults to
            False.
        **kwargs: Arguments of :class:`BaseAuxHead`.
    """

    def __init__(self,
                 num_convs: int = 3,
                 num_hidden_fc: int = 2,
                 hidden_fc_bias: bool = False,
                 **kwargs) -> None:
        super().__init__(**kwargs)
        channels = self.in_channels
        height, width = self.in_size
        self.pre_pool = nn.AdaptiveAvgPool2d(
            (math.ceil(height / 4), math.ceil(width / 4)))
        convs = []
        for _ in range(num_convs):
            convs += [
                nn.Conv2d(channels, channels, kernel_size=1, bias=False),
                build_norm_layer(self.norm_cfg, channels),
                nn.ReLU(inplace=True)
            ]
        self.convs = nn.Sequential(*convs)
        self.post_pool = nn.AdaptiveAvgPool2d(2)
        hidden = 4 * channels
        mlp = []
        for _ in range(num_hidden_fc):
            mlp += [
                nn.Linear(hidden, hidden, bias=hidden_fc_bias),
                nn.BatchNorm1d(hidden),
                nn.ReLU(inplace=True)
            ]
        self.mlp = nn.Sequential(*mlp)
        self.fc = nn.Linear(hidden, self.num_classes)

    def forward(self, feat: torch.Tensor) -> torch.Tensor:
        x = self.post_pool(self.convs(self.pre_pool(feat)))
        return self.fc(self.mlp(torch.flatten(x, 1)))

    def loss(self, feat: torch.Tensor, batch: AuxBatch
             ) -> Tuple[Dict[str, torch.Tensor], Optional[torch.Tensor]]:
        logits = self(feat)
        loss_ce = F.cross_entropy(logits, batch.labels)
        return dict(loss_ce=self.lambda_y * loss_ce), logits
