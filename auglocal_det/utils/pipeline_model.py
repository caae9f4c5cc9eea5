"""Costs of local modules, stage balancing and a pipeline scaling model.

Leaf helpers of ``LocalPipelineParallel`` and of
``tools/analysis_tools/pipeline_benchmark.py``.
"""
import itertools
from typing import Any, Dict, List, Sequence, Tuple, Union

import torch
import torch.nn as nn

from .flops import count_flops

__all__ = ['balance_stages', 'module_profile', 'predict_scaling']


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
        ``out_bytes`` (module j's output) and ``network_params`` (backbone
        and classifier).
    """
    from auglocal_det.models.aux_heads import AuxBatch
    size = model.image_size if image_size is None else image_size
    height, width = (size, size) if isinstance(size, int) else size
    param = next(model.parameters())
    with torch.random.fork_rng(devices=[]):
        inputs = torch.randn(1, 3, height, width, device=param.device)
    batch = AuxBatch(
        labels=torch.zeros(1, dtype=torch.long, device=param.device),
        inputs=inputs,
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
                    flops, item = count_flops(next, generator, None)
                    if item is None:
                        break
                    profile[key].append(flops)
                    if key == 'module_flops':
                        profile['out_bytes'].append(
                            item.numel() * item.element_size())
                    else:
                        last = item.output
            profile['head_flops'] = count_flops(model.head, last)[0]
    finally:  # module by module: some may be in eval mode on purpose
        for module, mode in modes:
            module.training = mode
    profile['network_params'] = sum(
        p.numel() for m in (model.backbone, model.head)
        for p in m.parameters())
    return profile


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


def predict_scaling(seconds: Sequence[float], measured: Dict[str, Any],
                    target: Dict[str, Any], measured_batch: int,
                    target_batch: int, stages: Sequence[int],
                    bandwidths: Sequence[float],
                    aux_depth: int) -> Dict[str, Any]:
    """Predict pipeline and data-parallel throughput from measured times.

    Assumptions: a module's time scales with its FLOPs and with the batch
    (the measured per-FLOP speed of each module holds at the target size);
    P identical devices; stages balanced by time (:func:`balance_stages`);
    sends overlap with compute (a stage's iteration takes the longer of its
    compute and of sending its output, one link per stage pair); no
    pipeline fill or drain (long runs). Data-parallel BP runs the network
    alone (FLOPs of the backbone and classifier at the same per-FLOP speed)
    with the per-device batch ``target_batch`` and a ring all-reduce of its
    fp32 gradients, also overlapped. Sequential local training and BP are
    on one device.

    Args:
        seconds (Sequence[float]): Measured time of every local step.
        measured (dict): :func:`module_profile` at the measured size.
        target (dict): :func:`module_profile` at the target size.
        measured_batch (int): Batch of the measurement.
        target_batch (int): Batch to predict for.
        stages (Sequence[int]): Stage counts P.
        bandwidths (Sequence[float]): Link bandwidths, GB/s.
        aux_depth (int): AugLocal depth d, for the paper's bound.

    Returns:
        dict: ``sequential_images_per_s``, ``bp_images_per_s``,
        ``paper_bound`` ((d + 1) / (L + 1), L local layers) and one
        ``pipeline`` row per (P, bandwidth).
    """
    scale = target_batch / measured_batch
    times = [
        t * tf / mf * scale for t, tf, mf in zip(
            seconds, target['step_flops'], measured['step_flops'])
    ]
    sequential = sum(times)
    network = sum(target['module_flops']) + target['head_flops']
    bp_time = sequential * network / sum(target['step_flops'])
    num_layers = len(times)
    rows = []
    for num_stages, bandwidth in itertools.product(stages, bandwidths):
        if num_stages > len(times):
            continue
        sizes, _ = balance_stages(times, num_stages)
        ends = list(itertools.accumulate(sizes))
        starts = [0] + ends[:-1]
        link = bandwidth * 1e9
        iteration = max(
            max(sum(times[a:b]),
                (target['out_bytes'][b - 1] * target_batch / link)
                if b < len(times) else 0.)
            for a, b in zip(starts, ends))
        allreduce = 2 * (num_stages - 1) / num_stages * \
            target['network_params'] * 4 / link
        dp_time = max(bp_time, allreduce)
        rows.append(
            dict(
                stages=num_stages,
                bandwidth_gb_s=bandwidth,
                sizes=sizes,
                images_per_s=target_batch / iteration,
                speedup_vs_sequential=sequential / iteration,
                time_vs_bp=iteration / bp_time,
                dp_bp_images_per_s=num_stages * target_batch / dp_time))
    return dict(
        sequential_images_per_s=target_batch / sequential,
        bp_images_per_s=target_batch / bp_time,
        paper_bound=(aux_depth + 1) / (num_layers + 1),
        pipeline=rows)
