"""PredSim auxiliary networks (Nokland & Eidnes, ICML 2019)."""
from __future__ import annotations

import math
from typing import Dict, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from auglocal_det.registry import MODELS

from .base import AuxBatch, BaseAuxHead, LossWeight

__all__ = ['PredSimAuxHead', 'predsim_pool_size', 'similarity_matrix']


def predsim_pool_size(channels: int,
                      height: int,
                      width: int,
                      target_dim: int = 512
                      ) -> Tuple[Tuple[int, int], Tuple[int, int]]:
    """Average-pooling kernel that brings C x H x W down to ``target_dim``.

    Starting from a 1x1 kernel, the kernel height and then the kernel width
    are doubled in turn while ``C * ceil(H / kh) * ceil(W / kw)`` is still
    above ``target_dim`` (and ``kh < H``). The padding centres the last,
    partial window.

    Args:
        channels (int): Input channels C.
        height (int): Input height H.
        width (int): Input width W.
        target_dim (int): Target flattened size. Defaults to 512.

    Returns:
        tuple: ``((kh, kw), (pad_h, pad_w))``; the pooling stride equals
        the kernel.
    """
    kh = kw = 1
    out_h, out_w = height, width
    while channels * out_h * out_w > target_dim and kh < height:
        kh *= 2
        out_h = math.ceil(height / kh)
        if channels * out_h * out_w > target_dim:
            kw *= 2
            out_w = math.ceil(width / kw)
    pad_h = (kh * (out_h - height // kh)) // 2
    pad_w = (kw * (out_w - width // kw)) // 2
    return (kh, kw), (pad_h, pad_w)


def similarity_matrix(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Cosine similarity between the centred samples of a batch.

    A feature map (N, C, H, W) with C > 3 and H > 1 is first reduced to the
    per-channel standard deviation over spatial positions (N, C); other
    inputs are flattened. Each row is centred on its own mean and divided
    by its L2 norm (+ ``eps``); the result is ``V V^T`` clamped to [-1, 1].

    Args:
        x (Tensor): Features (N, ...) or one-hot labels (N, classes).
        eps (float): Added to the row norms. Defaults to 1e-8.

    Returns:
        Tensor: (N, N) similarity matrix.
    """
    if x.dim() == 4 and x.size(1) > 3 and x.size(2) > 1:
        v = x.flatten(2).std(dim=2)
    else:
        v = x.flatten(1)
    v = v - v.mean(dim=1, keepdim=True)
    v = v / (v.norm(dim=1, keepdim=True) + eps)
    return (v @ v.t()).clamp(-1, 1)


@MODELS.register_module()
class PredSimAuxHead(BaseAuxHead):
    """PredSim's two heads: class prediction and similarity matching.

    Prediction: average pooling chosen by :func:`predsim_pool_size` to about
    ``hidden_dim`` features, flatten, linear classifier, cross-entropy.
    Similarity: a bias-free 3x3 conv C->C, then the MSE between the
    :func:`similarity_matrix` of its output and that of the one-hot labels.
    Local loss = ``lambda_x * L_sim + lambda_y * L_ce`` with the defaults
    0.99 and 0.01 in every module.

    Args:
        hidden_dim (int): Target size of the pooled features. Defaults to
            512.
        lambda_x (float or Sequence[float]): Weight of the similarity loss.
            Defaults to 0.99.
        lambda_y (float or Sequence[float]): Weight of the prediction loss.
            Defaults to 0.01.
        **kwargs: Other arguments of :class:`BaseAuxHead`.
    """

    def __init__(self,
                 hidden_dim: int = 512,
                 lambda_x: LossWeight = 0.99,
                 lambda_y: LossWeight = 0.01,
                 **kwargs) -> None:
        super().__init__(lambda_x=lambda_x, lambda_y=lambda_y, **kwargs)
        channels = self.in_channels
        height, width = self.in_size
        kernel, padding = predsim_pool_size(channels, height, width,
                                            hidden_dim)
        self.pool = nn.AvgPool2d(kernel, stride=kernel, padding=padding)
        out_h = (height + 2 * padding[0] - kernel[0]) // kernel[0] + 1
        out_w = (width + 2 * padding[1] - kernel[1]) // kernel[1] + 1
        self.fc = nn.Linear(channels * out_h * out_w, self.num_classes)
        self.sim_conv = nn.Conv2d(
            channels, channels, kernel_size=3, padding=1, bias=False)

    def forward(self, feat: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(feat), 1))

    def loss(self, feat: torch.Tensor, batch: AuxBatch
             ) -> Tuple[Dict[str, torch.Tensor], Optional[torch.Tensor]]:
        logits = self(feat)
        loss_ce = F.cross_entropy(logits, batch.labels)
        one_hot = F.one_hot(batch.labels, self.num_classes).to(feat.dtype)
        sim_feat = similarity_matrix(self.sim_conv(feat))
        sim_label = similarity_matrix(one_hot)
        loss_sim = F.mse_loss(sim_feat, sim_label.to(sim_feat.dtype))
        return dict(
            loss_sim=self.lambda_x * loss_sim,
            loss_ce=self.lambda_y * loss_ce), logits
