"""Top-1 accuracy of every auxiliary head of a locally trained network."""
import re
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from mmengine.evaluator import BaseMetric

from auglocal_det.registry import METRICS

from .accuracy import get_field

__all__ = ['LayerwiseAccuracy', 'parse_layerwise_metrics']

_KEY = re.compile(r'^(?:.*/)?l(\d+)$')


def parse_layerwise_metrics(metrics: Dict[str, float],
                            prefix: str = 'aux_top1'
                            ) -> List[Tuple[int, float]]:
    """Pick ``{prefix}/lNN`` entries out of a metrics dict, sorted by NN.

    Args:
        metrics (dict): Validation results, e.g. the ``metrics`` of an
            ``after_val_epoch`` hook.
        prefix (str): The metric's prefix. Defaults to 'aux_top1'.

    Returns:
        list[tuple[int, float]]: ``(index, top-1 %)`` per auxiliary head.
    """
    found = []
    for key, value in metrics.items():
        if not key.startswith(prefix + '/'):
            continue
        match = _KEY.match(key[len(prefix) + 1:])
        if match:
            found.append((int(match.group(1)), float(value)))
    return sorted(found)


@METRICS.register_module()
class LayerwiseAccuracy(BaseMetric):
    """Top-1 accuracy (percent) of each auxiliary head on the val set.

    A locally trained classifier's ``predict`` stores one predicted label
    per auxiliary head in ``aux_pred_labels``; head ``j`` sits on local
    module ``j`` (with the default one-layer modules, on local layer
    ``j``: the stem is ``l00``, ``layer1.0`` is ``l01``, ...). The results
    are named ``{prefix}/lNN`` (``aux_top1/l00``, ``aux_top1/l01``, ...);
    the network's own output is the ``Accuracy`` metric.
    :class:`~auglocal_det.engine.hooks.LayerwiseAccuracyPlotHook` plots
    both against the layer index.

    A model without auxiliary heads (``rule='bp'``) gives no results, and
    a head without a classifier (its predictions are -1) is left out.

    Args:
        collect_device (str): 'cpu' or 'gpu'. Defaults to 'cpu'.
        prefix (str, optional): Name prefix. Defaults to 'aux_top1'.
    """

    default_prefix: Optional[str] = 'aux_top1'

    def process(self, data_batch: Any, data_samples: Sequence[Any]) -> None:
        """Keep each sample's label and its auxiliary predictions."""
        for sample in data_samples:
            aux = get_field(sample, 'aux_pred_labels')
            gt = get_field(sample, 'gt_label')
            if aux is None or gt is None:
                continue
            aux = torch.as_tensor(aux).reshape(-1).cpu()
            self.results.append((int(torch.as_tensor(gt).reshape(-1)[0]),
                                 aux))

    def compute_metrics(self, results: List[Tuple[int,
                                                  torch.Tensor]]) -> dict:
        """Per-head top-1 in percent, ``{'l00': ..., 'l01': ...}``."""
        if not results:
            return {}
        lengths = {len(r[1]) for r in results}
        if len(lengths) != 1:
            raise ValueError(f'LayerwiseAccuracy: aux_pred_labels have '
                             f'different lengths {sorted(lengths)}')
        labels = torch.tensor([r[0] for r in results])
        preds = torch.stack([r[1] for r in results])
        acc = (preds == labels[:, None]).double().mean(0) * 100.
        # a head without a classifier predicts -1 everywhere: no accuracy
        has_classifier = (preds >= 0).any(0)
        width = max(2, len(str(len(acc) - 1)))
        return {
            f'l{j:0{width}d}': v.item()
            for j, v in enumerate(acc) if has_classifier[j]
        }
