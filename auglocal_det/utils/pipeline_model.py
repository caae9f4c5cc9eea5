"""The pipeline scaling model (``tools/analysis_tools/pipeline_benchmark.py``).

It builds on the per-module FLOPs of
:func:`auglocal_det.engine.profiling.module_profile` and on the pipeline's
own balancing, :func:`auglocal_det.engine.model_wrappers.balance_stages`.
"""
import itertools
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence

import torch
import torch.nn as nn

from auglocal_det.engine.model_wrappers import balance_stages
from auglocal_det.engine.model_wrappers.local_pipeline.partition import (
    stage_parts,
)
from auglocal_det.engine.optim_wrappers import LocalOptimWrapper
from auglocal_det.engine.profiling import module_profile, synthetic_batch
from auglocal_det.utils.memory import LiveTensorTracker

__all__ = [
    'balance_stages', 'benchmark_sgd', 'module_profile', 'predict_scaling',
    'stage_memory'
]


def benchmark_sgd(params: Iterable[nn.Parameter]) -> torch.optim.Optimizer:
    """The optimizer of every case of the pipeline benchmark and of
    :func:`stage_memory`: SGD with Nesterov momentum."""
    return torch.optim.SGD(params, lr=0.01, momentum=0.9, nesterov=True,
                           weight_decay=1e-4)


def stage_memory(model: nn.Module,
                 sizes: Sequence[int],
                 batch_size: int,
                 image_size: Optional[int] = None,
                 max_in_flight: int = 2,
                 optimizer: Callable[[List[nn.Parameter]],
                                     torch.optim.Optimizer] = benchmark_sgd
                 ) -> List[Dict[str, Any]]:
    """Steady-state live-tensor peak of every stage of a pipeline.

    Each stage runs the classifier's own driver over its modules
    (``run_iteration(..., modules=...)``, as ``LocalPipelineParallel``
    does) twice, the second time under a :class:`LiveTensorTracker` that
    counts the stage's weights, buffers, gradients and optimizer state and
    every tensor the iteration creates, its input included (the received
    output of the previous stage, or the preprocessed batch). Built on the
    ``meta`` device, the model computes nothing: this counts tensor bytes
    at any size without the memory. A stage other than the last also keeps
    the outputs it sent in the last ``max_in_flight`` iterations until the
    next stage receives them (``send_bytes``), which one iteration's count
    does not see.

    Args:
        model (nn.Module): A ``LocalImageClassifier`` (on the ``meta``
            device for sizes that do not fit this machine).
        sizes (Sequence[int]): Local modules per stage; ``[K]`` is
            sequential training.
        batch_size (int): Images per iteration.
        image_size (int, optional): Crop size. Defaults to None:
            ``model.image_size``.
        max_in_flight (int): The wrapper's ``max_in_flight``. Defaults
            to 2.
        optimizer (callable): Builds the optimizer of a stage's
            parameters. Defaults to :func:`benchmark_sgd`.

    Returns:
        list[dict]: Per stage: ``modules`` (first, last), ``params``
        (element count), ``state_bytes`` (weights, buffers, gradients and
        optimizer state at the peak), ``iteration_bytes`` (the tracked
        peak), ``send_bytes`` and ``total_bytes`` (their sum).
    """
    inputs, batch = synthetic_batch(model, batch_size, image_size)
    model.train()
    with torch.no_grad():  # every module's output: a stage's input
        outputs = [inputs] + list(model.forward_modules(inputs))
    stages, start = [], 0
    for size in sizes:
        modules = range(start, start + size)
        start += size
        stage_input = outputs[modules.start]
        parts = stage_parts(model, modules)
        params = [p for part in parts for p in part.parameters()]
        opt = optimizer(params)
        # without the finiteness check, which reads the losses (meta
        # tensors have no values) and keeps a flag of a byte per module
        wrapper = LocalOptimWrapper(opt, check_finite=False)
        model.run_iteration(wrapper, inputs=stage_input.clone(),
                            batch=batch, modules=modules)
        tracker = LiveTensorTracker(parts, opt)
        with tracker:
            model.run_iteration(wrapper, inputs=stage_input.clone(),
                                batch=batch, modules=modules)
        send = 0
        if modules.stop < model.num_modules:
            out = outputs[modules.stop]
            send = max_in_flight * out.numel() * out.element_size()
        report = tracker.report
        stages.append(
            dict(modules=(modules.start, modules.stop - 1),
                 params=sum(p.numel() for p in params),
                 state_bytes=report.peak_state_bytes,
                 iteration_bytes=report.peak_bytes,
                 send_bytes=send,
                 total_bytes=report.peak_bytes + send))
    return stages


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
