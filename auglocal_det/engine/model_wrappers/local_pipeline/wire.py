"""The pipeline's wire protocol: point-to-point tensor messages.

A message is a small int64 header (the dtype and shape of every tensor)
on a gloo group, which works under NCCL too, then the tensors themselves
on the default group. Gloo matches point-to-point messages by peer and
tag, so every kind of message has a tag of its own. Every wait on a peer
goes through :func:`wait`: a peer that is gone raises
:class:`PeerLostError`.
"""
from typing import Any, List, Sequence, Tuple

import torch
import torch.distributed as dist

__all__ = [
    'PeerLostError', 'Messenger', 'TAG_TRAIN', 'TAG_VAL', 'TAG_CTRL',
    'TAG_LOG', 'CTRL_BYTES', 'wait'
]

TAG_TRAIN = 11
TAG_VAL = 12
TAG_CTRL = 13
TAG_LOG = 14
#: Bytes of a failure report (see ``failures.py``).
CTRL_BYTES = 4096
_HEADER = 40  # int64 slots: status, count, then per tensor dtype, ndim, dims
_MAX_DIMS = 6
_DTYPES = [
    torch.float32, torch.float16, torch.bfloat16, torch.float64,
    torch.int64, torch.int32, torch.uint8, torch.bool
]


class PeerLostError(RuntimeError):
    """A point-to-point wait on another rank failed: that rank is gone."""


def wait(work: Any) -> None:
    """Wait for a point-to-point operation.

    If the peer failed, it reported why before it exited, and the wait
    fails (gloo's "connection closed").

    Raises:
        PeerLostError: The peer is gone.
    """
    try:
        work.wait()
    except RuntimeError as exc:
        raise PeerLostError(str(exc)) from exc


def header(tensors: Sequence[torch.Tensor], status: int = 0) -> torch.Tensor:
    """The int64 header describing ``tensors`` (dtype and shape of each)."""
    out = torch.zeros(_HEADER, dtype=torch.long)
    out[0], out[1] = status, len(tensors)
    pos = 2
    for tensor in tensors:
        if tensor.dim() > _MAX_DIMS or pos + 2 + tensor.dim() > _HEADER:
            raise RuntimeError('pipeline message too large for its header')
        out[pos] = _DTYPES.index(tensor.dtype)
        out[pos + 1] = tensor.dim()
        out[pos + 2:pos + 2 + tensor.dim()] = torch.tensor(tensor.shape)
        pos += 2 + tensor.dim()
    return out


def empty_like_header(values: torch.Tensor,
                      device: torch.device) -> List[torch.Tensor]:
    """Allocate the tensors a header describes."""
    values = values.tolist()
    out, pos = [], 2
    for _ in range(values[1]):
        dtype, ndim = _DTYPES[values[pos]], values[pos + 1]
        shape = values[pos + 2:pos + 2 + ndim]
        out.append(torch.empty(shape, dtype=dtype, device=device))
        pos += 2 + ndim
    return out


class Messenger:
    """Sends and receives the pipeline's messages for one rank.

    Args:
        group: The gloo group of the headers and control messages.
        max_in_flight (int): Sends that may be unfinished; one more waits
            for the oldest.
    """

    def __init__(self, group: Any, max_in_flight: int) -> None:
        self.group = group
        self.max_in_flight = max_in_flight
        self._sends: List[Tuple[Any, List[torch.Tensor]]] = []

    def send(self, tensors: List[torch.Tensor], dst: int, tag: int,
             wait_all: bool = False) -> None:
        """Send tensors: a header on the control group, then the data."""
        tensors = [t.detach().contiguous() for t in tensors]
        works = [dist.isend(header(tensors), dst, group=self.group, tag=tag)]
        works += [dist.isend(t, dst, tag=tag) for t in tensors]
        if wait_all:
            for work in works:
                wait(work)
            return
        self._sends.append((works, tensors))
        while len(self._sends) > self.max_in_flight:
            self._finish_send()

    def _finish_send(self) -> None:
        works, _ = self._sends.pop(0)
        for work in works:
            wait(work)

    def recv(self, src: int, tag: int,
             device: torch.device) -> List[torch.Tensor]:
        """Receive the tensors of one message from ``src``."""
        values = torch.zeros(_HEADER, dtype=torch.long)
        wait(dist.irecv(values, src, group=self.group, tag=tag))
        tensors = empty_like_header(values, device)
        works = [dist.irecv(t, src, tag=tag) for t in tensors]
        for work in works:
            wait(work)
        return tensors

    def flush(self) -> None:
        """Wait until every peer has received everything sent to it."""
        while self._sends:
            self._finish_send()

    def send_object(self, obj: Any, dst: int) -> None:
        """Send a picklable object on the control group (blocking)."""
        try:
            dist.send_object_list([obj], dst, group=self.group)
        except RuntimeError as exc:
            raise PeerLostError(str(exc)) from exc

    def recv_object(self, src: int) -> Any:
        """Receive an object sent by :meth:`send_object` (blocking)."""
        obj = [None]
        try:
            dist.recv_object_list(obj, src, group=self.group)
        except RuntimeError as exc:
            raise PeerLostError(str(exc)) from exc
        return obj[0]
