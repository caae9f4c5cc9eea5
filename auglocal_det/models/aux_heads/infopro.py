"""InfoPro auxiliary networks (Wang et al., ICLR 2021)."""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from auglocal_det.errors import InputError
from auglocal_det.registry import MODELS

from ..layers import build_norm_layer
from .base import AuxBatch, BaseAuxHead, LossWeight

__all__ = ['InfoProAuxHead', 'supervised_contrastive_loss']


def supervised_contrastive_loss(features: torch.Tensor,
                                labels: torch.Tensor,
                                temperature: float = 0.07,
                                base_temperature: float = 0.07
                                ) -> torch.Tensor:
    """Supervised contrastive loss with a single view per sample.

    For anchor a with positives P(a) (same label, a excluded)::

        l_a = -(t / t_base) * mean_{p in P(a)} log(
                  exp(z_a . z_p / t) / sum_{k != a} exp(z_a . z_k / t))

    averaged over the anchors that have at least one positive (0 when none
    has).

    Args:
        features (Tensor): (N, D) features; they are L2-normalised here.
        labels (Tensor): (N,) labels.
        temperature (float): Temperature t. Defaults to 0.07.
        base_temperature (float): Reference temperature. Defaults to 0.07.

    Returns:
        Tensor: Scalar loss.
    """
    z = F.normalize(features.float(), dim=1)
    logits = z @ z.t() / temperature
    self_mask = torch.eye(len(z), dtype=torch.bool, device=z.device)
    logits = logits.masked_fill(self_mask, float('-inf'))
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    positives = (labels[:, None] == labels[None, :]) & ~self_mask
    num_pos = positives.sum(dim=1)
    log_prob_pos = log_prob.masked_fill(~positives, 0).sum(dim=1)
    valid = num_pos > 0
    mean_log_prob_pos = log_prob_pos[valid] / num_pos[valid]
    loss = -(temperature / base_temperature) * mean_log_prob_pos
    if loss.numel() == 0:
        return features.sum() * 0
    return loss.mean()


def _conv_bn_relu(in_channels: int,
                  out_channels: int,
                  kernel_size: int,
                  norm_cfg: dict,
                  stride: int = 1,
                  bias: bool = False) -> List[nn.Module]:
    return [
        nn.Conv2d(
            in_channels,
            out_channels,
            kernel_size,
            stride=stride,
            padding=kernel_size // 2,
            bias=bias),
        build_norm_layer(norm_cfg, out_channels),
        nn.ReLU(inplace=True)
    ]


