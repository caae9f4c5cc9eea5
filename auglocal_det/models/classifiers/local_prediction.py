"""The predictions of a local-learning classifier.

:class:`LocalPredictionMixin` turns the outputs of the local modules into
predictions: the network's class scores and the label predicted by every
auxiliary head (for the per-layer accuracy). ``LocalImageClassifier``
supplies the outputs (``extract_feat``), ``head``, ``aux_heads``,
``num_modules`` and ``head_placement``; a pipeline stage calls
:meth:`~LocalPredictionMixin.module_predictions` on its own modules.
"""
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from auglocal_det.structures import ClsDataSample

__all__ = ['LocalPredictionMixin']


class LocalPredictionMixin:
    """The prediction mode of ``LocalImageClassifier``."""

    @torch.no_grad()
    def predict(self,
                inputs: torch.Tensor,
                data_samples: Optional[List[ClsDataSample]] = None
                ) -> List[ClsDataSample]:
        """Predictions of the network and of every auxiliary head.

        Args:
            inputs (Tensor): Preprocessed images.
            data_samples (list[ClsDataSample], optional): Samples to fill;
                new ones are created if None.

        Returns:
            list[ClsDataSample]: Samples with ``pred_score`` (softmax),
            ``pred_label`` and, when the model has auxiliary heads,
            ``aux_pred_labels`` (-1 for a head without a classifier).
        """
        feats = self.extract_feat(inputs, all_modules=True)
        scores, aux_labels = self.module_predictions(feats)
        return self.fill_predictions(scores, aux_labels, data_samples)

    @torch.no_grad()
    def module_predictions(
        self,
        feats: Sequence[torch.Tensor],
        modules: Optional[range] = None
    ) -> Tuple[Optional[torch.Tensor], List[torch.Tensor]]:
        """Predictions made from the outputs of some local modules.

        Args:
            feats (Sequence[Tensor]): Output of each module in ``modules``.
            modules (range, optional): The consecutive modules that
                produced ``feats``. Defaults to None: all.

        Returns:
            tuple: The softmax scores of the network's classifier (None
            unless ``modules`` holds the last module) and the predicted
            labels of the auxiliary head of every module in ``modules``
            that has one (-1 for a head without a classifier).
        """
        if modules is None:
            modules = range(self.num_modules)
        aux_labels = []
        scores = None
        for index, feat in zip(modules, feats):
            if index == self.num_modules - 1:
                scores = F.softmax(self.head(feat), dim=1)
                continue
            with self.head_placement.for_prediction(index, feat.device):
                logits = self.aux_heads[index].predict(feat)
            if logits is None:
                aux_labels.append(
                    feat.new_full((feat.size(0), ), -1, dtype=torch.long))
            else:
                aux_labels.append(logits.argmax(dim=1))
        return scores, aux_labels

    @staticmethod
    def fill_predictions(
        scores: torch.Tensor,
        aux_labels: Sequence[torch.Tensor],
        data_samples: Optional[List[ClsDataSample]] = None
    ) -> List[ClsDataSample]:
        """Write the predictions of :meth:`module_predictions` of all
        modules into data samples (new ones if ``data_samples`` is None).
        """
        if data_samples is None:
            data_samples = [ClsDataSample() for _ in range(scores.size(0))]
        for i, sample in enumerate(data_samples):
            sample.set_pred_score(scores[i])
            if aux_labels:
                sample.set_aux_pred_labels(
                    torch.stack([labels[i] for labels in aux_labels]))
        return data_samples
