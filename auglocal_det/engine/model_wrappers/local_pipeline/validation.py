"""Validation routing: each rank's batch through its replica's stages.

Every rank has a batch of its own (the validation sampler shards over all
ranks). The batches of a replica's ranks go through the stages one after
another. Each goes to the first stage, through every stage (each adds
its auxiliary heads' predicted labels) and back, as predictions, to the
rank it came from.
"""
from typing import Any, List, Union

import torch
import torch.distributed as dist

from .wire import TAG_VAL

__all__ = ['predict_through_stages']


def predict_through_stages(pipe: Any,
                           data: Union[dict, tuple, list]) -> list:
    """Predictions of the whole network for this rank's batch.

    Call it on every rank of the replica at once.

    Args:
        pipe (LocalPipelineParallel): This rank's pipeline.
        data (dict | tuple | list): A batch from the data loader.

    Returns:
        list[ClsDataSample]: The samples with the network's and every
        auxiliary head's predictions, as the classifier's ``predict``.
    """
    messages = pipe.messenger
    messages.flush()
    model = pipe.module
    device = pipe.device
    data = model.data_preprocessor(data, False)
    own_inputs = data['inputs']
    first = pipe.first_rank
    last = first + pipe.num_stages - 1
    rank = dist.get_rank()
    result = None
    for src in range(pipe.num_stages):
        src_rank = first + src
        if pipe.stage == src and src != 0:
            messages.send([own_inputs], first, TAG_VAL)
        if pipe.stage == 0:
            feat = own_inputs if src == 0 else messages.recv(
                src_rank, TAG_VAL, device)[0]
            labels: List[torch.Tensor] = []
        else:
            received = messages.recv(pipe.prev_rank, TAG_VAL, device)
            feat, labels = received[0], received[1:]
        feats = list(model.forward_modules(feat, pipe.modules))
        scores, aux_labels = model.module_predictions(feats, pipe.modules)
        labels = list(labels) + aux_labels
        if pipe.next_rank is not None:
            messages.send([feats[-1]] + labels, pipe.next_rank, TAG_VAL)
        elif src_rank == rank:
            result = (scores, labels)
        else:
            messages.send([scores] + labels, src_rank, TAG_VAL)
        if pipe.stage == src and rank != last:
            received = messages.recv(last, TAG_VAL, device)
            result = (received[0], received[1:])
        messages.flush()
    scores, aux_labels = result
    return model.fill_predictions(scores, aux_labels,
                                  data.get('data_samples'))
