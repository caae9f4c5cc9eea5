"""Measure a locally trained classifier: the one place that does it.

The pipeline's stage balancing and the tools' FLOP counts and benchmarks
all measure through this module. :func:`make_batch` builds the synthetic
batch (as the data loader gives it), :func:`synthetic_batch` the same
batch as the classifier's generators take it. :func:`count_flops` counts
one call and :func:`module_profile` every local module and step.
:func:`time_steps` times every local step of one real iteration, and
:func:`module_times` does so on a copy of nothing, leaving the model as
it was.

FLOPs are counted by :class:`torch.utils.flop_counter.FlopCounterMode`:
two per multiply-add, matrix products and convolutions only.
"""
import time
from typing import Any, Dict, Iterator, List, Sequence, Tuple, Union

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

from auglocal_det.models.aux_heads import AuxBatch
from auglocal_det.structures import ClsDataSample

from .optim_wrappers import LocalOptimWrapper

__all__ = [
    'count_flops', 'image_hw', 'make_batch', 'synthetic_batch',
    'module_profile', 'time_steps', 'module_times'
]

ImageSize = Union[int, Sequence[int]]


def image_hw(image_size: ImageSize) -> Tuple[int, int]:
    """``(height, width)`` of a square size or a pair."""
    if isinstance(image_size, int):
        return image_size, image_size
    height, width = image_size
    return int(height), int(width)


def make_batch(batch_size: int,
               image_size: ImageSize,
               num_classes: int,
               seed: int = 0,
               in_channels: int = 3) -> dict:
    """A fixed synthetic batch: random uint8 images and labels.

    Args:
        batch_size (int): Images.
        image_size (int | Sequence[int]): Square size, or height and width.
        num_classes (int): Labels are drawn from ``range(num_classes)``.
        seed (int): Seed of its own generator (the global random
            generators are not used). Defaults to 0.
        in_channels (int): Image channels. Defaults to 3.

    Returns:
        dict: ``inputs`` (uint8 CHW tensors) and ``data_samples``
        (``ClsDataSample`` with ``gt_label``), as the data loader gives.
    """
    height, width = image_hw(image_size)
    gen = torch.Generator().manual_seed(seed)
    return dict(
        inputs=[
            torch.randint(
                0, 256, (in_channels, height, width),
                dtype=torch.uint8,
                generator=gen) for _ in range(batch_size)
        ],
        data_samples=[
            ClsDataSample().set_gt_label(
                int(torch.randint(0, num_classes, (1, ), generator=gen)))
            for _ in range(batch_size)
        ])


def synthetic_batch(model: nn.Module,
                    batch_size: int = 1,
                    image_size: Union[ImageSize, None] = None,
                    device: Union[str, torch.device, None] = None,
                    seed: int = 0) -> Tuple[torch.Tensor, AuxBatch]:
    """:func:`make_batch` for the classifier's generators.

    The images get the model's input channels
    (``backbone.local_layer_specs()[0].in_channels``) and the
    preprocessor's normalisation, on any device, ``'meta'`` included.

    Args:
        model (nn.Module): A ``LocalImageClassifier``.
        batch_size (int): Images. Defaults to 1.
        image_size (int | Sequence[int], optional): Crop size. Defaults to
            None: ``model.image_size``.
        device (str | torch.device, optional): Defaults to None: the
            device of the model's parameters.
        seed (int): Seed of the batch. Defaults to 0.

    Returns:
        tuple[Tensor, AuxBatch]: The inputs and what the heads read.
    """
    size = model.image_size if image_size is None else image_size
    param = next(model.parameters())
    device = param.device if device is None else torch.device(device)
    channels = model.backbone.local_layer_specs()[0].in_channels
    data = make_batch(batch_size, size, model.num_classes, seed, channels)
    inputs = torch.stack(data['inputs']).to(device=device, dtype=param.dtype)
    pre = model.data_preprocessor
    if getattr(pre, '_enable_normalize', False):
        inputs = (inputs - pre.mean.to(device)) / pre.std.to(device)
    return inputs, model.aux_batch(inputs, data['data_samples'])


def count_flops(fn, *args, **kwargs) -> Tuple[float, Any]:
    """FLOPs of one call of ``fn(*args, **kwargs)``.

    Args:
        fn (callable): Function or module to run.
        *args: Its positional arguments.
        **kwargs: Its keyword arguments.

    Returns:
        tuple[float, Any]: The FLOPs counted and what ``fn`` returned.
    """
    with FlopCounterMode(display=False) as counter:
        out = fn(*args, **kwargs)
    return float(counter.get_total_flops()), out


def _counted(iterator: Iterator[Any], flops: List[float]) -> Iterator[Any]:
    """Yield the items of ``iterator``, appending each one's FLOPs."""
    while True:
        count, item = count_flops(next, iterator, None)
        if item is None:
            return
        flops.append(count)
        yield item


