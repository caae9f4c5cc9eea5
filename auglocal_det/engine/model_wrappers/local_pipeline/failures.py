"""Failure propagation: one rank fails, every rank stops with its reason.

A rank that fails sends its exception's type and message to every other
rank before it raises. Each rank has a listener thread with a receive
posted on a gloo group of its own. The types that cross ranks are the
package's own, sent as an index into :data:`FORWARDED`; anything else
arrives as :class:`~auglocal_det.errors.PipelineStoppedError`. A rank
whose wait on a vanished peer fails (:class:`~.wire.PeerLostError`)
raises the reason that peer reported instead.
"""
import threading
from contextlib import contextmanager
from typing import Iterator, Optional, Sequence

import torch
import torch.distributed as dist

from auglocal_det.errors import (
    InputError,
    PipelineStoppedError,
    TrainingDivergedError,
)

from .wire import CTRL_BYTES, TAG_CTRL, PeerLostError

__all__ = ['FORWARDED', 'FailureReports']

#: The failures other ranks raise as they are (by index on the wire); any
#: other stops them with the last, PipelineStoppedError.
FORWARDED = (TrainingDivergedError, InputError, PipelineStoppedError)
#: Seconds a rank that lost a peer waits for that peer's report.
_REPORT_TIMEOUT = 10.


class FailureReports:
    """Send this rank's failure to all others; receive theirs.

    Creating it creates the reports' process group (a collective call, so
    every rank creates it at the same point) and starts the listener.

    Args:
        where (str): This rank's place in the pipeline, for the message.
    """

    def __init__(self, where: str) -> None:
        self.where = where
        self._group = dist.new_group(backend='gloo')
        self._failure: Optional[str] = None
        self._reported = threading.Event()
        self._listener = threading.Thread(
            target=self._listen, name='pipeline-listener', daemon=True)
        self._listener.start()

    def _listen(self) -> None:
        """Thread: receive the other ranks' reports until training ends.

        A report is ``'done'`` (the previous rank closed the pipeline) or a
        failure: its exception type and message.
        """
        while True:
            buf = torch.zeros(CTRL_BYTES, dtype=torch.uint8)
            try:
                dist.irecv(buf, group=self._group, tag=TAG_CTRL).wait()
            except RuntimeError:  # a peer vanished, or the group ended
                return
            text = bytes(buf.tolist()).rstrip(b'\0').decode()
            if text == 'done':
                return
            if self._failure is None:
                self._failure = text
            self._reported.set()

    def check(self) -> None:
        """Raise the failure another rank reported, if any."""
        if self._failure is not None:
            self._raise_reported()

    def _raise_reported(self, cause: Optional[BaseException] = None
                        ) -> None:
        """Raise the failure another rank reported (its type, its text)."""
        kind, _, message = self._failure.partition('\n')
        exc = FORWARDED[int(kind)](message)
        exc._pipeline_forwarded = True
        raise exc from cause

    def _notify(self, exc: BaseException) -> None:
        """Tell every other rank that this one failed, and why."""
        kind = FORWARDED.index(type(exc)) if type(exc) in FORWARDED \
            else len(FORWARDED) - 1
        rank = dist.get_rank()
        self.report(
            f'{kind}\nrank {rank} ({self.where}) failed, so every rank '
            f'stopped: {type(exc).__name__}: {exc}',
            [r for r in range(dist.get_world_size()) if r != rank])

    def report(self, text: str, ranks: Sequence[int]) -> None:
        """Send ``text`` to the listeners of ``ranks``."""
        data = text.encode()[:CTRL_BYTES]
        buf = torch.zeros(CTRL_BYTES, dtype=torch.uint8)
        buf[:len(data)] = torch.tensor(list(data), dtype=torch.uint8)
        works = [
            dist.isend(buf, r, group=self._group, tag=TAG_CTRL)
            for r in ranks
        ]
        for work in works:  # each listener has a receive posted
            try:
                work.wait()
            except RuntimeError:  # that rank is gone already
                pass

    @contextmanager
    def guard(self) -> Iterator[None]:
        """Stop every rank, with the reason, when one fails.

        A rank that fails reports why to all others before it raises. A
        rank that then fails in a wait on it (its connection closed)
        raises the reported reason instead of gloo's error.
        """
        try:
            self.check()
            yield
        except BaseException as exc:
            if getattr(exc, '_pipeline_forwarded', False):
                raise
            if self._failure is not None or (
                    isinstance(exc, PeerLostError)
                    and self._reported.wait(timeout=_REPORT_TIMEOUT)):
                self._raise_reported(exc)
            self._notify(exc)
            raise

    def close(self) -> None:
        """Tell the next rank that this one is done, then wait until the
        previous one is (raising what another rank reports meanwhile)."""
        rank, world = dist.get_rank(), dist.get_world_size()
        if world > 1:
            self.report('done', [(rank + 1) % world])
        while self._listener.is_alive():
            self._listener.join(timeout=0.1)
            self.check()
