"""Construction of the auxiliary heads of a locally trained classifier."""
from __future__ import annotations

import copy
from typing import Optional, Sequence, Union

from mmengine.model import ModuleList

from auglocal_det.errors import InputError
from auglocal_det.registry import MODELS

from ..layers import LocalLayerSpec

__all__ = ['build_aux_heads']


def build_aux_heads(aux_head: Optional[Union[dict, Sequence[dict]]],
                    layer_specs: Sequence[LocalLayerSpec],
                    split_points: Optional[Sequence[int]] = None,
                    num_classes: int = 1000,
                    image_size: Union[int, Sequence[int]] = 224
                    ) -> ModuleList:
    """Build one auxiliary head per local module but the last.

    Args:
        aux_head (dict or Sequence[dict], optional): One config for all
            heads, or one per head; None builds no heads.
        layer_specs (Sequence[LocalLayerSpec]): The backbone's layer specs.
        split_points (Sequence[int], optional): Last local layer of each
            module (the last entry must be the network's last layer).
            Defaults to None: one module per local layer.
        num_classes (int): Number of classes. Defaults to 1000.
        image_size (int or Sequence[int]): Training crop size. Defaults to
            224.

    Returns:
        ModuleList: Head j receives the output of local layer
        ``split_points[j]``. MMEngine's ``ModuleList``, so that the
        classifier's ``init_weights`` reaches every head.
    """
    num_layers = len(layer_specs)
    if split_points is None:
        split_points = list(range(num_layers))
    split_points = list(split_points)
    if split_points[-1] != num_layers - 1 or any(
            a >= b for a, b in zip(split_points, split_points[1:])):
        raise InputError('split_points must increase and end at the last '
                         f'local layer ({num_layers - 1}): {split_points}')
    aux_layers = split_points[:-1]
    num_aux = len(aux_layers)
    heads = ModuleList()
    if aux_head is None:
        return heads
    if isinstance(aux_head, dict):
        cfgs = [aux_head] * num_aux
    else:
        cfgs = list(aux_head)
        if len(cfgs) != num_aux:
            raise InputError(f'{len(cfgs)} head configs for {num_aux} '
                             'auxiliary heads')
    for j, (layer_index, cfg) in enumerate(zip(aux_layers, cfgs)):
        cfg = copy.deepcopy(dict(cfg))
        cfg.update(
            layer_index=layer_index,
            layer_specs=list(layer_specs),
            module_index=j,
            num_aux=num_aux,
            num_classes=num_classes,
            image_size=image_size)
        heads.append(MODELS.build(cfg))
    return heads
