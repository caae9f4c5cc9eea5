"""The pipeline scaling model (``tools/analysis_tools/pipeline_benchmark.py``).

It builds on the per-module FLOPs of
:func:`auglocal_det.engine.profiling.module_profile` and on the pipeline's
own balancing, :func:`auglocal_det.engine.model_wrappers.balance_stages`.
"""
import itertools
from typing import Any, Dict, Optional, Sequence

from auglocal_det.engine.model_wrappers import balance_stages
from auglocal_det.engine.profiling import module_profile

__all__ = ['balance_stages', 'module_profile', 'predict_scaling']


def predict_scaling(seconds: Sequence[float], measured: Dict[str, Any],
                    target: Dict[str, Any], measured_batch: int,
                    target_batch: int, stages: Sequence[int],
                    bandwidths: Sequence[float],
                    aux_depth: int,
                    update_seconds: Optional[Sequence[float]] = None
                    ) -> Dict[str, Any]:
    """Predict pipeline and data-parallel throughput from measured times.

    Assumptions: a module's forward and backward time scales with its
    FLOPs and with the batch (the measured per-FLOP speed of each module
    holds at the target size); its share of the optimizer update depends
    on neither (one update per iteration over its parameters, at the
    measured speed); P identical devices; stages balanced by time
    (:func:`balance_stages`); sends overlap with compute (a stage's
    iteration takes the longer of its compute and of sending its output,
    one link per stage pair); no pipeline fill or drain (long runs).
    Data-parallel BP runs the network alone (FLOPs of the backbone and
    classifier at the same per-FLOP speed, and the update of their
    parameters at the measured speed per parameter) with the per-device
    batch ``target_batch`` and a ring all-reduce of its fp32 gradients,
    also overlapped. Sequential local training and BP are on one device.

    Args:
        seconds (Sequence[float]): Measured time of every local step
            (forward, loss and backward).
        measured (dict): :func:`module_profile` at the measured size.
        target (dict): :func:`module_profile` at the target size.
        measured_batch (int): Batch of the measurement.
        target_batch (int): Batch to predict for.
        stages (Sequence[int]): Stage counts P.
        bandwidths (Sequence[float]): Link bandwidths, GB/s.
        aux_depth (int): AugLocal depth d, for the paper's bound.
        update_seconds (Sequence[float], optional): Measured time of every
            local step's share of the optimizer update. Defaults to None:
            no update time.

    Returns:
        dict: ``sequential_images_per_s``, ``bp_images_per_s``,
        ``paper_bound`` ((d + 1) / (L + 1), L local layers) and one
        ``pipeline`` row per (P, bandwidth).
    """
    scale = target_batch / measured_batch
    compute = [
        t * tf / mf * scale for t, tf, mf in zip(
            seconds, target['step_flops'], measured['step_flops'])
    ]
    update = list(update_seconds or [0.] * len(compute))
    if len(update) != len(compute):
        raise ValueError(f'{len(update)} update times for {len(compute)} '
                         'local steps')
    times = [c + u for c, u in zip(compute, update)]
    sequential = sum(times)
    network = sum(target['module_flops']) + target['head_flops']
    # BP updates the network's parameters only, at the same speed per
    # parameter as the local model's update
    update_per_param = sum(update) / (target['total_params'] or 1)
    bp_time = sum(compute) * network / sum(target['step_flops']) + \
        update_per_param * target['network_params']
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