@torch.no_grad()
def module_profile(model: nn.Module,
                   image_size: Union[ImageSize, None] = None,
                   batch_size: int = 1,
                   device: Union[str, torch.device, None] = None
                   ) -> Dict[str, Any]:
    """Per-image forward FLOPs and output size of every local module.

    Runs a :func:`synthetic_batch` through the classifier's generators
    (``local_steps`` and ``forward_modules``), in eval mode without
    autograd. Every module keeps its mode, and the global random
    generators are not used. On the ``'meta'`` device nothing is computed.

    Args:
        model (nn.Module): A ``LocalImageClassifier`` or a subclass.
        image_size (int | Sequence[int], optional): Crop size. Defaults to
            None: ``model.image_size``.
        batch_size (int): Images counted; the figures are divided by it.
            Defaults to 1.
        device (str | torch.device, optional): Device of the batch.
            Defaults to None: the device of the model's parameters.

    Returns:
        dict: ``step_flops`` (each local step: its modules' forward and
        its loss), ``step_indices`` (each step's last module),
        ``module_flops`` (module j alone), ``head_flops`` (the network's
        classifier), ``out_bytes`` (module j's output),
        ``network_params`` (backbone and classifier) and ``total_params``
        (with the auxiliary heads).
    """
    inputs, batch = synthetic_batch(model, batch_size, image_size, device)
    step_flops: List[float] = []
    module_flops: List[float] = []
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        steps = list(_counted(model.local_steps(inputs, batch), step_flops))
        feats = list(_counted(model.forward_modules(inputs), module_flops))
        head_flops, _ = count_flops(model.head, feats[-1])
    finally:  # module by module: some may be in eval mode on purpose
        for module, mode in modes:
            module.training = mode
    return dict(
        step_flops=[f / batch_size for f in step_flops],
        step_indices=[step.index for step in steps],
        module_flops=[f / batch_size for f in module_flops],
        head_flops=head_flops / batch_size,
        out_bytes=[
            f.numel() * f.element_size() // batch_size for f in feats
        ],
        network_params=sum(
            p.numel() for m in (model.backbone, model.head)
            for p in m.parameters()),
        total_params=sum(p.numel() for p in model.parameters()))


def _synchronize(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def time_steps(model: nn.Module, optim_wrapper: Any, inputs: torch.Tensor,
               batch: AuxBatch) -> Tuple[List[float], List[int], float]:
    """Time every local step of one real iteration (``run_iteration``).

    Args:
        model (nn.Module): A ``LocalImageClassifier``.
        optim_wrapper (LocalOptimWrapper): The iteration's wrapper; it
            steps as in training.
        inputs (Tensor): Preprocessed images.
        batch (AuxBatch): What the heads read.

    Returns:
        tuple: Seconds of every step's forward, loss and backward, the
        parameter count of every step, and the seconds after the last
        backward (the log and the optimizer update).
    """
    device = inputs.device
    times: List[float] = []
    numels: List[int] = []
    clock = [0.]

    def lap(step: Any) -> None:
        numels.append(sum(p.numel() for p in step.params))
        _synchronize(device)
        now = time.perf_counter()
        times.append(now - clock[0])
        clock[0] = now

    _synchronize(device)
    clock[0] = time.perf_counter()
    model.run_iteration(
        optim_wrapper, inputs=inputs, batch=batch, after_backward=lap)
    _synchronize(device)
    return times, numels, time.perf_counter() - clock[0]


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
                 image_size: Union[ImageSize, None] = None) -> List[float]:
    """Measured training seconds of every local step on this device.

    Times each step of the classifier's own iteration (:func:`time_steps`)
    on a :func:`synthetic_batch` (the last of ``iters`` iterations), plus
    the module's share of an optimizer update (its parameter count times
    the measured cost per parameter of an SGD update with momentum).
    Nothing of the model changes: the iteration's optimizer holds none of
    its parameters, the gradients are dropped, and the state (BatchNorm
    running statistics, EMA twins) is restored. The global random
    generators are left as they were.

    Args:
        model (nn.Module): A ``LocalImageClassifier``.
        batch_size (int): Images of the synthetic batch. Defaults to 8.
        iters (int): Iterations; the last one is timed. Defaults to 2.
        image_size (int | Sequence[int], optional): Crop size. Defaults to
            None: ``model.image_size``.

    Returns:
        list[float]: Seconds of step j, for j = 0 .. K - 1.
    """
    device = next(model.parameters()).device
    state = {
        name: value.detach().clone()
        for name, value in model.state_dict(keep_vars=True).items()
    }
    grads = [(p, p.grad) for p in model.parameters()]
    for p in model.parameters():
        p.grad = None
    per_element = _update_seconds_per_element(device)
    # steps nothing of the model: its optimizer holds a scratch tensor only
    wrapper = LocalOptimWrapper(
        torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.),
        check_finite=False)
    times: List[float] = []
    devices = [device.index or 0] if device.type == 'cuda' else []
    try:
        with torch.random.fork_rng(devices=devices):
            inputs, batch = synthetic_batch(model, batch_size, image_size)
            for _ in range(iters):
                seconds, numels, _ = time_steps(model, wrapper, inputs,
                                                batch)
                times = [
                    t + n * per_element for t, n in zip(seconds, numels)
                ]
                for p in model.parameters():
                    p.grad = None
    finally:
        with torch.no_grad():
            for name, value in model.state_dict(keep_vars=True).items():
                value.copy_(state[name])
        for p, grad in grads:
            p.grad = grad
    return times