class _Decoder(nn.Module):
    """Stages of (bilinear resize, layers); sizes are image-size fractions.

    Args:
        stages (list[tuple[int | None, list[nn.Module]]]): For each stage,
            the divisor d of the image size the input is first resized to
            (``ceil(size / d)``, bilinear, align_corners=True; None: no
            resize), and the stage's layers.
    """

    def __init__(self, stages: List[Tuple[Optional[int],
                                          List[nn.Module]]]) -> None:
        super().__init__()
        self.divisors = [divisor for divisor, _ in stages]
        self.stages = nn.ModuleList(
            nn.Sequential(*layers) for _, layers in stages)

    def forward(self, x: torch.Tensor,
                image_size: Sequence[int]) -> torch.Tensor:
        for divisor, stage in zip(self.divisors, self.stages):
            if divisor is not None:
                size = tuple(-(-int(s) // divisor) for s in image_size)
                if tuple(x.shape[-2:]) != size:
                    x = F.interpolate(
                        x, size=size, mode='bilinear', align_corners=True)
            x = stage(x)
        return x

    def extra_repr(self) -> str:
        return f'resize_divisors={self.divisors}'


@MODELS.register_module()
class InfoProAuxHead(BaseAuxHead):
    """InfoPro's auxiliary networks: a classifier and an image decoder.

    Local loss = ``lambda_x * BCE(decoder(h), image) + lambda_y * L_y``,
    where the decoder reconstructs the un-normalised input image
    (``batch.images``, in [0, 1]) from the features and ``L_y`` is the
    cross-entropy of the classification head (``loss_mode='ce'``) or the
    supervised contrastive loss of its L2-normalised 128-d output
    (``loss_mode='contrast'``). Both weights are interpolated along the
    network. ``loss_mode='none'`` builds the decoder only (local loss =
    the weighted reconstruction loss), to add InfoPro's reconstruction term
    to another rule's head through :class:`ComposedAuxHead`.

    Two network families are built (``arch``):

    - ``'cifar'``: head ``conv3x3`` (C < 64: C->2C stride 2, else C->C
      stride 1) - BN - ReLU - AP(1) - FC(->128) - ReLU - FC(->out);
      decoder: bilinear upsample to the image size, conv3x3 C->12 - BN -
      ReLU - conv3x3 12->3 - Sigmoid.
    - ``'imagenet'``: head C1 C->128 - BN - ReLU - 256C3s2 - BN - ReLU -
      512C3s2 - BN - ReLU - C1 512->2048 - BN - ReLU - AP(1) - FC(->out);
      decoder: C1 C->128 - BN - ReLU - up to 1/4 - 32C3 - BN - ReLU - up
      to 1/2 - 12C3 - BN - ReLU - up to 1/1 - 3C3 - Sigmoid (upsampling
      skipped where the size already matches).

    ``'auto'`` picks ``'imagenet'`` for backbones whose stem downsamples
    (ImageNet ResNets) and ``'cifar'`` otherwise. Decoder convolutions have
    a bias; head convolutions do not.

    Args:
        loss_mode (str): ``'ce'``, ``'contrast'`` or ``'none'`` (no
            classification head). Defaults to ``'ce'``.
        arch (str): ``'auto'``, ``'cifar'`` or ``'imagenet'``. Defaults to
            ``'auto'``.
        feature_dim (int): Hidden width of the CIFAR head and output size
            of the contrastive head. Defaults to 128.
        temperature (float): SupCon temperature. Defaults to 0.07.
        base_temperature (float): SupCon reference temperature. Defaults to
            0.07.
        lambda_x (float or Sequence[float]): Weight of the reconstruction
            loss, ``(first, last)`` or constant. Defaults to (5.0, 0.5),
            the published setting of ResNet-110 with K = 55, which the
            package also uses where none is published (the ImageNet
            ResNets). ResNet-32 with K = 16 has its own published setting,
            in its config.
        lambda_y (float or Sequence[float]): Weight of the classification
            loss. Defaults to (0.0, 1.0) (as ``lambda_x``).
        **kwargs: Other arguments of :class:`BaseAuxHead`.
    """

    reads_images = True

    def __init__(self,
                 loss_mode: str = 'ce',
                 arch: str = 'auto',
                 feature_dim: int = 128,
                 temperature: float = 0.07,
                 base_temperature: float = 0.07,
                 lambda_x: LossWeight = (5.0, 0.5),
                 lambda_y: LossWeight = (0.0, 1.0),
                 **kwargs) -> None:
        super().__init__(lambda_x=lambda_x, lambda_y=lambda_y, **kwargs)
        if loss_mode not in ('ce', 'contrast', 'none'):
            raise InputError(
                f'InfoProAuxHead: unknown loss_mode {loss_mode!r} '
                "(model.aux_head.loss_mode: 'ce', 'contrast' or 'none')")
        if arch == 'auto':
            arch = 'imagenet' if self.layer_specs[0].stride > 1 else 'cifar'
        if arch not in ('cifar', 'imagenet'):
            raise InputError(
                f'InfoProAuxHead: unknown arch {arch!r} '
                "(model.aux_head.arch: 'auto', 'cifar' or 'imagenet')")
        self.loss_mode = loss_mode
        self.arch = arch
        self.temperature = temperature
        self.base_temperature = base_temperature
        out_dim = self.num_classes if loss_mode == 'ce' else feature_dim
        image_channels = self.layer_specs[0].in_channels
        self.head: Optional[nn.Sequential] = None
        if arch == 'cifar':
            if loss_mode != 'none':
                self.head = self._cifar_head(feature_dim, out_dim)
            self.decoder = self._cifar_decoder(image_channels)
        else:
            if loss_mode != 'none':
                self.head = self._imagenet_head(out_dim)
            self.decoder = self._imagenet_decoder(image_channels)

    def _cifar_head(self, hidden_dim: int, out_dim: int) -> nn.Sequential:
        channels = self.in_channels
        if channels < 64:
            width, stride = 2 * channels, 2
        else:
            width, stride = channels, 1
        return nn.Sequential(
            *_conv_bn_relu(channels, width, 3, self.norm_cfg, stride),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(1),
            nn.Linear(width, hidden_dim), nn.ReLU(inplace=True),
            nn.Linear(hidden_dim, out_dim))

    def _imagenet_head(self, out_dim: int) -> nn.Sequential:
        norm_cfg = self.norm_cfg
        return nn.Sequential(
            *_conv_bn_relu(self.in_channels, 128, 1, norm_cfg),
            *_conv_bn_relu(128, 256, 3, norm_cfg, stride=2),
            *_conv_bn_relu(256, 512, 3, norm_cfg, stride=2),
            *_conv_bn_relu(512, 2048, 1, norm_cfg), nn.AdaptiveAvgPool2d(1),
            nn.Flatten(1), nn.Linear(2048, out_dim))

    def _cifar_decoder(self, image_channels: int) -> _Decoder:
        return _Decoder([
            (1, [
                *_conv_bn_relu(
                    self.in_channels, 12, 3, self.norm_cfg, bias=True),
                nn.Conv2d(12, image_channels, 3, padding=1),
                nn.Sigmoid()
            ]),
        ])

    def _imagenet_decoder(self, image_channels: int) -> _Decoder:
        norm_cfg = self.norm_cfg
        return _Decoder([
            (None,
             _conv_bn_relu(self.in_channels, 128, 1, norm_cfg, bias=True)),
            (4, _conv_bn_relu(128, 32, 3, norm_cfg, bias=True)),
            (2, _conv_bn_relu(32, 12, 3, norm_cfg, bias=True)),
            (1, [nn.Conv2d(12, image_channels, 3, padding=1),
                 nn.Sigmoid()]),
        ])

    def forward(self, feat: torch.Tensor) -> Optional[torch.Tensor]:
        if self.loss_mode != 'ce':
            return None
        return self.head(feat)

    def reconstruct(self, feat: torch.Tensor,
                    image_size: Sequence[int]) -> torch.Tensor:
        """Decode the features into an image in [0, 1].

        Args:
            feat (Tensor): Output of the local module.
            image_size (Sequence[int]): ``(H, W)`` of the target image.

        Returns:
            Tensor: (N, 3, H, W) reconstruction.
        """
        return self.decoder(feat, tuple(image_size))

    def loss(self, feat: torch.Tensor, batch: AuxBatch
             ) -> Tuple[Dict[str, torch.Tensor], Optional[torch.Tensor]]:
        if batch.images is None:
            raise ValueError('InfoProAuxHead needs batch.images (the input '
                             'images in [0, 1]) as reconstruction target')
        target = batch.images
        recon = self.reconstruct(feat, target.shape[-2:])
        # BCE is unsafe in reduced precision: compute it in float32.
        with torch.autocast(device_type=recon.device.type, enabled=False):
            loss_rec = F.binary_cross_entropy(recon.float(),
                                              target.float())
        losses = dict(loss_rec=self.lambda_x * loss_rec)
        if self.head is None:
            return losses, None
        out = self.head(feat)
        if self.loss_mode == 'ce':
            losses['loss_ce'] = self.lambda_y * F.cross_entropy(
                out, batch.labels)
            return losses, out
        losses['loss_contrast'] = self.lambda_y * supervised_contrastive_loss(
            out, batch.labels, self.temperature, self.base_temperature)
        return losses, None
