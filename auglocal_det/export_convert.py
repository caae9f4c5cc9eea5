"""Conversion of a classifier's weights into an exported backbone.

A ``LocalImageClassifier`` state dict is split into the backbone's tensors
(the keys of mmdet's ``ResNet`` / our ``LocalResNet``) and the weights of
the network's ``head.fc``; the two also make the state dict of torchvision's
``resnet{depth}``. Weights holding NaN or Inf are refused before anything
is written.
"""
from collections import OrderedDict
from typing import Any, Dict, Optional, Tuple

import torch

from auglocal_det.errors import InputError
from auglocal_det.models.backbones import LocalResNet

__all__ = [
    'NotAClassifierCheckpointError', 'check_finite_weights',
    'split_classifier_state_dict', 'to_torchvision_state_dict',
    'torchvision_arch'
]

BACKBONE_PREFIX = 'backbone.'
FC_PREFIX = 'head.fc.'
AUX_PREFIX = 'aux_heads.'


def torchvision_arch(depth: Optional[int]) -> Optional[str]:
    """Name of torchvision's ResNet constructor of a depth (the ImageNet
    depths of ``LocalResNet.arch_settings``), or None."""
    return f'resnet{depth}' if depth in LocalResNet.arch_settings else None


class NotAClassifierCheckpointError(ValueError):
    """The file is not a checkpoint of a ``LocalImageClassifier``."""


def check_finite_weights(state_dict: Dict[str, torch.Tensor], source: str,
                         out_dir: str) -> None:
    """Refuse to export weights holding NaN or Inf.

    Args:
        state_dict (dict): The tensors about to be written.
        source (str): Name of the source in the message.
        out_dir (str): The export folder, named in the message.

    Raises:
        InputError: Naming the first tensor with non-finite values.
    """
    bad = [(key, value) for key, value in state_dict.items()
           if value.is_floating_point() and not bool(value.isfinite().all())]
    if not bad:
        return
    key, value = bad[0]
    count = int((~value.isfinite()).sum())
    more = f' (and {len(bad) - 1} more tensors)' if len(bad) > 1 else ''
    raise InputError(
        f'{source}: tensor {key!r} holds {count} non-finite values (NaN or '
        f'Inf) of {value.numel()}{more}; refusing to export, nothing was '
        f'written to {out_dir!r}. The checkpoint is corrupt or the training '
        'diverged: export an earlier checkpoint')


def _strip_wrapper_prefix(state_dict: Dict[str, Any]) -> Dict[str, Any]:
    """Drop DDP's ``module.`` prefix when every key carries it."""
    if state_dict and all(k.startswith('module.') for k in state_dict):
        return OrderedDict((k[len('module.'):], v)
                           for k, v in state_dict.items())
    return state_dict


def split_classifier_state_dict(
    state_dict: Dict[str, torch.Tensor],
    source: str = 'the state dict'
) -> Tuple[Dict[str, torch.Tensor], Dict[str, torch.Tensor]]:
    """Split a classifier's state dict into backbone and ``fc`` weights.

    Args:
        state_dict (dict): State dict of a ``LocalImageClassifier`` (a
            DDP ``module.`` prefix is removed).
        source (str): Name of the source in error messages.

    Returns:
        tuple[OrderedDict, OrderedDict]: The backbone's tensors without the
        ``backbone.`` prefix, and ``{'weight', 'bias'}`` of ``head.fc``.

    Raises:
        NotAClassifierCheckpointError: If the keys are not those of a
            classifier with a ``backbone`` and a ``head.fc``.
    """
    state_dict = _strip_wrapper_prefix(dict(state_dict))
    backbone = OrderedDict((k[len(BACKBONE_PREFIX):], v.detach().cpu())
                           for k, v in state_dict.items()
                           if k.startswith(BACKBONE_PREFIX))
    fc = OrderedDict((k[len(FC_PREFIX):], v.detach().cpu())
                     for k, v in state_dict.items()
                     if k.startswith(FC_PREFIX))
    other = [
        k for k in state_dict
        if not k.startswith((BACKBONE_PREFIX, FC_PREFIX, AUX_PREFIX))
    ]
    problems = []
    if 'conv1.weight' not in backbone:
        problems.append("no 'backbone.conv1.weight'")
    if set(fc) != {'weight', 'bias'}:
        problems.append("no 'head.fc.weight' and 'head.fc.bias'")
    if problems and other:
        shown = ', '.join(sorted(other)[:4])
        problems.append(f'{len(other)} keys of other modules ({shown}, ...)')
    if problems:
        sample = ', '.join(list(state_dict)[:4]) or 'none'
        raise NotAClassifierCheckpointError(
            f'{source} is not a checkpoint of a local-learning classifier '
            f'(LocalImageClassifier with backbone, head.fc and aux_heads): '
            f'{"; ".join(problems)}. First keys: {sample}. Export works on '
            f'checkpoints written by tools/train.py with an ImageNet config '
            f'(configs/*_imagenet.py), e.g. work_dirs/<config>/epoch_N.pth')
    return backbone, fc


def to_torchvision_state_dict(
    backbone: Dict[str, torch.Tensor], fc: Dict[str, torch.Tensor],
    depth: Optional[int]
) -> Tuple[Optional[Dict[str, torch.Tensor]], str]:
    """Backbone + fc weights under torchvision's ``resnet{depth}`` keys.

    Our backbone keeps torchvision's parameter names, so this checks that
    the keys and shapes match a freshly built torchvision model (on the
    ``meta`` device, no memory) and adds ``fc.weight`` / ``fc.bias``.

    Args:
        backbone (dict): Backbone tensors (no prefix).
        fc (dict): ``weight`` and ``bias`` of the classifier.
        depth (int, optional): ResNet depth.

    Returns:
        tuple: The state dict (None if the backbone is not a torchvision
        ResNet, e.g. a CIFAR ResNet) and the torchvision architecture name
        or the reason it was skipped.
    """
    arch = torchvision_arch(depth)
    if arch is None:
        return None, f'no torchvision ResNet of depth {depth}'
    import torchvision
    num_classes = fc['weight'].shape[0]
    with torch.device('meta'):
        ref = getattr(torchvision.models, arch)(num_classes=num_classes)
    ref_sd = ref.state_dict()
    out = OrderedDict(backbone)
    out['fc.weight'] = fc['weight']
    out['fc.bias'] = fc['bias']
    missing = [k for k in ref_sd if k not in out]
    unexpected = [k for k in out if k not in ref_sd]
    shapes = [
        k for k in ref_sd
        if k in out and tuple(out[k].shape) != tuple(ref_sd[k].shape)
    ]
    if missing or unexpected or shapes:
        return None, (f'keys differ from torchvision {arch}: missing '
                      f'{missing[:3]}, unexpected {unexpected[:3]}, shape '
                      f'mismatch {shapes[:3]}')
    return OrderedDict((k, out[k]) for k in ref_sd), arch
