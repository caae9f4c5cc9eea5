"""Check the training data against the model before the first iteration.

Two mistakes train silently, or crash late, without this check:

- **Class count.** A classifier whose ``num_classes`` is smaller than the
  data set's number of classes fails with an ``IndexError`` in the loss,
  one larger trains silently with output units that never see a label;
  the same holds for the heads of a detector (``bbox_head``,
  ``mask_head``), where evaluation then reports an empty result.
- **A last batch of one image.** With ``drop_last=False`` and a data set
  size that leaves one image for the last batch of a process, a
  training BatchNorm layer on a 1x1 feature map stops the epoch's last
  iteration
  with PyTorch's "Expected more than 1 value per channel" (and the
  epoch's checkpoint is never written); where it does not crash, the
  batch statistics of one image are noise. Only a plain ``BatchSampler``
  is checked (a grouping one, such as mmdet's aspect-ratio sampler, forms
  other last batches), and only BatchNorm layers that train (not those an
  mmdet ``norm_eval=True`` keeps in eval mode).

:class:`TrainDataCheckHook` compares, in ``before_train`` (the data set
and the model are built, nothing is trained), the number of classes of
the training data set with the ``num_classes`` of the model and of every
classification head, and the per-process size of the last batch with the
batch size, and raises :class:`~auglocal_det.errors.InputError` naming the
config keys to change.
"""
from typing import List, Tuple

from mmengine.dist import get_dist_info
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from torch.nn.modules.batchnorm import _BatchNorm
from torch.utils.data import BatchSampler

from auglocal_det.errors import InputError
from auglocal_det.registry import HOOKS

__all__ = ['TrainDataCheckHook', 'head_class_counts']


def head_class_counts(model) -> List[Tuple[str, int]]:
    """The ``num_classes`` of a model and of its classification heads.

    The model's own ``num_classes`` and that of every sub-module named
    ``*_head`` (or an element of a list of such heads, as in a cascade),
    except class-agnostic proposal heads (``rpn_head``) and the auxiliary
    heads of local learning (built from the model's ``num_classes``).

    Args:
        model (nn.Module): The model (unwrapped).

    Returns:
        list[tuple[str, int]]: ``(config key, num_classes)`` pairs, such as
        ``('model.roi_head.bbox_head.num_classes', 80)``.
    """
    found = []
    own = getattr(model, 'num_classes', None)
    if isinstance(own, int) and not isinstance(own, bool):
        found.append(('model.num_classes', own))
    for name, module in model.named_modules():
        parts = name.split('.') if name else []
        if not parts or parts[0] == 'aux_heads' or any(
                'rpn' in p for p in parts):
            continue
        last = parts[-2] if parts[-1].isdigit() and len(parts) > 1 \
            else parts[-1]
        if not last.endswith('_head'):
            continue
        count = getattr(module, 'num_classes', None)
        if isinstance(count, int) and not isinstance(count, bool):
            found.append((f'model.{name}.num_classes', count))
    return found


def _has_training_batch_norm(model) -> bool:
    """Whether a BatchNorm layer computes batch statistics in training
    (``model.train()`` decides: mmdet's ``norm_eval`` keeps them in eval
    mode); the model's mode is restored."""
    was_training = model.training
    model.train()
    try:
        return any(
            isinstance(m, _BatchNorm) and m.training for m in model.modules())
    finally:
        model.train(was_training)


def _classes_key(cfg) -> str:
    """The config key the training data set's classes come from."""
    dataset = ((cfg or {}).get('train_dataloader') or {}).get('dataset') or {}
    if dataset.get('classes') is not None:
        return 'train_dataloader.dataset.classes'
    if (dataset.get('metainfo') or {}).get('classes') is not None:
        return 'train_dataloader.dataset.metainfo.classes'
    return 'the classes of train_dataloader.dataset'


@HOOKS.register_module()
class TrainDataCheckHook(Hook):
    """Stop before training if the data does not fit the model.

    See the module docstring.

    Args:
        check_classes (bool): Compare the data set's number of classes with
            the ``num_classes`` of the model and its heads. Defaults to
            True.
        check_last_batch (bool): Refuse a last batch of one image per
            process (with BatchNorm layers and ``drop_last=False``).
            Defaults to True.

    Examples:
        >>> default_hooks = dict(
        ...     train_data_check=dict(type='TrainDataCheckHook'))
    """

    priority = 'VERY_HIGH'

    def __init__(self,
                 check_classes: bool = True,
                 check_last_batch: bool = True) -> None:
        self.check_classes = check_classes
        self.check_last_batch = check_last_batch

    def before_train(self, runner) -> None:
        """Run the checks (every process: they read local state only)."""
        model = runner.model.module if is_model_wrapper(
            runner.model) else runner.model
        loader = runner.train_dataloader
        if self.check_classes:
            self._check_classes(model, loader.dataset, runner.cfg)
        if self.check_last_batch:
            self._check_last_batch(model, loader)

    @staticmethod
    def _check_classes(model, dataset, cfg) -> None:
        metainfo = getattr(dataset, 'metainfo', None) or {}
        classes = metainfo.get('classes')
        if not classes:
            return
        key = _classes_key(cfg)
        for name, count in head_class_counts(model):
            if count == len(classes):
                continue
            shown = ', '.join(map(str, list(classes)[:8])) + (
                ', ...' if len(classes) > 8 else '')
            if count < len(classes):
                effect = (f'labels from {count} on would make the loss fail '
                          'with an IndexError')
            else:
                effect = (f'{count - len(classes)} of its outputs would '
                          'never see a label')
            raise InputError(
                f'{name}={count}, but the training data set has '
                f'{len(classes)} classes ({key}: {shown}); {effect}. Set '
                f'{name}={len(classes)} (and the num_classes of every other '
                f'head), or change {key}')

    @staticmethod
    def _check_last_batch(model, loader) -> None:
        batch_sampler = getattr(loader, 'batch_sampler', None)
        if type(batch_sampler) is not BatchSampler:
            return  # grouping samplers (mmdet's aspect ratio) differ
        batch_size = batch_sampler.batch_size
        sampler = getattr(loader, 'sampler', None)
        if not batch_size or batch_sampler.drop_last or sampler is None:
            return
        try:
            per_process = len(sampler)
        except TypeError:
            return  # an infinite sampler has no last batch
        if batch_size == 1 or per_process % batch_size != 1:
            return
        if not _has_training_batch_norm(model):
            return
        world = get_dist_info()[1]
        where = (f'{per_process} images per process ({world} processes)'
                 if world > 1 else f'{per_process} images')
        raise InputError(
            f'the last training batch of every epoch would hold one image: '
            f'{where} with train_dataloader.batch_size={batch_size} leaves '
            f'{per_process % batch_size}, and the BatchNorm layers of the '
            'model cannot train on one image (PyTorch stops with "Expected '
            'more than 1 value per channel"). Set '
            'train_dataloader.drop_last=True (the image is skipped that '
            'epoch) or choose another train_dataloader.batch_size')
