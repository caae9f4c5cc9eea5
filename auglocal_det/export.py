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

This module is the export library:
:class:`~auglocal_det.engine.hooks.ExportBackboneHook` calls
:func:`export_backbone` at the end of training, and
``tools/model_converters/export_backbone.py`` calls
:func:`export_checkpoint` on a saved training checkpoint. Both write what
three modules prepare:

- :mod:`auglocal_det.export_convert`: the conversion of the weights;
- :mod:`auglocal_det.export_info`: the facts ``backbone.json`` records;
- :mod:`auglocal_det.export_folder`: the folder written as a whole (a
  hidden folder renamed into place, so a reader sees the previous export
  or the new one, never a mix), the cleanup after an interrupted export,
  and the refusal to replace the export of another checkpoint unless the
  caller passes ``overwrite`` (``--overwrite``).
"""
import datetime
import os.path as osp
from collections import OrderedDict
from typing import Any, Dict, Optional

import torch

from auglocal_det.engine.runner.checkpoint import load_local_checkpoint
from auglocal_det.export_convert import (
    BACKBONE_PREFIX,
    FC_PREFIX,
    NotAClassifierCheckpointError,
    check_finite_weights,
    split_classifier_state_dict,
    to_torchvision_state_dict,
)
from auglocal_det.export_folder import (
    _write_whole_folder,
    check_export_target,
    clean_interrupted_exports,
    read_export,
)
from auglocal_det.export_info import (
    _config_settings,
    _is_local_classifier,
    _json_safe,
    _last_val_top1,
    describe_model,
)
from auglocal_det.fileio import (
    save_json_atomic,
    save_torch_atomic,
    sha256_file,
)

__all__ = [
    'NotAClassifierCheckpointError', 'check_finite_weights', 'describe_model',
    'split_classifier_state_dict', 'to_torchvision_state_dict',
    'export_backbone', 'export_checkpoint', 'read_export',
    'check_export_target', 'clean_interrupted_exports'
]

EXPORT_FORMAT = 'auglocal_det.backbone_export/v1'


def export_backbone(state_dict: Dict[str, torch.Tensor],
                    out_dir: str,
                    info: Optional[Dict[str, Any]] = None,
                    torchvision: bool = True,
                    source: str = 'the model',
                    overwrite: bool = False) -> Dict[str, Any]:
    """Write ``backbone.pth``, ``torchvision.pth`` and ``backbone.json``.

    The export is written as a whole (see the module docstring): a failure
    or a kill at any point leaves ``out_dir`` as it was.

    Args:
        state_dict (dict): The classifier's state dict.
        out_dir (str): Output folder (created if needed).
        info (dict, optional): Extra facts for the sidecar and the
            ``meta`` of ``backbone.pth`` (rule, epochs, val top-1, source
            checkpoint, ...). Values are made JSON-safe.
        torchvision (bool): Also write ``torchvision.pth``. Defaults to
            True.
        source (str): Name of the source in error messages.
        overwrite (bool): Replace an export of another checkpoint (see
            :func:`check_export_target`). Defaults to False.

    Returns:
        dict: The sidecar content (also written as ``backbone.json``), with
        the written paths under ``files``.

    Raises:
        InputError: If ``out_dir`` holds an export of another checkpoint
            (without ``overwrite``) or files that are not an export.
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
    clean_interrupted_exports(out_dir)
    check_export_target(out_dir, info.get('source_sha256'), overwrite)

    def write(folder: str) -> None:
        files = {}
        backbone_path = osp.join(folder, 'backbone.pth')
        save_torch_atomic(dict(state_dict=backbone, meta=meta), backbone_path)
        files['backbone.pth'] = dict(
            path=osp.join(out_dir, 'backbone.pth'),
            sha256=sha256_file(backbone_path),
            keys=len(backbone),
            load_into='mmdet ResNet / LocalResNet (init_cfg Pretrained)')
        if torchvision:
            if tv_sd is None:
                meta['torchvision'] = f'not written: {arch}'
            else:
                tv_path = osp.join(folder, 'torchvision.pth')
                save_torch_atomic(tv_sd, tv_path)
                meta['torchvision'] = arch
                files['torchvision.pth'] = dict(
                    path=osp.join(out_dir, 'torchvision.pth'),
                    sha256=sha256_file(tv_path),
                    keys=len(tv_sd),
                    load_into=f'torchvision.models.{arch}(num_classes='
                    f'{fc["weight"].shape[0]}), strict')
        meta['files'] = files
        save_json_atomic(meta, osp.join(folder, 'backbone.json'))

    _write_whole_folder(out_dir, write)
    return meta


def export_checkpoint(checkpoint_path: str,
                      out_dir: Optional[str] = None,
                      torchvision: bool = True,
                      overwrite: bool = False,
                      trust: bool = False) -> Dict[str, Any]:
    """Export the backbone of a saved training checkpoint.

    The checkpoint is read with the package's safe loader
    (:func:`~auglocal_det.engine.runner.checkpoint.load_local_checkpoint`)
    and the training config stored in its ``meta`` is read as data, never
    run.

    Args:
        checkpoint_path (str): A checkpoint written by ``tools/train.py``
            with one of the ImageNet configs.
        out_dir (str, optional): Output folder. Defaults to ``export/``
            next to the checkpoint.
        torchvision (bool): Also write ``torchvision.pth``. Defaults to
            True.
        overwrite (bool): Replace an export of another checkpoint in
            ``out_dir``. Defaults to False.
        trust (bool): Unpickle the checkpoint in full (the user vouched
            for it). Defaults to False.

    Returns:
        dict: The sidecar content (see :func:`export_backbone`).

    Raises:
        FileNotFoundError: If the checkpoint does not exist.
        UnsafeCheckpointError: If it needs types outside the allowlist and
            ``trust`` is False.
        NotAClassifierCheckpointError: If it is not a checkpoint of a
            ``LocalImageClassifier``.
        InputError: If ``out_dir`` holds the export of another checkpoint
            and ``overwrite`` is False.
    """
    checkpoint = load_local_checkpoint(
        checkpoint_path, map_location='cpu', trust=trust)
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
    meta = checkpoint.get('meta')
    meta = meta if isinstance(meta, dict) else {}
    settings = _config_settings(meta)
    model_cfg = settings.get('model')
    model_cfg = model_cfg if isinstance(model_cfg, dict) else None
    train_cfg = settings.get('train_cfg')
    train_cfg = train_cfg if isinstance(train_cfg, dict) else {}
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
        max_epochs=train_cfg.get('max_epochs'),
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
        state_dict,
        out_dir,
        info,
        torchvision=torchvision,
        source=source,
        overwrite=overwrite)
