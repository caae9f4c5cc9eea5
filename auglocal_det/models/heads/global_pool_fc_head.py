"""The network's own classifier of a ResNet-style backbone."""
from __future__ import annotations

import torch
import torch.nn as nn
from mmengine.model import BaseModule

from auglocal_det.registry import MODELS

__all__ = ['GlobalPoolFcHead']


@MODELS.register_module()
class GlobalPoolFcHead(BaseModule):
    """Global average pooling and one FC layer.

    The linear layer is ``fc``, so a classifier's parameters are
    ``head.fc.weight`` and ``head.fc.bias`` (torchvision's ``fc.*``).
    It is ``LocalImageClassifier``'s head when ``model.head`` names no
    ``type``.

    Args:
        in_channels (int): Channels of the last feature map.
        num_classes (int): Number of classes.
        init_cfg (dict or list[dict], optional): Initialization config.
            Defaults to None (PyTorch's defaults of ``nn.Linear``).
    """

    def __init__(self,
                 in_channels: int,
                 num_classes: int,
                 init_cfg=None) -> None:
        super().__init__(init_cfg=init_cfg)
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_channels, num_classes)

    def forward(self, feat: torch.Tensor) -> torch.Tensor:
        """Logits of shape (N, num_classes) from features (N, C, H, W)."""
        return self.fc(torch.flatten(self.pool(feat), 1))
