"""Lagged logging: every module's loss and accuracy in rank 0's log.

Stage s of replica 0 sends its log values of every iteration to rank 0.
Rank 0 posts the receive at once and adds the values of iteration
t - s * (max_in_flight + 1) to its own of iteration t. Stage s can be
that far behind the first stage when the sends are not holding the first
stage back. So the log shows every module without making rank 0 wait for
the other stages, a wait that would couple the stages tighter than the
sends do. The keys travel once, on the first iteration.
"""
from collections import OrderedDict
from typing import Any, Dict, List, Optional, Tuple

import torch
import torch.distributed as dist

from .wire import TAG_LOG, Messenger, wait

__all__ = ['LaggedLogs']


class LaggedLogs:
    """Brings the log variables of replica 0's stages to rank 0.

    Args:
        messenger (Messenger): This rank's messages (its control group).
        stage (int): This rank's stage.
        num_stages (int): Stages of a replica.
        replica (int): This rank's replica; only replica 0 takes part.
        max_in_flight (int): The pipeline's bound on unreceived outputs.
    """

    def __init__(self, messenger: Messenger, stage: int, num_stages: int,
                 replica: int, max_in_flight: int) -> None:
        self.messenger = messenger
        self.stage = stage
        self.num_stages = num_stages
        self.replica = replica
        self.max_in_flight = max_in_flight
        self._keys: Optional[List[List[str]]] = None
        self._pending: List[Tuple[Any, torch.Tensor]] = []
        self._recvs: Dict[int, List[Tuple[Any, torch.Tensor]]] = {}
        self._iter = 0

    def lag(self, stage: int) -> int:
        """Iterations by which rank 0's log trails stage ``stage``'s."""
        return stage * (self.max_in_flight + 1)

    def gather(self, log_vars: Dict[str, Any]) -> Dict[str, Any]:
        """Send this stage's values, or add the other stages' (rank 0).

        Args:
            log_vars (dict): This stage's log variables of the iteration.

        Returns:
            dict: ``log_vars``; on rank 0 with the lagged values of the
            other stages added and ``loss`` their sum.
        """
        if self.replica != 0 or self.num_stages == 1:
            return log_vars
        group = self.messenger.group
        keys = [k for k in log_vars if k != 'loss']
        values = torch.stack(
            [log_vars[k].detach().float().cpu() for k in keys] +
            [log_vars['loss'].detach().float().cpu()])
        if self.stage > 0:
            if self._keys is None:
                self.messenger.send_object(keys, 0)
                self._keys = [keys]
            self._pending.append((dist.isend(
                values, 0, group=group, tag=TAG_LOG), values))
            while len(self._pending) > self.num_stages:
                work, _ = self._pending.pop(0)
                wait(work)
            return log_vars
        if self._keys is None:
            self._keys = [keys]
            for s in range(1, self.num_stages):
                self._keys.append(self.messenger.recv_object(s))
        self._iter += 1
        out = OrderedDict(log_vars)
        total = log_vars['loss'].detach().float().cpu()
        for s in range(1, self.num_stages):
            stage_keys = self._keys[s]
            buf = torch.zeros(len(stage_keys) + 1)
            self._recvs.setdefault(s, []).append(
                (dist.irecv(buf, s, group=group, tag=TAG_LOG), buf))
            if self._iter - self.lag(s) < 1:
                continue  # the values of an earlier iteration come later
            work, buf = self._recvs[s].pop(0)
            wait(work)
            out.update(zip(stage_keys, buf[:-1]))
            total = total + buf[-1]
        out['loss'] = total
        return out

    def drain(self) -> None:
        """Receive the messages of the last iterations (rank 0), or wait
        for ours to be received (other stages of replica 0)."""
        if self.replica != 0 or self.num_stages == 1 or self._keys is None:
            return
        if self.stage > 0:
            for work, _ in self._pending:
                wait(work)
            self._pending = []
            return
        for recvs in self._recvs.values():
            for work, _ in recvs:
                wait(work)
        self._recvs = {}
        self._iter = 0
