"""Standard local-learning settings and the construction of the heads."""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Union

from mmengine.model import ModuleList

from auglocal_det.registry import MODELS

from ..layers import LocalLayerSpec

__all__ = [
    'LocalLearningSetting', 'build_aux_heads', 'local_learning_setting',
    'num_local_layers'
]

#: Backbone config of every supported architecture name.
BACKBONES: Dict[str, dict] = {
    **{
        f'resnet{depth}': dict(type='LocalResNet', depth=depth)
        for depth in (18, 34, 50, 101, 152)
    },
    **{
        f'resnet{depth}': dict(type='LocalCifarResNet', depth=depth)
        for depth in (20, 32, 44, 56, 110)
    },
}

#: Blocks per stage, to count local layers without building the network.
_STAGE_BLOCKS: Dict[str, Sequence[int]] = {
    'resnet18': (2, 2, 2, 2),
    'resnet34': (3, 4, 6, 3),
    'resnet50': (3, 4, 6, 3),
    'resnet101': (3, 4, 23, 3),
    'resnet152': (3, 8, 36, 3),
    'resnet20': (3, 3, 3),
    'resnet32': (5, 5, 5),
    'resnet44': (7, 7, 7),
    'resnet56': (9, 9, 9),
    'resnet110': (18, 18, 18),
}

#: InfoPro's (lambda_x, lambda_y) for one-layer modules, as
#: ((first, last), (first, last)). ResNet-32 K=16 and ResNet-110 K=55 are
#: the published settings; the ImageNet nets and the other CIFAR depths use
#: the ResNet-110 values (our choice, there is no published setting).
_INFOPRO_LAMBDAS = {
    'resnet32': ((5.0, 0.2), (0.05, 0.5)),
    'default': ((5.0, 0.5), (0.0, 1.0)),
}

#: Auxiliary head config of each rule (None: no auxiliary heads).
_RULE_HEADS: Dict[str, Optional[dict]] = {
    'bp': None,
    'auglocal': dict(type='AugLocalAuxHead'),
    'dgl': dict(type='DGLAuxHead'),
    'infopro': dict(type='InfoProAuxHead'),
    'predsim': dict(type='PredSimAuxHead'),
}


@dataclass(frozen=True)
class LocalLearningSetting:
    """A standard configuration of one rule on one network.

    Args:
        backbone (dict): Backbone config.
        aux_head (dict, optional): Auxiliary head config, without the
            per-module arguments the classifier adds; None for
            back-propagation.
        num_layers (int): Number of local layers K (stem + blocks).
        split_points (list[int], optional): Index of the last local layer
            of every module, the last one being ``num_layers - 1``; None
            means one module per local layer.
    """

    backbone: dict
    aux_head: Optional[dict]
    num_layers: int
    split_points: Optional[List[int]] = None


def num_local_layers(arch: str) -> int:
    """Number of local layers of a named network (stem + blocks).

    Args:
        arch (str): ``'resnet34'``, ``'resnet110'``, ...

    Returns:
        int: K, e.g. 17 for ResNet-34, 55 for ResNet-110.
    """
    if arch not in _STAGE_BLOCKS:
        raise KeyError(f'unknown arch {arch!r}; expected one of '
                       f'{sorted(_STAGE_BLOCKS)}')
    return 1 + sum(_STAGE_BLOCKS[arch])


def local_learning_setting(rule: str,
                           arch: str = 'resnet34',
                           aux_depth: int = 4,
                           pyramid: bool = False,
                           tau: float = 0.5,
                           cifar_reproduction: bool = False
                           ) -> LocalLearningSetting:
    """Backbone and auxiliary head configs of a standard setting.

    Every local layer is its own module (K = 17 for ResNet-34, 34 for
    ResNet-101, 16 for ResNet-32, 55 for ResNet-110), with one auxiliary
    head per layer but the last.

    ``cifar_reproduction=True`` (AugLocal only) reproduces the papers'
    CIFAR script: only the first ``K - aux_depth - 1`` layers get an
    auxiliary head, the last ``aux_depth + 1`` layers train end to end
    with the output layer, and heads of depth <= 1 get a BatchNorm1d before
    their classifier. The pyramid then spans the reduced set of heads.

    Args:
        rule (str): ``'bp'``, ``'auglocal'``, ``'dgl'``, ``'infopro'`` or
            ``'predsim'``.
        arch (str): Network name, e.g. ``'resnet34'``, ``'resnet32'``.
            Defaults to ``'resnet34'``.
        aux_depth (int): AugLocal depth d (1-9 in the papers). Defaults to
            4.
        pyramid (bool): AugLocal pyramidal depth. Defaults to False.
        tau (float): Pyramid coefficient. Defaults to 0.5.
        cifar_reproduction (bool): See above. Defaults to False.

    Returns:
        LocalLearningSetting: The configs, K and the split points.
    """
    if rule not in _RULE_HEADS:
        raise KeyError(f'unknown rule {rule!r}; expected one of '
                       f'{sorted(_RULE_HEADS)}')
    num_layers = num_local_layers(arch)
    backbone = copy.deepcopy(BACKBONES[arch])
    aux_head = copy.deepcopy(_RULE_HEADS[rule])
    split_points = None
    if cifar_reproduction and rule != 'auglocal':
        raise ValueError('cifar_reproduction applies to AugLocal only')
    if rule == 'auglocal':
        if aux_depth < 1:
            raise ValueError(f'aux_depth must be >= 1, got {aux_depth}')
        aux_head.update(depth=aux_depth, pyramid=pyramid, tau=tau)
        if cifar_reproduction:
            num_aux = num_layers - aux_depth - 1
            if num_aux < 1:
                raise ValueError(f'aux_depth {aux_depth} leaves no '
                                 f'auxiliary head on {arch}')
            aux_head.update(bn1d_if_shallow=True)
            split_points = list(range(num_aux)) + [num_layers - 1]
    elif rule == 'infopro':
        lambda_x, lambda_y = _INFOPRO_LAMBDAS.get(arch,
                                                  _INFOPRO_LAMBDAS['default'])
        aux_head.update(lambda_x=lambda_x, lambda_y=lambda_y)
    return LocalLearningSetting(
        backbone=backbone,
        aux_head=aux_head,
        num_layers=num_layers,
        split_points=split_points)


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
        raise ValueError('split_points must increase and end at the last '
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
            raise ValueError(f'{len(cfgs)} head configs for {num_aux} '
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
