"""The stage costs and the balancing of ``LocalPipelineParallel``.

Per-module forward FLOPs counted through the classifier's own generators,
per-module training times measured on a synthetic batch, and the
contiguous split of the modules into stages that minimises the slowest
stage.
"""
import itertools
import time
from typing import Any, Dict, List, Sequence, Tuple, Union

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

__all__ = ['balance_stages', 'module_profile', 'module_times']


def _count_flops(fn, *args):
    with FlopCounterMode(display=False) as counter:
        out = fn(*args)
    return float(counter.get_total_flops()), out


def module_profile(model: nn.Module,
                   image_size: Union[int, Sequence[int], None] = None
                   ) -> Dict[str, Any]:
    """Per-image forward FLOPs and output size of every local module.

    Runs one image through the classifier's generators (also on the
    ``'meta'`` device), in eval mode without autograd, and without drawing
    from the global random generator; every module keeps its mode.

    Args:
        model (nn.Module): A ``LocalImageClassifier``.
        image_size (int | Sequence[int], optional): Crop size. Defaults to
            None: ``model.image_size``.

    Returns:
        dict: ``step_flops`` (module j and its loss), ``module_flops``
        (module j alone), ``head_flops`` (the network's classifier),
        ``out_bytes`` (module j's output), ``network_params`` (backbone
        and classifier) and ``total_params`` (with the auxiliary heads).
    """
    from auglocal_det.models.aux_heads import AuxBatch
    size = model.image_size if image_size is None else image_size
    height, width = (size, size) if isinstance(size, int) else size
    param = next(model.parameters())
    with torch.random.fork_rng(devices=[]):
        inputs = torch.randn(1, 3, height, width, device=param.device)
    batch = AuxBatch(
        labels=torch.zeros(1, dtype=torch.long, device=param.device),
        images=model.unnormalize(inputs))
    profile: Dict[str, Any] = dict(
        step_flops=[], module_flops=[], out_bytes=[])
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        with torch.no_grad():
            for generator, key in ((model.local_steps(inputs, batch),
                                    'step_flops'),
                                   (model.forward_modules(inputs),
                                    'module_flops')):
                while True:
                    flops, item = _count_flops(next, generator, None)
                    if item is None:
                        break
                    profile[key].append(flops)
                    if key == 'module_flops':
                        profile['out_bytes'].append(
                            item.numel() * item.element_size())
                    else:
                        last = item.output
            profile['head_flops'] = _count_flops(model.head, last)[0]
    finally:  # module by module: some may be in eval mode on purpose
        for module, mode in modes:
            module.training = mode
    profile['network_params'] = sum(
        p.numel() for m in (model.backbone, model.head)
        for p in m.parameters())
    profile['total_params'] = sum(p.numel() for p in model.parameters())
    return profile


def _synchronize(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def _update_seconds_per_element(device: torch.device,
                                numel: int = 1 << 22) -> float:
    """Seconds per parameter of an SGD update with momentum and weight
    decay (its arithmetic on scratch tensors, as the optimizer runs it)."""
    param, grad, buf = (torch.zeros(numel, device=device) for _ in range(3))
    best = float('inf')
    for _ in range(3):
        _synchronize(device)
        start = time.perf_counter()
        grad.add_(param, alpha=1e-4)
        buf.mul_(0.9).add_(grad)
        param.add_(grad.add(buf, alpha=0.9), alpha=-0.1)
        _synchronize(device)
        best = min(best, time.perf_counter() - start)
    return best / numel


def module_times(model: nn.Module,
                 batch_size: int = 8,
                 iters: int = 2,
                 image_size: Union[int, Sequence[int], None] = None
                 ) -> List[float]:
    """Measured training seconds of every local step on this device.

    Times the forward, local loss and backward of each step of the
    classifier's ``local_steps`` on a synthetic batch (the last of
    ``iters`` iterations), plus the module's share of an optimizer update
    (its parameter count times the measured cost per parameter of an SGD
    update with momentum). Nothing of the model changes: no update is
    made, the gradients are dropped, the buffers (BatchNorm running
    statistics) restored, and the global random generators are left as
    they were.

    Args:
        model (nn.Module): A ``LocalImageClassifier``.
        batch_size (int): Images of the synthetic batch. Defaults to 8.
        iters (int): Iterations; the last one is timed. Defaults to 2.
        image_size (int | Sequence[int], optional): Crop size. Defaults to
            None: ``model.image_size``.

    Returns:
        list[float]: Seconds of step j, for j = 0 .. K - 1.
    """
    from auglocal_det.models.aux_heads import AuxBatch
    size = model.image_size if image_size is None else image_size
    height, width = (size, size) if isinstance(size, int) else size
    param = next(model.parameters())
    device = param.device
    buffers = {
        name: buf.detach().clone()
        for name, buf in model.named_buffers()
    }
    grads = [(p, p.grad) for p in model.parameters()]
    for p in model.parameters():
        p.grad = None
    per_element = _update_seconds_per_element(device)
    times: List[float] = []
    devices = [device.index or 0] if device.type == 'cuda' else []
    try:
        with torch.random.fork_rng(devices=devices):
            gen = torch.Generator(device=device).manual_seed(0)
            inputs = torch.randn(batch_size, 3, height, width,
                                 generator=gen, device=device)
            labels = torch.randint(0, model.num_classes, (batch_size, ),
                                   generator=gen, device=device)
            for _ in range(iters):
                times = []
                batch = AuxBatch(
                    labels=labels,
                    images=model.unnormalize(inputs)
                    if model.reads_images() else None)
                steps = model.local_steps(inputs, batch)
                while True:
                    _synchronize(device)
                    start = time.perf_counter()
                    step = next(steps, None)
                    if step is None:
                        break
                    if step.loss.requires_grad:
                        step.loss.backward()
                    numel = sum(p.numel() for p in step.params)
                    del step
                    _synchronize(device)
                    times.append(time.perf_counter() - start +
                                 numel * per_element)
                for p in model.parameters():
                    p.grad = None
    finally:
        with torch.no_grad():
            for name, buf in model.named_buffers():
                buf.copy_(buffers[name])
        for p, grad in grads:
            p.grad = grad
    return times


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
