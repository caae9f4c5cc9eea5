"""Pipelined training of locally trained networks (update unlocking).

No gradient crosses local modules, so module j at iteration t trains on
the output of module j - 1 under its weights after iteration t - 1. That
holds in the sequential ``train_step`` and in a pipeline whose stages take
the batches in order. :class:`LocalPipelineParallel` runs such a pipeline
with ``torch.distributed``: the world is ``num_stages`` stages times R
data-parallel replicas (rank = replica * num_stages + stage). Within a
replica, stage s owns a contiguous range of local modules and sends the
detached output of its last one forward. Nothing travels backward but
small control messages. The updates are those of sequential training,
bit for bit on CPU with the same intra-op thread count. A rank holds the
weights, gradients and optimizer state of its own stage only (the other
stages' tensors are released to the ``meta`` device); rank 0 gathers the
whole network for checkpoints and the export.

What cannot be pipelined this way is refused with
:class:`~auglocal_det.errors.InputError`: end-to-end backpropagation,
MLAAN, a gradient-norm clip and the layer-wise optimizer wrapper.
"""
from auglocal_det.errors import PipelineStoppedError

from .partition import balance_stages, module_costs
from .wire import PeerLostError
from .wrapper import LocalPipelineParallel

__all__ = [
    'LocalPipelineParallel', 'PeerLostError', 'PipelineStoppedError',
    'balance_stages', 'module_costs'
]
