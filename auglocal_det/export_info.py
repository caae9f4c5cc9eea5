"""The facts an export records about the model it came from.

``backbone.json`` says what was exported and from what: the training rule
and auxiliary head read from the training config (:func:`describe_model`),
and, for a saved checkpoint, the config MMEngine stores in its ``meta``
(read as data, never run) and the last validation top-1 of its message hub.
"""
from typing import Any, Dict, Optional

import torch

from auglocal_det.engine.runner.checkpoint import read_config_text
from auglocal_det.export_convert import (
    AUX_PREFIX,
    FC_PREFIX,
    _strip_wrapper_prefix,
)
from auglocal_det.models.classifiers import LocalImageClassifier
from auglocal_det.registry import MODELS

__all__ = ['describe_model']


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
    if not isinstance(model_type, str):
        return False
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


def _config_settings(meta: Dict[str, Any]) -> Dict[str, Any]:
    """Settings of the training config MMEngine stores in a checkpoint's
    meta, read as data (the text is never run)."""
    text = meta.get('cfg') if isinstance(meta, dict) else None
    if not isinstance(text, str) or not text.strip():
        return {}
    try:
        return read_config_text(text)
    except (SyntaxError, ValueError):  # only costs the sidecar facts
        return {}


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
