"""Top-k accuracy of a classifier's output."""
from typing import Any, List, Optional, Sequence, Tuple, Union

import torch
from mmengine.evaluator import BaseMetric

from auglocal_det.errors import InputError
from auglocal_det.registry import METRICS

__all__ = ['Accuracy', 'get_field']


def get_field(sample: Any, key: str) -> Any:
    """Read ``key`` from a data sample or its ``to_dict()`` form (or None).

    The evaluator hands metrics the samples converted to dicts; tests and
    other callers may pass the data samples themselves.
    """
    if isinstance(sample, dict):
        return sample.get(key)
    return getattr(sample, key, None)


def _label(value: Any, what: str) -> int:
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(f'{what} must hold one label, got shape '
                             f'{tuple(value.shape)}')
        return int(value.item())
    if isinstance(value, Sequence):
        if len(value) != 1:
            raise ValueError(f'{what} must hold one label, got {value!r}')
        return int(value[0])
    return int(value)


@METRICS.register_module()
class Accuracy(BaseMetric):
    """Top-k accuracy (in percent) of the network's prediction.

    Reads ``gt_label`` and ``pred_score`` (class scores) from each data
    sample; a sample with only ``pred_label`` counts for top-1 (and the
    metric then reports top-1 alone). Only the ``max(topk)`` best classes
    of each sample are kept between batches, so the memory is
    ``num_samples x max(topk)``.

    Results are named ``{prefix}/top{k}`` (``accuracy/top1``,
    ``accuracy/top5`` by default). When a data set has fewer than ``k``
    classes, top-k is computed over all classes (100%).

    Args:
        topk (int | Sequence[int]): The k's. Defaults to (1, 5).
        collect_device (str): 'cpu' or 'gpu', where the results of all
            ranks are gathered. Defaults to 'cpu'.
        prefix (str, optional): Name prefix. Defaults to 'accuracy'.
    """

    default_prefix: Optional[str] = 'accuracy'

    def __init__(self,
                 topk: Union[int, Sequence[int]] = (1, 5),
                 collect_device: str = 'cpu',
                 prefix: Optional[str] = None) -> None:
        super().__init__(collect_device=collect_device, prefix=prefix)
        topk = (topk, ) if isinstance(topk, int) else tuple(topk)
        if not topk or any(int(k) < 1 for k in topk):
            raise InputError(f'Accuracy: topk must be positive integers, '
                             f'got {topk}')
        self.topk = tuple(sorted({int(k) for k in topk}))

    def process(self, data_batch: Any, data_samples: Sequence[Any]) -> None:
        """Keep each sample's label and its best ``max(topk)`` classes."""
        for sample in data_samples:
            gt = get_field(sample, 'gt_label')
            if gt is None:
                raise KeyError('Accuracy: a data sample has no gt_label; '
                               'the validation data must be labelled')
            score = get_field(sample, 'pred_score')
            if score is not None:
                k = min(max(self.topk), score.numel())
                top = score.reshape(-1).topk(k).indices.cpu()
                from_scores = True
            else:
                pred = get_field(sample, 'pred_label')
                if pred is None:
                    raise KeyError('Accuracy: a data sample has neither '
                                   'pred_score nor pred_label')
                top = torch.tensor([_label(pred, 'pred_label')])
                from_scores = False
            self.results.append((_label(gt, 'gt_label'), top, from_scores))

    def compute_metrics(self, results: List[Tuple[int, torch.Tensor,
                                                  bool]]) -> dict:
        """Top-k accuracies in percent.

        Args:
            results (list): ``(label, best classes, from scores)`` of all
                ranks.

        Returns:
            dict: ``{'top1': ..., 'top5': ...}``; only ``top1`` when some
            samples carried a label and no scores.
        """
        if not results:
            return {}
        labels = torch.tensor([r[0] for r in results])
        width = min(len(r[1]) for r in results)
        best = torch.stack([r[1][:width] for r in results])
        hits = best == labels[:, None]
        scores_everywhere = all(r[2] for r in results)
        metrics = {}
        for k in self.topk:
            if k > 1 and not scores_everywhere:
                continue
            # fewer classes than k: every class is in the top k
            correct = hits[:, :min(k, width)].any(dim=1)
            metrics[f'top{k}'] = correct.double().mean().item() * 100.
        return metrics
