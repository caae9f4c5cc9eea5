"""Checkpoint gathering: the whole trained network on rank 0.

Every rank holds the whole network, but only its own modules get
gradients and optimizer state. Before a checkpoint or an export, the
other stages of replica 0 send rank 0 their weights, buffers and
optimizer state, so that what rank 0 saves is an ordinary checkpoint.
"""
from typing import Any, List, Optional

import torch
import torch.nn as nn

__all__ = ['gather_state', 'release_foreign_state']


def _optim_params(optim_wrapper: Optional[Any]) -> List[nn.Parameter]:
    if optim_wrapper is None:
        return []
    return [
        p for group in optim_wrapper.optimizer.param_groups
        for p in group['params']
    ]


def _owned_params(pipe: Any) -> set:
    return {id(p) for p in pipe.stage_module.parameters()}


def gather_state(pipe: Any,
                 optim_wrapper: Optional[Any]) -> None:
    """Copy the state of replica 0's other stages to rank 0.

    Call it on every rank.

    Args:
        pipe (LocalPipelineParallel): This rank's pipeline.
        optim_wrapper (OptimWrapper, optional): Also gather the optimizer
            state of its parameters.
    """
    pipe.messenger.flush()
    if pipe.replica != 0 or pipe.num_stages == 1:
        return
    state = pipe.module.state_dict(keep_vars=True)
    params = _optim_params(optim_wrapper)
    if pipe.stage > 0:
        optim_state = {}
        if optim_wrapper is not None:
            opt = optim_wrapper.optimizer
            owned = _owned_params(pipe)
            for index, param in enumerate(params):
                if id(param) in owned and param in opt.state:
                    optim_state[index] = {
                        k: (v.detach().cpu(), v.device.type == 'cpu')
                        if torch.is_tensor(v) else (v, None)
                        for k, v in opt.state[param].items()
                    }
        payload = dict(
            state={
                name: state[name].detach().cpu()
                for name in pipe.owned_state_names
            },
            optim=optim_state)
        pipe.messenger.send_object(payload, 0)
        return
    for src in range(1, pipe.num_stages):
        payload = pipe.messenger.recv_object(src)
        with torch.no_grad():
            for name, value in payload['state'].items():
                state[name].copy_(value)
        if optim_wrapper is None:
            continue
        opt = optim_wrapper.optimizer
        for index, entry in payload['optim'].items():
            param = params[index]
            opt.state[param] = {
                k: v if on_cpu is None else
                (v if on_cpu else v.to(param.device))
                for k, (v, on_cpu) in entry.items()
            }


def release_foreign_state(pipe: Any,
                          optim_wrapper: Any) -> None:
    """Drop the optimizer state of parameters of other stages.

    Args:
        pipe (LocalPipelineParallel): This rank's pipeline.
        optim_wrapper (OptimWrapper): The optimizer wrapper.
    """
    owned = _owned_params(pipe)
    opt = optim_wrapper.optimizer
    for param in _optim_params(optim_wrapper):
        if id(param) not in owned:
            opt.state.pop(param, None)
