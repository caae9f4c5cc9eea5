"""Base class of the auxiliary networks that give each local module a loss.
"""
from __future__ import annotations

from abc import ABCMeta, abstractmethod
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
from mmengine.model import BaseModule

from ..layers import LocalLayerSpec

__all__ = ['AuxBatch', 'BaseAuxHead', 'interpolate_loss_weight']

LossWeight = Union[float, Sequence[float]]


class AuxBatch:
    """What an auxiliary head may need besides the features.

    The [0, 1] images are made only when a head first reads them. InfoPro's
    reconstruction target is the one reader, so the other rules never pay
    for the copy. The batch holds no reference to the network input. The
    training loop can therefore let go of it after the first local module
    (see ``LocalImageClassifier.local_steps``), unless ``make_images``
    needs it.

    Args:
        labels (Tensor): Class labels of shape (N,), dtype long.
        images (Tensor, optional): The same images in [0, 1] (before
            normalisation), the target of InfoPro's reconstruction loss.
        make_images (Callable, optional): Called without arguments, once,
            on the first read of :attr:`images` when ``images`` is None.
    """

    def __init__(self,
                 labels: torch.Tensor,
                 images: Optional[torch.Tensor] = None,
                 make_images: Optional[Callable[[],
                                                torch.Tensor]] = None) -> None:
        self.labels = labels
        self._images = images
        self._make_images = make_images

    @property
    def images(self) -> Optional[torch.Tensor]:
        """The images in [0, 1], made on first use; None if unavailable."""
        if self._images is None and self._make_images is not None:
            self._images = self._make_images()
            self._make_images = None
        return self._images

    def __repr__(self) -> str:
        made = 'made' if self._images is not None else (
            'lazy' if self._make_images is not None else 'none')
        return f'AuxBatch(labels={tuple(self.labels.shape)}, images={made})'


def interpolate_loss_weight(weight: LossWeight, module_index: int,
                            num_aux: int) -> float:
    """Loss weight of auxiliary head ``module_index`` out of ``num_aux``.

    The weight moves linearly from its first to its last value along the
    network: ``w_j = w_first * (1 - r_j) + w_last * r_j`` with
    ``r_j = j / (num_aux - 1)`` (``r_j = 0`` when there is a single head).
    For K local modules ``num_aux = K - 1`` and the denominator is
    ``K - 2``.

    Args:
        weight (float or Sequence[float]): A constant weight, or
            ``(first, last)``.
        module_index (int): Index j of the head, ``0 <= j < num_aux``.
        num_aux (int): Number of auxiliary heads.

    Returns:
        float: The weight of head j.
    """
    if isinstance(weight, (int, float)):
        return float(weight)
    first, last = weight
    if not 0 <= module_index < max(num_aux, 1):
        raise ValueError(f'module_index {module_index} out of range for '
                         f'{num_aux} auxiliary heads')
    ratio = module_index / (num_aux - 1) if num_aux > 1 else 0.0
    return float(first) * (1 - ratio) + float(last) * ratio


def _as_specs(layer_specs: Sequence[Union[LocalLayerSpec, dict]]
              ) -> List[LocalLayerSpec]:
    return [
        spec if isinstance(spec, LocalLayerSpec) else LocalLayerSpec(**spec)
        for spec in layer_specs
    ]


