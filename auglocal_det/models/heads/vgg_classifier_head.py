"""The classifier of torchvision's VGG, as a network head."""
from __future__ import annotations

import torch
import torch.nn as nn
from mmengine.model import BaseModule

from auglocal_det.registry import MODELS

__all__ = ['VGGClassifierHead']


@MODELS.register_module()
class VGGClassifierHead(BaseModule):
    """Adaptive average pooling to 7 x 7 and VGG's three FC layers.

    ``avgpool`` and ``classifier`` (FC - ReLU - Dropout - FC - ReLU -
    Dropout - FC) have the names and layout of torchvision's ``VGG``, so a
    ``LocalImageClassifier``'s ``head.classifier.*`` are torchvision's
    ``classifier.*``. The FC layers start as torchvision's: weights
    ~ N(0, 0.01), biases 0.

    Args:
        in_channels (int): Channels of the last feature map. Defaults to
            512.
        num_classes (int): Number of classes. Defaults to 1000.
        hidden_channels (int): Width of the two hidden FC layers. Defaults
            to 4096.
        pool_size (int): Side of the pooled map. Defaults to 7.
        dropout (float): Dropout probability. Defaults to 0.5.
        init_cfg (dict or list[dict], optional): Initialization config.
            Defaults to None (torchvision's, above).
    """

    def __init__(self,
                 in_channels: int = 512,
                 num_classes: int = 1000,
                 hidden_channels: int = 4096,
                 pool_size: int = 7,
                 dropout: float = 0.5,
                 init_cfg=None) -> None:
        if init_cfg is None:
            init_cfg = dict(type='Normal', layer='Linear', std=0.01, bias=0)
        super().__init__(init_cfg=init_cfg)
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.avgpool = nn.AdaptiveAvgPool2d(pool_size)
        self.classifier = nn.Sequential(
            nn.Linear(in_channels * pool_size * pool_size, hidden_channels),
            nn.ReLU(True),
            nn.Dropout(p=dropout),
            nn.Linear(hidden_channels, hidden_channels),
            nn.ReLU(True),
            nn.Dropout(p=dropout),
            nn.Linear(hidden_channels, num_classes),
        )

    def forward(self, feat: torch.Tensor) -> torch.Tensor:
        """Logits of shape (N, num_classes) from features (N, C, H, W)."""
        return self.classifier(torch.flatten(self.avgpool(feat), 1))
