"""Tests of the live-tensor memory tracker."""
import torch
import torch.nn as nn

import auglocal_det  # noqa: F401  (registers the components)
from auglocal_det.engine.optim_wrappers import LocalOptimWrapper
from auglocal_det.registry import MODELS
from auglocal_det.structures import ClsDataSample
from auglocal_det.utils.memory import LiveTensorTracker, format_bytes

MiB = 1 << 20



def test_counts_storages_once_and_releases_them():
    tracker = LiveTensorTracker()
    with tracker:
        a = torch.empty(MiB // 4)  # 1 MiB
        view = a[10:].view(-1, 2)  # same storage: not counted again
        a.add_(1)  # in place: not counted again
        b = torch.zeros(MiB // 2)  # 2 MiB, peak = 3 MiB
        del a, b
        c = torch.ones(MiB // 8)  # 0.5 MiB; `view` keeps 1 MiB alive
        del c
    report = tracker.report
    assert report.baseline_bytes == 0
    assert report.peak_bytes == 3 * MiB
    assert report.peak_by_kind == dict(param=0, grad=0, optim=0,
                                       other=3 * MiB)
    assert report.end_bytes == MiB
    assert report.num_storages == 3
    del view
    assert format_bytes(3 * MiB) == '3.00 MiB'


def test_saved_tensors_live_until_backward():
    w = torch.randn(256, 256, requires_grad=True)
    x = torch.randn(1024, 256)
    tracker = LiveTensorTracker()
    with tracker:
        hidden = (x @ w).relu()  # 1 MiB, saved by relu and the matmul
        loss = (hidden @ w).sum()
        del hidden
        live = tracker.live_bytes
        loss.backward()
        after = tracker.live_bytes
    assert live >= MiB  # still held by the graph after `del hidden`
    assert after <= live - MiB + w.numel() * 4  # freed; w.grad created
    assert tracker.report.peak_bytes >= 2 * MiB  # matmul output + relu


def test_state_kinds():
    model = nn.Linear(512, 512)  # 1 MiB weight
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    param_bytes = sum(p.numel() * 4 for p in model.parameters())
    for it in range(2):
        tracker = LiveTensorTracker(model, optimizer)
        with tracker:
            model(torch.randn(8, 512)).sum().backward()
            optimizer.step()
        report = tracker.report
        # params, then params and momenta (the grads were set to None)
        assert report.baseline_bytes == param_bytes * (1 + it)
        assert report.peak_by_kind['param'] == param_bytes
        assert report.peak_by_kind['grad'] == param_bytes
        assert report.end_bytes == 3 * param_bytes  # params, grads, momenta
        # input and output (and scalars), never the gradient or momentum
        assert 2 * 8 * 512 * 4 <= report.peak_activation_bytes < 40 * 1024
        optimizer.zero_grad()


def _batch(num: int, size: int) -> dict:
    gen = torch.Generator().manual_seed(0)
    return dict(
        inputs=[
            torch.randint(0, 256, (3, size, size), dtype=torch.uint8,
                          generator=gen) for _ in range(num)
        ],
        data_samples=[ClsDataSample().set_gt_label(i % 5)
                      for i in range(num)])


def _measure(aux_head) -> LiveTensorTracker:
    torch.manual_seed(0)
    model = MODELS.build(
        dict(
            type='LocalImageClassifier',
            backbone=dict(type='LocalCifarResNet', depth=20,
                          base_channels=8),
            aux_head=aux_head,
            num_classes=5,
            image_size=32,
            rule='local' if aux_head else 'bp'))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    wrapper = LocalOptimWrapper(optimizer)
    data = _batch(8, 32)
    model.train_step(data, wrapper)  # warm-up: creates optimizer state
    tracker = LiveTensorTracker(model, optimizer)
    with tracker:
        model.train_step(data, wrapper)
    return tracker.report


def test_auglocal_needs_less_activation_memory_than_bp():
    """AugLocal (d=2) frees each module's graph before the next module
    runs, so its activation peak is one module plus one auxiliary net;
    back-propagation holds the activations of the whole network.

    Activations are compared without parameters, gradients and optimizer
    state, because the auxiliary nets add parameters (about 4x the
    backbone's here), which is a separate, reported cost. At this size
    (batch 8 at 32x32, 8 base channels) activations dominate and AugLocal's
    total peak is lower as well.
    """
    auglocal = _measure(dict(type='AugLocalAuxHead', depth=2))
    bp = _measure(None)
    assert auglocal.peak_activation_bytes < 0.6 * bp.peak_activation_bytes
    assert auglocal.peak_by_kind['other'] < bp.peak_by_kind['other']
    assert auglocal.peak_bytes < bp.peak_bytes
    assert auglocal.baseline_bytes > bp.baseline_bytes  # more parameters
