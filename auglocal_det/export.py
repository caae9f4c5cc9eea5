"""Export the pretrained backbone of a local-learning classifier.

The export directory holds (docs/architecture.md, "Exported backbone"):

- ``backbone.pth``: ``{'state_dict': ..., 'meta': ...}`` with exactly the
  keys of mmdet's ``ResNet`` / our ``LocalResNet`` (no classifier, no
  auxiliary heads), for ``init_cfg=dict(type='Pretrained',
  checkpoint=...)``;
- ``torchvision.pth``: a plain state dict with the keys of torchvision's
  ``resnet{depth}``, ``fc`` included (the classifier's ``head.fc``);
- ``backbone.json``: what was exported and from what (rule, auxiliary head
  and depth d, number of local modules K, epochs, validation top-1, SHA-256
  of the source checkpoint and of the written files).

This module is the conversion library:
:class:`~auglocal_det.engine.hooks.ExportBackboneHook` calls
:func:`export_backbone` at the end of training, and
``tools/model_converters/export_backbone.py`` calls
:func:`export_checkpoint` on a saved training checkpoint.
"""
import datetime
import os.path as osp
from collections import OrderedDict
from typing import Any, Dict, Optional, Tuple

import torch
from mmengine.config import Config

from auglocal_det.errors import InputError
from auglocal_det.fileio import (
    save_json_atomic,
    save_torch_atomic,
    sha256_file,
)
from auglocal_det.registry import MODELS

__all__ = [
    'NotAClassifierCheckpointError', 'check_finite_weights', 'describe_model',
    'split_classifier_state_dict', 'to_torchvision_state_dict',
    'export_backbone', 'export_checkpoint'
]

EXPORT_FORMAT = 'auglocal_det.backbone_export/v1'
BACKBONE_PREFIX = 'backbone.'
FC_PREFIX = 'head.fc.'
AUX_PREFIX = 'aux_heads.'


def torchvision_arch(depth: Optional[int]) -> Optional[str]:
    """Name of torchvision's ResNet constructor of a depth (the ImageNet
    depths of ``LocalResNet.arch_settings``), or None."""
    from auglocal_det.models.backbones import LocalResNet
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


def _json_safe(value: Any) -> Any:
    """Plain JSON types (also loadable by ``torch.load(weights_only=True)``).
    """
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, (str, bool, int, float)) or value is None:
        return value
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return value.item()
    if hasattr(value, 'item'):  # numpy scalars
        return value.item()
    return str(value)


def _is_local_classifier(model_type: Optional[str]) -> bool:
    """Whether ``model_type`` names ``LocalImageClassifier`` or a
    subclass (e.g. ``MLAANImageClassifier``); None counts as yes."""
    if model_type is None:
        return True
    from auglocal_det.models.classifiers import LocalImageClassifier
    cls = MODELS.get(model_type)
    return isinstance(cls, type) and issubclass(cls, LocalImageClassifier)


def describe_model(model_cfg: Optional[dict],
                   state_dict: Dict[str, Any]) -> Dict[str, Any]:
    """Training-rule facts for ``backbone.json`` from a config + weights.

    Args:
        model_cfg (dict, optional): ``cfg.model`` of the training run.
        state_dict (dict): The classifier's state dict.

    Returns:
        dict: ``backbone`` (type and depth), ``rule``, ``aux_head``,
        ``aux_depth``, ``num_local_modules`` (K: one more than the index of
        the last auxiliary head in the weights) and ``num_classes``.
    """
    model_cfg = dict(model_cfg or {})
    backbone_cfg = dict(model_cfg.get('backbone') or {})
    aux_cfg = dict(model_cfg.get('aux_head') or {})
    state_dict = _strip_wrapper_prefix(dict(state_dict))
    aux_ids = {
        k[len(AUX_PREFIX):].split('.', 1)[0]
        for k in state_dict if k.startswith(AUX_PREFIX)
    }
    fc = state_dict.get(FC_PREFIX + 'weight')
    rule = model_cfg.get('rule', 'local' if aux_ids else None)
    return dict(
        model=model_cfg.get('type'),
        backbone=dict(
            type=backbone_cfg.get('type'), depth=backbone_cfg.get('depth')),
        rule=rule,
        aux_head=aux_cfg.get('type'),
        aux_depth=aux_cfg.get('depth') if aux_cfg else None,
        aux_pyramid=aux_cfg.get('pyramid') if aux_cfg else None,
        aux_tau=aux_cfg.get('tau') if aux_cfg.get('pyramid') else None,
        split_points=_json_safe(model_cfg.get('split_points')),
        num_local_modules=max((int(i) for i in aux_ids), default=-1) + 2,
        num_classes=int(fc.shape[0]) if fc is not None else None)


