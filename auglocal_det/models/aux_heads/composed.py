"""Several auxiliary heads trained together on one local module."""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
from mmengine.model import ModuleList

from auglocal_det.errors import InputError
from auglocal_det.registry import MODELS

from .base import AuxBatch, BaseAuxHead

__all__ = ['ComposedAuxHead']

#: The per-module arguments the classifier gives every head.
_MODULE_ARGS = ('layer_index', 'layer_specs', 'module_index', 'num_aux',
                'num_classes', 'image_size')


@MODELS.register_module()
class ComposedAuxHead(BaseAuxHead):
    """The sum of the local losses of several heads on the same features.

    Every part is built from its own config with the per-module arguments
    the classifier passes (``layer_index``, ``module_index``, ...), so each
    keeps its own loss weights and their interpolation. The local loss is
    the sum of all parts' losses; the class prediction (for the per-layer
    accuracy) is that of part ``logits_from``.

    The AugLocal paper's combination with InfoPro's reconstruction loss
    (Ma et al., ICLR 2024, Table 8) is::

        dict(type='ComposedAuxHead', heads=[
            dict(type='AugLocalAuxHead', depth=3, pyramid=True),
            dict(type='InfoProAuxHead', loss_mode='none',
                 lambda_x=(5.0, 0.2)),
        ])

    Args:
        heads (Sequence[dict]): Configs of the parts, without the
            per-module arguments.
        logits_from (int): Index of the part whose logits are the head's
            prediction. Defaults to 0.
        **kwargs: The per-module arguments of :class:`BaseAuxHead`
            (``layer_index``, ``layer_specs``, ``module_index``,
            ``num_aux``, ``num_classes``, ``image_size``); ``init_cfg``
            defaults to ``[]`` (every part initialises itself).
    """

    def __init__(self,
                 heads: Sequence[dict],
                 logits_from: int = 0,
                 init_cfg: Optional[Union[dict, List[dict]]] = None,
                 **kwargs) -> None:
        super().__init__(init_cfg=[] if init_cfg is None else init_cfg,
                         **kwargs)
        if not heads:
            raise InputError('ComposedAuxHead: heads must name at least one '
                             'head config (model.aux_head.heads)')
        if not 0 <= logits_from < len(heads):
            raise InputError(
                f'ComposedAuxHead: logits_from={logits_from} is not the index '
                f'of one of the {len(heads)} heads')
        module_args = dict(
            layer_index=self.layer_index,
            layer_specs=self.layer_specs,
            module_index=self.module_index,
            num_aux=self.num_aux,
            num_classes=self.num_classes,
            image_size=self.image_size)
        self.heads = ModuleList()
        for cfg in heads:
            cfg = dict(cfg)
            given = sorted(set(cfg) & set(_MODULE_ARGS))
            if given:
                raise InputError(
                    f'ComposedAuxHead: {given} of a part are set by the '
                    f'classifier; remove them from the config of '
                    f'{cfg.get("type")}')
            self.heads.append(MODELS.build(dict(cfg, **module_args)))
        self.logits_from = logits_from

    @property
    def reads_images(self) -> bool:  # type: ignore[override]
        """Whether one of the parts reads the [0, 1] images."""
        return any(head.reads_images for head in self.heads)

    def forward(self, feat: torch.Tensor) -> Optional[torch.Tensor]:
        return self.heads[self.logits_from](feat)

    def predict(self, feat: torch.Tensor) -> Optional[torch.Tensor]:
        return self.heads[self.logits_from].predict(feat)

    def loss(self, feat: torch.Tensor, batch: AuxBatch
             ) -> Tuple[Dict[str, torch.Tensor], Optional[torch.Tensor]]:
        losses: Dict[str, torch.Tensor] = {}
        logits = None
        for index, head in enumerate(self.heads):
            part, part_logits = head.loss(feat, batch)
            for name, value in part.items():
                key = name if name not in losses else f'{name}_{index}'
                losses[key] = value
            if index == self.logits_from:
                logits = part_logits
        return losses, logits

    def extra_repr(self) -> str:
        return f'module_index={self.module_index}/{self.num_aux}, ' \
               f'logits_from={self.logits_from}'
