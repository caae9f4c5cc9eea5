"""Measure what a training rule costs: memory, time and FLOPs.

The library side of ``tools/analysis_tools/benchmark.py``. A *rule* is a
config file, or a shorthand for one, with memory options
(:mod:`.benchmark_rules`).
:func:`measure_rule` trains the rule's classifier on a fixed synthetic batch
through its real ``train_step`` and optimizer wrapper and measures, after
the warm-up (the steady state: optimizer state alive):

- the process's peak resident set over one iteration (``VmHWM`` after a
  reset, CPU only), meaningful in a fresh process started with
  :data:`~auglocal_det.process_memory.RSS_ENV`, one per rule;
- the peak of live tensor bytes of one iteration
  (:class:`~auglocal_det.utils.memory.LiveTensorTracker`), with what is
  alive at that moment; on the ``meta`` device this is a dry run that
  computes nothing;
- on CUDA, ``torch.cuda.max_memory_allocated`` over the timed iterations;
- seconds per iteration, FLOPs per image (forward of network and
  auxiliary networks, and one whole training step) and parameters.
"""
import copy
import gc
import statistics
import time
from typing import Any, Dict, List, Optional

import torch

from auglocal_det.engine.profiling import make_batch
from auglocal_det.errors import InputError
from auglocal_det.process_memory import (
    peak_rss_bytes,
    reset_peak_rss,
    rss_bytes,
)
from auglocal_det.registry import MODELS

from .benchmark_rules import (
    OPTIONS,
    RULE_CONFIGS,
    RuleSpec,
    parse_rule,
    rule_configs,
)
from .flops import count_forward_flops, count_train_step_flops
from .memory import LiveTensorTracker
from .optim_wrapper_types import AMP_WRAPPERS

__all__ = [
    'RULE_CONFIGS', 'OPTIONS', 'RuleRun', 'RuleSpec', 'parse_rule',
    'rule_configs', 'make_batch', 'measure_rule', 'add_ratios'
]