def export_backbone(state_dict: Dict[str, torch.Tensor],
                    out_dir: str,
                    info: Optional[Dict[str, Any]] = None,
                    torchvision: bool = True,
                    source: str = 'the model') -> Dict[str, Any]:
    """Write ``backbone.pth``, ``torchvision.pth`` and ``backbone.json``.

    Every file is written atomically (temporary file + rename).

    Args:
        state_dict (dict): The classifier's state dict.
        out_dir (str): Output folder (created if needed).
        info (dict, optional): Extra facts for the sidecar and the
            ``meta`` of ``backbone.pth`` (rule, epochs, val top-1, source
            checkpoint, ...). Values are made JSON-safe.
        torchvision (bool): Also write ``torchvision.pth``. Defaults to
            True.
        source (str): Name of the source in error messages.

    Returns:
        dict: The sidecar content (also written as ``backbone.json``), with
        the written paths under ``files``.
    """
    backbone, fc = split_classifier_state_dict(state_dict, source)
    check_finite_weights(
        OrderedDict([(BACKBONE_PREFIX + k, v) for k, v in backbone.items()] +
                    [(FC_PREFIX + k, v) for k, v in (fc or {}).items()]),
        source, out_dir)
    info = _json_safe(dict(info or {}))
    depth = (info.get('backbone') or {}).get('depth')
    meta = dict(
        format=EXPORT_FORMAT,
        created=datetime.datetime.now().isoformat(timespec='seconds'),
        **info)
    # every conversion before the first write: a failure leaves no
    # partial export
    tv_sd, arch = to_torchvision_state_dict(backbone, fc, depth) \
        if torchvision else (None, None)
    files = {}
    backbone_path = osp.join(out_dir, 'backbone.pth')
    save_torch_atomic(dict(state_dict=backbone, meta=meta), backbone_path)
    files['backbone.pth'] = dict(
        path=backbone_path,
        sha256=sha256_file(backbone_path),
        keys=len(backbone),
        load_into='mmdet ResNet / LocalResNet (init_cfg Pretrained)')
    if torchvision:
        if tv_sd is None:
            meta['torchvision'] = f'not written: {arch}'
        else:
            tv_path = osp.join(out_dir, 'torchvision.pth')
            save_torch_atomic(tv_sd, tv_path)
            meta['torchvision'] = arch
            files['torchvision.pth'] = dict(
                path=tv_path,
                sha256=sha256_file(tv_path),
                keys=len(tv_sd),
                load_into=f'torchvision.models.{arch}(num_classes='
                f'{fc["weight"].shape[0]}), strict')
    meta['files'] = files
    save_json_atomic(meta, osp.join(out_dir, 'backbone.json'))
    return meta


def _config_from_meta(meta: Dict[str, Any]) -> Optional[Config]:
    """The training config stored by MMEngine in a checkpoint's meta."""
    text = meta.get('cfg') if isinstance(meta, dict) else None
    if not isinstance(text, str) or not text.strip():
        return None
    try:
        return Config.fromstring(text, '.py')
    except Exception:  # an unparsable config only costs the sidecar facts
        return None


def _last_val_top1(checkpoint: Dict[str, Any],
                   key: str = 'val/accuracy/top1') -> Optional[float]:
    hub = checkpoint.get('message_hub')
    if not isinstance(hub, dict):
        return None
    buffer = (hub.get('log_scalars') or {}).get(key)
    if buffer is None:
        return None
    try:
        return float(buffer.current())
    except Exception:
        return None


def export_checkpoint(checkpoint_path: str,
                      out_dir: Optional[str] = None,
                      torchvision: bool = True) -> Dict[str, Any]:
    """Export the backbone of a saved training checkpoint.

    Args:
        checkpoint_path (str): A checkpoint written by ``tools/train.py``
            with one of the ImageNet configs.
        out_dir (str, optional): Output folder. Defaults to ``export/``
            next to the checkpoint.
        torchvision (bool): Also write ``torchvision.pth``. Defaults to
            True.

    Returns:
        dict: The sidecar content (see :func:`export_backbone`).

    Raises:
        FileNotFoundError: If the checkpoint does not exist.
        NotAClassifierCheckpointError: If it is not a checkpoint of a
            ``LocalImageClassifier``.
    """
    from auglocal_det.engine.runner.checkpoint import load_local_checkpoint
    checkpoint = load_local_checkpoint(checkpoint_path, map_location='cpu')
    if not isinstance(checkpoint, dict):
        raise NotAClassifierCheckpointError(
            f'{checkpoint_path!r} holds a {type(checkpoint).__name__}, not '
            f'a checkpoint dict of a local-learning classifier')
    state_dict = checkpoint.get('state_dict', checkpoint)
    if not isinstance(state_dict, dict) or not all(
            isinstance(v, torch.Tensor) for v in state_dict.values()):
        raise NotAClassifierCheckpointError(
            f'{checkpoint_path!r} has no state dict of tensors (top-level '
            f'keys: {list(checkpoint)[:6]})')
    source = repr(checkpoint_path)
    split_classifier_state_dict(state_dict, source)  # fail early
    meta = checkpoint.get('meta') or {}
    cfg = _config_from_meta(meta)
    model_cfg = cfg.get('model') if cfg is not None else None
    if model_cfg is not None and not _is_local_classifier(
            model_cfg.get('type')):
        raise NotAClassifierCheckpointError(
            f'{source} was trained with model type '
            f'{model_cfg.get("type")!r}; only checkpoints of '
            f'LocalImageClassifier and its subclasses have a backbone to '
            f'export this way')
    info = describe_model(model_cfg, state_dict)
    top1 = _last_val_top1(checkpoint)
    info.update(
        epoch=meta.get('epoch'),
        iter=meta.get('iter'),
        max_epochs=(cfg.get('train_cfg') or {}).get('max_epochs')
        if cfg is not None else None,
        val_top1=top1,
        val_top1_note=('last validation logged before the checkpoint was '
                       'saved' if top1 is not None else 'not recorded'),
        source_checkpoint=osp.abspath(checkpoint_path),
        source_sha256=sha256_file(checkpoint_path),
        exported_by='tools/model_converters/export_backbone.py')
    if out_dir is None:
        out_dir = osp.join(osp.dirname(osp.abspath(checkpoint_path)),
                           'export')
    return export_backbone(
        state_dict, out_dir, info, torchvision=torchvision, source=source)
