"""What a stage holds: its own modules only, and the whole network on rank
0 for a checkpoint.

A stage trains only its own modules, so it keeps only their tensors: the
parameters and buffers of the other stages' modules are released to the
``meta`` device (shape and dtype, no storage), in place, so that the
optimizer's parameter lists and every other reference stay valid (those
parameters never get a gradient, so the optimizer skips them). Before a
checkpoint or an export, the other stages of replica 0 send rank 0 their
weights, buffers and optimizer state; rank 0 takes them in host memory
(:func:`gather_state`), so that what it saves is an ordinary checkpoint,
and releases them again before its next iteration
(:func:`release_foreign`).
"""
from typing import Any, List, Optional

import torch
import torch.nn as nn

__all__ = ['foreign_tensors', 'gather_state', 'release_foreign']


def _optim_params(optim_wrapper: Optional[Any]) -> List[nn.Parameter]:
    if optim_wrapper is None:
        return []
    return [
        p for group in optim_wrapper.optimizer.param_groups
        for p in group['params']
    ]


def _owned_params(pipe: Any) -> set:
    return {id(p) for p in pipe.stage_module.parameters()}


def foreign_tensors(stage_module: nn.Module,
                    other_parts: List[nn.Module]) -> List[torch.Tensor]:
    """The parameters and buffers of other stages' modules.

    Args:
        stage_module (nn.Module): What this stage owns.
        other_parts (list[nn.Module]): The layers and heads of the other
            stages.

    Returns:
        list[Tensor]: Each tensor once; none of this stage's.
    """
    own = {id(t) for t in stage_module.parameters()}
    own.update(id(t) for t in stage_module.buffers())
    seen, out = set(), []
    for part in other_parts:
        for tensor in list(part.parameters()) + list(part.buffers()):
            if id(tensor) not in own and id(tensor) not in seen:
                seen.add(id(tensor))
                out.append(tensor)
    return out


def _replace(tensor: torch.Tensor, value: torch.Tensor) -> None:
    """Give ``tensor`` the data of ``value`` in place: the object keeps its
    identity (the optimizer and the modules hold it), whatever the device,
    ``meta`` included."""
    if isinstance(tensor, nn.Parameter):
        value = nn.Parameter(value, requires_grad=tensor.requires_grad)
    attributes = dict(tensor.__dict__)  # swap_tensors exchanges them too
    torch.utils.swap_tensors(tensor, value)
    tensor.__dict__.update(attributes)


def release_foreign(pipe: Any, optim_wrapper: Optional[Any]) -> None:
    """Release the other stages' tensors to the ``meta`` device and drop
    the optimizer state of their parameters (loaded by a resume or
    gathered for a checkpoint): this stage never uses either.

    Args:
        pipe (LocalPipelineParallel): This rank's pipeline.
        optim_wrapper (OptimWrapper, optional): The optimizer wrapper.
    """
    if not pipe.holds_foreign:
        return
    on_cuda = False
    with torch.no_grad():
        for tensor in pipe.foreign_tensors:
            if not tensor.is_meta:
                on_cuda = on_cuda or tensor.is_cuda
                _replace(tensor, torch.empty_like(tensor, device='meta'))
    if on_cuda:  # give the freed weights back, not only to torch's cache
        torch.cuda.empty_cache()
    if optim_wrapper is None:
        return
    pipe.holds_foreign = False
    owned = _owned_params(pipe)
    opt = optim_wrapper.optimizer
    for param in _optim_params(optim_wrapper):
        if id(param) not in owned:
            opt.state.pop(param, None)


def gather_state(pipe: Any,
                 optim_wrapper: Optional[Any]) -> None:
    """Copy the state of replica 0's other stages to rank 0.

    Call it on every rank. Rank 0 then holds the whole network: its own
    modules where they train, the others' in host memory.

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
                        k: v.detach().cpu() if torch.is_tensor(v) else v
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
    pipe.holds_foreign = True
    for src in range(1, pipe.num_stages):
        payload = pipe.messenger.recv_object(src)
        with torch.no_grad():
            for name, value in payload['state'].items():
                _replace(state[name], value)
        if optim_wrapper is None:
            continue
        opt = optim_wrapper.optimizer
        for index, entry in payload['optim'].items():
            opt.state[params[index]] = entry
