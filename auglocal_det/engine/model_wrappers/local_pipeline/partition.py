"""Which local modules each stage owns, and what that makes it hold.

The partition is contiguous: stage s owns modules ``sizes[0] + ... +
sizes[s - 1]`` onwards. It is chosen by FLOPs (``'auto'``), by the
training times every rank measures at start (``'time'``), or given. A
stage holds the backbone layers and the auxiliary heads of its modules,
and the last stage also the network's classifier.
"""
import itertools
from typing import Any, List, Optional, Sequence, Tuple, Union

import torch
import torch.distributed as dist
import torch.nn as nn

from auglocal_det.engine.profiling import module_profile, module_times
from auglocal_det.errors import InputError
from auglocal_det.models.classifiers import LocalImageClassifier

__all__ = [
    'balance_stages', 'check_pipelinable', 'module_costs', 'partition',
    'stage_parts', 'owned_state_names'
]


def balance_stages(costs: Sequence[float],
                   num_stages: int) -> Tuple[List[int], float]:
    """Split modules into contiguous stages minimising the slowest stage.

    Args:
        costs (Sequence[float]): Cost of every module, in order.
        num_stages (int): Number of stages P (at most ``len(costs)``).

    Returns:
        tuple[list[int], float]: Modules per stage, and the predicted
        efficiency ``sum(costs) / (P * max stage cost)`` (1 is perfect).
    """
    num = len(costs)
    prefix = [0.] + list(itertools.accumulate(float(c) for c in costs))
    inf = float('inf')
    # best[p][i]: slowest stage when the first i modules form p stages
    best = [[inf] * (num + 1) for _ in range(num_stages + 1)]
    cut = [[0] * (num + 1) for _ in range(num_stages + 1)]
    best[0][0] = 0.
    for p in range(1, num_stages + 1):
        for i in range(p, num - (num_stages - p) + 1):
            for k in range(p - 1, i):
                value = max(best[p - 1][k], prefix[i] - prefix[k])
                if value < best[p][i]:
                    best[p][i], cut[p][i] = value, k
    sizes = []
    end = num
    for p in range(num_stages, 0, -1):
        start = cut[p][end]
        sizes.append(end - start)
        end = start
    sizes.reverse()
    slowest = best[num_stages][num]
    efficiency = prefix[num] / (num_stages * slowest) if slowest else 1.
    return sizes, efficiency


def check_pipelinable(model: nn.Module, num_stages: int) -> None:
    """Refuse models whose updates a pipeline cannot reproduce.

    Raises:
        InputError: The reason, naming the config key.
    """
    if num_stages < 1:
        raise InputError('model_wrapper_cfg.num_stages must be at least '
                         f'1, got {num_stages}')
    if not isinstance(model, LocalImageClassifier):
        raise InputError(
            'LocalPipelineParallel trains a LocalImageClassifier; got '
            f'{type(model).__name__}')
    refusal = model.pipeline_refusal(num_stages)
    if refusal is not None:
        raise InputError(refusal)
    if model.num_modules < num_stages:
        raise InputError(
            f'model_wrapper_cfg.num_stages={num_stages} is more than '
            f'the model has local modules ({model.num_modules})')


def module_costs(model: nn.Module,
                 image_size: Union[int, Sequence[int], None] = None
                 ) -> List[float]:
    """Forward FLOPs per image of every local step (module and its loss).

    The backward of a convolution or linear layer costs about twice its
    forward, so these are proportional to each module's training cost.

    Args:
        model (nn.Module): A ``LocalImageClassifier``.
        image_size (int | Sequence[int], optional): Crop size. Defaults to
            None: ``model.image_size``.

    Returns:
        list[float]: FLOPs of step j, for j = 0 .. K - 1.
    """
    return module_profile(model, image_size)['step_flops']


def partition(model: nn.Module, num_stages: int,
              balance: Union[str, Sequence[int]],
              profile_batch_size: int = 8,
              group: Optional[Any] = None) -> Tuple[List[int], float]:
    """Local modules per stage, and the predicted efficiency.

    Args:
        model (nn.Module): A ``LocalImageClassifier``.
        num_stages (int): Stages P.
        balance (str | Sequence[int]): ``'auto'``, ``'time'`` or the
            modules of every stage (see ``LocalPipelineParallel``).
        profile_batch_size (int): Batch of the ``'time'`` measurement.
            Defaults to 8.
        group (optional): Group over which ``'time'`` averages the
            measured times (every rank). Defaults to None.

    Returns:
        tuple[list[int], float]: The sizes and ``sum(costs) / (P * the
        slowest stage's cost)``.
    """
    if isinstance(balance, str):
        if balance not in ('auto', 'time'):
            raise InputError(
                "model_wrapper_cfg.balance must be 'auto', 'time' or a "
                f'list of modules per stage, got {balance!r}')
        if balance == 'auto':
            return balance_stages(module_costs(model), num_stages)
        if profile_batch_size < 1:
            raise InputError(
                'model_wrapper_cfg.profile_batch_size must be at least '
                f'1, got {profile_batch_size}')
        # every rank measures; all use the mean, hence one partition
        times = torch.tensor(
            module_times(model, profile_batch_size), dtype=torch.float64)
        dist.all_reduce(times, group=group)
        times /= dist.get_world_size(group)
        return balance_stages(times.tolist(), num_stages)
    costs = module_costs(model)
    sizes = [int(n) for n in balance]
    if len(sizes) != num_stages or min(sizes) < 1 or \
            sum(sizes) != model.num_modules:
        raise InputError(
            f'model_wrapper_cfg.balance={list(balance)} must give '
            f'{num_stages} positive module counts summing to the '
            f"model's {model.num_modules} local modules")
    starts = [0] + list(itertools.accumulate(sizes))
    slowest = max(sum(costs[a:b]) for a, b in zip(starts, starts[1:]))
    return sizes, sum(costs) / (num_stages * slowest)


def stage_parts(model: nn.Module, modules: range) -> List[nn.Module]:
    """The backbone layers and heads of ``modules``."""
    layers = model.backbone.local_layers()
    parts: List[nn.Module] = []
    for j in modules:
        first, last = model.module_ranges[j]
        parts.extend(layers[first:last + 1])
        parts.append(model.aux_heads[j] if j < model.num_aux else model.head)
    return parts


def owned_state_names(model: nn.Module, modules: range) -> List[str]:
    """Names in ``model.state_dict()`` of the tensors of ``modules``."""
    ids = set()
    for part in stage_parts(model, modules):
        ids.update(id(t) for t in part.state_dict(keep_vars=True).values())
    return [
        name for name, t in model.state_dict(keep_vars=True).items()
        if id(t) in ids
    ]