def _sync(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def _timing(times: List[float], batch_size: int) -> Dict[str, Any]:
    if len(times) == 1:
        q1 = median = q3 = times[0]
    else:
        q1, median, q3 = statistics.quantiles(
            times, n=4, method='inclusive')
    return dict(
        unit='seconds per iteration',
        samples=times,
        median=median,
        q1=q1,
        q3=q3,
        min=min(times),
        max=max(times),
        images_per_s=batch_size / median)


def _build_optim_wrapper(cfg: dict, model: torch.nn.Module) -> Any:
    from mmengine.optim import build_optim_wrapper
    if cfg['type'] in AMP_WRAPPERS.values() and not torch.cuda.is_available():
        raise InputError('--amp needs a CUDA device (MMEngine\'s AMP '
                         'optimizer wrappers refuse to build without one)')
    return build_optim_wrapper(model, copy.deepcopy(cfg))


class RuleRun:
    """One rule, built, warmed up and measured, ready for timed iterations.

    :func:`measure_rule` times its iterations in a row; the benchmark
    tool's ``--interleave`` alternates the iterations of several rules, so
    that a shared machine's changing load affects every rule alike.

    Args:
        spec (RuleSpec): The rule.
        device (torch.device): ``cpu``, ``cuda`` or ``meta``.
        batch_size (int): Images per iteration.
        image_size (int): Square crop size.
        num_classes (int): Number of classes. Defaults to 1000.
        warmup (int): Iterations before measuring, at least 1. Defaults
            to 1.
        amp (bool): bfloat16 autocast (CUDA). Defaults to False.
        channels_last (bool): Model in channels_last format. Defaults to
            False.
        cfg_options (dict, optional): Overrides of the rule's config.
        measure_rss (bool): Measure the peak resident set (CPU). Defaults
            to True.
        measure_live (bool): Count the live tensors of one iteration.
            Defaults to True.
        warmup_batch_size (int, optional): Images per warm-up iteration.
            The warm-up only has to create the optimizer state, whose size
            does not depend on the batch, so a small batch saves time on a
            CPU; the training-step FLOPs are then counted at this batch
            size. Defaults to None (``batch_size``).
        trace_limit (int): Entries of the peak trace to keep. Defaults to
            15.
        seed (int): Seed of the weights and the batch. Defaults to 0.
    """

    def __init__(self,
                 spec: RuleSpec,
                 device: torch.device,
                 batch_size: int,
                 image_size: int,
                 num_classes: int = 1000,
                 warmup: int = 1,
                 amp: bool = False,
                 channels_last: bool = False,
                 cfg_options: Optional[dict] = None,
                 measure_rss: bool = True,
                 measure_live: bool = True,
                 warmup_batch_size: Optional[int] = None,
                 trace_limit: int = 15,
                 seed: int = 0) -> None:
        if warmup < 1:
            raise InputError('--warmup must be at least 1')
        self.spec = spec
        self.device = device
        self.batch_size = batch_size
        self.times: List[float] = []
        meta = device.type == 'meta'
        model_cfg, wrapper_cfg = rule_configs(spec, image_size, num_classes,
                                              amp, cfg_options)
        if meta:  # its check reads the losses' values, which do not exist
            wrapper_cfg['check_finite'] = False
        torch.manual_seed(seed)
        start = time.perf_counter()
        with torch.device('meta' if meta else 'cpu'):
            model = MODELS.build(model_cfg)
        model = model.to(device)
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        model.train()
        wrapper = _build_optim_wrapper(wrapper_cfg, model)
        build_time = time.perf_counter() - start
        channels = model.backbone.local_layer_specs()[0].in_channels
        data = make_batch(batch_size, image_size, num_classes, seed,
                          channels)
        warmup_data = data if warmup_batch_size in (None, batch_size) else \
            make_batch(warmup_batch_size, image_size, num_classes, seed,
                       channels)

        params = dict(
            backbone=sum(p.numel() for p in model.backbone.parameters()),
            head=sum(p.numel() for p in model.head.parameters()),
            aux=sum(p.numel() for p in model.aux_heads.parameters()))
        params['network'] = params['backbone'] + params['head']
        params['total'] = params['network'] + params['aux']
        forward = count_forward_flops(model, image_size).to_dict()
        step_flops = count_train_step_flops(model, warmup_data, wrapper)
        for _ in range(warmup - 1):
            model.train_step(warmup_data, wrapper)
        del warmup_data
        _sync(device)

        memory: Dict[str, Any] = dict(
            rss_peak_bytes=None, cuda_peak_bytes=None)
        if device.type == 'cpu' and measure_rss:
            gc.collect()
            memory['rss_before_bytes'] = rss_bytes()
            reset_peak_rss()
            model.train_step(data, wrapper)
            memory['rss_peak_bytes'] = peak_rss_bytes()
        memory.update(peak_bytes=None, peak_trace=[])
        if measure_live or meta:
            gc.collect()
            # heads resting in host memory (model.aux_head_offload) are
            # not what the compute device holds, unless the compute device
            # is the host's own memory (host='cpu' on the CPU; files are
            # mapped but not resident)
            offload = model.aux_head_offload
            elsewhere = offload is not None and (
                offload.in_files or device.type != offload.host.type)
            tracker = LiveTensorTracker(
                model, wrapper.optimizer,
                exclude=offload.host_tensors() if elsewhere else None)
            with tracker:
                model.train_step(data, wrapper)
            report = tracker.report
            memory.update(
                peak_bytes=report.peak_bytes,
                peak_by_kind=dict(report.peak_by_kind),
                peak_activation_bytes=report.peak_activation_bytes,
                baseline_bytes=report.baseline_bytes,
                peak_trace=report.peak_trace[:trace_limit])
            del tracker, report
        if device.type == 'cuda':
            gc.collect()
            torch.cuda.reset_peak_memory_stats(device)
        self.model, self.wrapper, self.data = model, wrapper, data
        self.result = dict(
            rule=spec.name,
            config=spec.config,
            base=spec.base,
            options=list(spec.options),
            optim_wrapper=type(wrapper).__name__,
            num_modules=model.num_modules,
            num_aux=model.num_aux,
            params=params,
            flops=dict(
                unit='FLOPs per image (2 per multiply-add)',
                forward=forward,
                train_step=step_flops,
                train_step_macs=step_flops / 2),
            memory=memory,
            time=None,
            build_seconds=build_time)

    def time_iteration(self) -> float:
        """Run and time one training iteration (not on the meta device).

        Returns:
            float: Its seconds.
        """
        if self.device.type == 'meta':
            raise InputError('the meta device computes nothing to time')
        _sync(self.device)
        start = time.perf_counter()
        self.model.train_step(self.data, self.wrapper)
        _sync(self.device)
        self.times.append(time.perf_counter() - start)
        return self.times[-1]

    def finish(self) -> Dict[str, Any]:
        """The measured figures; frees the model.

        Returns:
            dict: See :func:`measure_rule`.
        """
        result = self.result
        if self.device.type == 'cuda' and self.times:
            result['memory']['cuda_peak_bytes'] = int(
                torch.cuda.max_memory_allocated(self.device))
        if self.times:
            result['time'] = _timing(self.times, self.batch_size)
        self.model = self.wrapper = self.data = None
        gc.collect()
        if self.device.type == 'cuda':
            torch.cuda.empty_cache()
        return result


def measure_rule(spec: RuleSpec,
                 device: torch.device,
                 batch_size: int,
                 image_size: int,
                 iters: int = 3,
                 **kwargs) -> Dict[str, Any]:
    """Build, train and measure one rule.

    The order: the warm-up iterations (the first also counts the
    training-step FLOPs), then on CPU one iteration for the peak resident
    set, one under the live-tensor tracker, then ``iters`` timed
    iterations. On the ``meta`` device only the tracked iteration runs
    after the warm-up (no time, no resident set).

    Args:
        spec (RuleSpec): The rule.
        device (torch.device): ``cpu``, ``cuda`` or ``meta``.
        batch_size (int): Images per iteration.
        image_size (int): Square crop size.
        iters (int): Timed iterations (0: none). Defaults to 3.
        **kwargs: The other arguments of :class:`RuleRun`.

    Returns:
        dict: ``rule``, ``config``, ``options``, ``optim_wrapper``,
        ``num_modules``, ``params``, ``flops``, ``memory`` (``peak_bytes``
        and its split, ``peak_trace``, ``rss_peak_bytes``,
        ``cuda_peak_bytes``), ``time`` (None without timed iterations).
    """
    run = RuleRun(spec, device, batch_size, image_size, **kwargs)
    for _ in range(0 if device.type == 'meta' else iters):
        run.time_iteration()
    return run.finish()


def _get(result: Dict[str, Any], *keys: str) -> Optional[float]:
    """``result[k0][k1]...``, or None where a level is missing."""
    value: Any = result
    for key in keys:
        if not isinstance(value, dict) or value.get(key) is None:
            return None
        value = value[key]
    return value


def _ratio(a: Optional[float], b: Optional[float]) -> Optional[float]:
    return None if a is None or not b else a / b


def add_ratios(results: List[Dict[str, Any]]) -> Optional[str]:
    """Add ratios to the reference rule (plain BP, else the first rule).

    Adds ``ratios`` to every result: ``memory`` (live tensors), ``rss``
    (peak resident set), ``cuda_memory``, ``time`` (median),
    ``forward_flops``, ``train_flops`` and ``time_per_flop`` (time ratio /
    training-FLOPs ratio); None where a figure was not measured.

    Args:
        results (list[dict]): Results of :func:`measure_rule`.

    Returns:
        str | None: The name of the reference rule.
    """
    if not results:
        return None
    ref = next((r for r in results if r['base'] == 'bp'
                and not r['options']), results[0])
    for result in results:
        time_ratio = _ratio(
            _get(result, 'time', 'median'), _get(ref, 'time', 'median'))
        train = _ratio(
            _get(result, 'flops', 'train_step'),
            _get(ref, 'flops', 'train_step'))
        result['ratios'] = dict(
            reference=ref['rule'],
            memory=_ratio(
                _get(result, 'memory', 'peak_bytes'),
                _get(ref, 'memory', 'peak_bytes')),
            rss=_ratio(
                _get(result, 'memory', 'rss_peak_bytes'),
                _get(ref, 'memory', 'rss_peak_bytes')),
            cuda_memory=_ratio(
                _get(result, 'memory', 'cuda_peak_bytes'),
                _get(ref, 'memory', 'cuda_peak_bytes')),
            time=time_ratio,
            forward_flops=_ratio(
                _get(result, 'flops', 'forward', 'total_flops'),
                _get(ref, 'flops', 'forward', 'total_flops')),
            train_flops=train,
            time_per_flop=_ratio(time_ratio, train))
    return ref['rule']