class BaseAuxHead(BaseModule, metaclass=ABCMeta):
    """Base class of the auxiliary heads.

    One head is built per local module but the last. It receives the
    module's output features and returns the module's local loss, already
    weighted: ``loss = lambda_x * L_x + lambda_y * L_y``, where ``L_x`` is
    the rule's extra loss (reconstruction for InfoPro, similarity matching
    for PredSim) and ``L_y`` its classification loss. The weights are
    interpolated along the network by :func:`interpolate_loss_weight`.

    Args:
        layer_index (int): Index of the module's last local layer, whose
            output the head receives.
        layer_specs (Sequence[LocalLayerSpec]): The backbone's specs of all
            local layers (``LocalResNet.local_layer_specs()``); dicts with
            the same fields are accepted.
        module_index (int): Index j of this head among the auxiliary heads.
            Defaults to 0.
        num_aux (int): Number of auxiliary heads. Defaults to 1.
        num_classes (int): Number of classes. Defaults to 1000.
        image_size (int or Sequence[int]): Training crop size, used to
            derive the input feature size. Defaults to 224.
        lambda_x (float or Sequence[float]): Weight of ``L_x``: a constant
            or ``(first, last)``. Defaults to 0.
        lambda_y (float or Sequence[float]): Weight of ``L_y``. Defaults
            to 1.
        norm_cfg (dict, optional): Config of the 2D norm layers. Defaults
            to None, i.e. ``dict(type='BN')``.
        init_cfg (dict or list[dict], optional): Initialization config.
            Defaults to None, which means Kaiming-normal (fan_out) for
            convolutions, weight 1 and bias 0 for norm layers and PyTorch's
            default for linear layers; pass ``[]`` to skip it.
    """

    #: Whether :meth:`loss` reads ``batch.images`` (the [0, 1] images): the
    #: classifier then keeps the network input alive to make them, and a
    #: pipeline stage sends them on to the stage of this head.
    reads_images: bool = False

    def __init__(self,
                 layer_index: int,
                 layer_specs: Sequence[Union[LocalLayerSpec, dict]],
                 module_index: int = 0,
                 num_aux: int = 1,
                 num_classes: int = 1000,
                 image_size: Union[int, Sequence[int]] = 224,
                 lambda_x: LossWeight = 0.0,
                 lambda_y: LossWeight = 1.0,
                 norm_cfg: Optional[dict] = None,
                 init_cfg: Optional[Union[dict, List[dict]]] = None) -> None:
        if init_cfg is None:
            init_cfg = [
                dict(type='Kaiming', layer='Conv2d'),
                dict(type='Constant', val=1, layer='_BatchNorm')
            ]
        super().__init__(init_cfg=init_cfg)
        self.layer_specs = _as_specs(layer_specs)
        if not 0 <= layer_index < len(self.layer_specs):
            raise IndexError(f'layer_index {layer_index} out of range for '
                             f'{len(self.layer_specs)} local layers')
        self.layer_index = layer_index
        self.module_index = module_index
        self.num_aux = num_aux
        self.num_classes = num_classes
        self.image_size = image_size
        self.norm_cfg = dict(type='BN') if norm_cfg is None else norm_cfg
        spec = self.layer_specs[layer_index]
        #: Channels of the input features.
        self.in_channels = spec.out_channels
        #: Spatial size (H, W) of the input features.
        self.in_size = spec.feature_size(image_size)
        self.lambda_x = interpolate_loss_weight(lambda_x, module_index,
                                                num_aux)
        self.lambda_y = interpolate_loss_weight(lambda_y, module_index,
                                                num_aux)

    @abstractmethod
    def forward(self, feat: torch.Tensor) -> Optional[torch.Tensor]:
        """Class logits of the head, or None if it has no classifier.

        Args:
            feat (Tensor): Output of the local module, (N, C, H, W).

        Returns:
            Tensor or None: Logits of shape (N, num_classes).
        """

    def predict(self, feat: torch.Tensor) -> Optional[torch.Tensor]:
        """Class logits for the per-layer accuracy (no loss computed).

        Args:
            feat (Tensor): Output of the local module.

        Returns:
            Tensor or None: Logits, or None for heads without a classifier.
        """
        return self(feat)

    @abstractmethod
    def loss(self, feat: torch.Tensor, batch: AuxBatch
             ) -> Tuple[Dict[str, torch.Tensor], Optional[torch.Tensor]]:
        """Weighted local losses of the module.

        Args:
            feat (Tensor): Output of the local module, (N, C, H, W).
            batch (AuxBatch): Labels and images of the batch.

        Returns:
            tuple[dict[str, Tensor], Tensor | None]: The weighted losses,
            whose sum is the local loss, and the class logits (or None).
        """

    def extra_repr(self) -> str:
        return (f'layer_index={self.layer_index}, '
                f'module_index={self.module_index}/{self.num_aux}, '
                f'lambda_x={self.lambda_x:.4g}, lambda_y={self.lambda_y:.4g}')
