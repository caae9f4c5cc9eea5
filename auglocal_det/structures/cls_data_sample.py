"""Data sample of one image in image classification."""
from numbers import Integral
from typing import Sequence, Union

import numpy as np
import torch
from mmengine.structures import BaseDataElement

LabelType = Union[torch.Tensor, np.ndarray, Sequence[int], int]


def format_label(value: LabelType) -> torch.Tensor:
    """Convert a label of any common type to a 1-D long tensor.

    Args:
        value (Tensor | ndarray | Sequence[int] | int): One label (an
            integer or a 0-d array) or several labels.

    Returns:
        Tensor: A 1-D ``torch.long`` tensor on the device of ``value`` (CPU
        for Python and NumPy values).

    Raises:
        TypeError: If ``value`` has a type that is not a label, or holds
            floating point values.
    """
    if isinstance(value, np.ndarray):
        value = torch.from_numpy(value)
    elif isinstance(value, Integral) and not isinstance(value, bool):
        value = torch.tensor([int(value)])
    elif isinstance(value, Sequence) and not isinstance(value, str):
        value = torch.tensor(list(value), dtype=torch.long)
    elif not isinstance(value, torch.Tensor):
        raise TypeError(f'cannot use a {type(value).__name__} as a label')
    if value.is_floating_point() or value.is_complex():
        raise TypeError(
            f'labels must be integers, got a tensor of {value.dtype}')
    return value.reshape(-1).long()


class ClsDataSample(BaseDataElement):
    """Annotations and predictions of one image for classification.

    Fields (all optional, set through properties or the ``set_*`` methods):

    - ``gt_label`` (Tensor): ground-truth label(s), 1-D ``long``; a
      single-label dataset stores a 1-element tensor.
    - ``pred_score`` (Tensor): class probabilities, shape
      ``(num_classes,)``.
    - ``pred_label`` (Tensor): predicted class, 1-element ``long`` tensor.
    - ``aux_pred_labels`` (Tensor): one predicted class per auxiliary head
      of a locally trained network, 1-D ``long`` of length ``num_aux``
      (used by the per-layer accuracy metric).

    Examples:
        >>> sample = ClsDataSample().set_gt_label(3)
        >>> sample.gt_label
        tensor([3])
        >>> sample.set_pred_score(torch.tensor([0.1, 0.9]))
        >>> sample.pred_label
        tensor([1])
    """

    def set_gt_label(self, value: LabelType) -> 'ClsDataSample':
        """Set ``gt_label`` from an int, a sequence, an array or a tensor.

        Returns:
            ClsDataSample: ``self``, so calls can be chained.
        """
        self.gt_label = value
        return self

    def set_pred_label(self, value: LabelType) -> 'ClsDataSample':
        """Set ``pred_label``.

        Returns:
            ClsDataSample: ``self``.
        """
        self.pred_label = value
        return self

    def set_pred_score(self,
                       value: torch.Tensor,
                       set_label: bool = True) -> 'ClsDataSample':
        """Set ``pred_score`` (and, by default, ``pred_label`` as its argmax).

        Args:
            value (Tensor): Class scores of shape ``(num_classes,)``.
            set_label (bool): Also set ``pred_label`` to the argmax.
                Defaults to True.

        Returns:
            ClsDataSample: ``self``.
        """
        self.pred_score = value
        if set_label:
            self.pred_label = value.argmax().reshape(1)
        return self

    def set_aux_pred_labels(self, value: LabelType) -> 'ClsDataSample':
        """Set ``aux_pred_labels``, one label per auxiliary head.

        Returns:
            ClsDataSample: ``self``.
        """
        self.aux_pred_labels = value
        return self

    @property
    def gt_label(self) -> torch.Tensor:
        return self._gt_label

    @gt_label.setter
    def gt_label(self, value: LabelType) -> None:
        self.set_field(
            format_label(value), '_gt_label', dtype=torch.Tensor)

    @gt_label.deleter
    def gt_label(self) -> None:
        del self._gt_label

    @property
    def pred_label(self) -> torch.Tensor:
        return self._pred_label

    @pred_label.setter
    def pred_label(self, value: LabelType) -> None:
        self.set_field(
            format_label(value), '_pred_label', dtype=torch.Tensor)

    @pred_label.deleter
    def pred_label(self) -> None:
        del self._pred_label

    @property
    def pred_score(self) -> torch.Tensor:
        return self._pred_score

    @pred_score.setter
    def pred_score(self, value: torch.Tensor) -> None:
        if not isinstance(value, torch.Tensor) or value.dim() != 1:
            raise TypeError('pred_score must be a 1-D tensor of class '
                            f'scores, got {value!r}')
        self.set_field(value, '_pred_score', dtype=torch.Tensor)

    @pred_score.deleter
    def pred_score(self) -> None:
        del self._pred_score

    @property
    def aux_pred_labels(self) -> torch.Tensor:
        return self._aux_pred_labels

    @aux_pred_labels.setter
    def aux_pred_labels(self, value: LabelType) -> None:
        self.set_field(
            format_label(value), '_aux_pred_labels', dtype=torch.Tensor)

    @aux_pred_labels.deleter
    def aux_pred_labels(self) -> None:
        del self._aux_pred_labels
