"""Tests of LocalDistributedDataParallel.

The main test trains the same model with 2 gloo processes (per-rank batch
2) and with 1 process (batch 4) and compares the weights. BatchNorm layers
normalise with per-process batch statistics in training mode, which differ
between a batch of 4 and two batches of 2 (that is intended: BN statistics
stay per process unless SyncBN is configured). To compare the gradient
synchronisation alone, every BN layer is put in eval mode with non-trivial
running statistics, so each sample is processed independently of the
others and the batch split cannot change the result.
"""
import copy
from typing import List
from unittest import mock

import pytest
import torch
import torch.distributed as dist
import torch.nn as nn
from common_utils import (
    ReductionLog,
    build_ddp_model,
    run_gloo_processes,
    sgd,
    wrap_local_ddp,
)
from mmengine.optim import OptimWrapper

import auglocal_det  # noqa: F401  (registers the components)
from auglocal_det.engine.model_wrappers import LocalDistributedDataParallel
from auglocal_det.engine.optim_wrappers import (
    LayerwiseLocalOptimWrapper,
    LocalOptimWrapper,
)
from auglocal_det.structures import ClsDataSample

WORLD_SIZE = 2
NUM_ITERS = 3
GLOBAL_BATCH = 4


def build_model(seed: int, **extra) -> nn.Module:
    """Tiny AugLocal (d=2) classifier with frozen, non-trivial BN.

    It has a parameter ``unused`` that no loss reaches (see
    ``build_ddp_model``); ``extra`` goes to the classifier's config.
    """
    return build_ddp_model(
        dict(
            type='LocalImageClassifier',
            backbone=dict(type='LocalCifarResNet', depth=20,
                          base_channels=8),
            aux_head=dict(type='AugLocalAuxHead', depth=2),
            num_classes=5,
            image_size=16,
            **extra),
        seed)


def make_batch(it: int, start: int = 0, stop: int = GLOBAL_BATCH) -> dict:
    gen = torch.Generator().manual_seed(1000 + it)
    inputs = [
        torch.randint(0, 256, (3, 16, 16), dtype=torch.uint8, generator=gen)
        for _ in range(GLOBAL_BATCH)
    ]
    labels = torch.randint(0, 5, (GLOBAL_BATCH, ), generator=gen).tolist()
    samples = [ClsDataSample().set_gt_label(y) for y in labels]
    return dict(inputs=inputs[start:stop], data_samples=samples[start:stop])


def train(model: nn.Module, step_model: nn.Module, rank: int = 0,
          world_size: int = 1) -> List[dict]:
    """NUM_ITERS plain iterations, then 2 with accumulative_counts=2."""
    per_rank = GLOBAL_BATCH // world_size
    reports = []
    log = ReductionLog(step_model)
    schedule = [(LocalOptimWrapper(sgd(model)), NUM_ITERS),
                (LocalOptimWrapper(sgd(model), accumulative_counts=2), 2)]
    it = 0
    for wrapper, num_iters in schedule:
        for _ in range(num_iters):
            data = make_batch(it, rank * per_rank, (rank + 1) * per_rank)
            step_model.train_step(data, wrapper)
            reports.append(log.report())
            it += 1
    return reports


def _worker(rank: int) -> dict:
    """One process of the gloo group (see ``run_gloo_processes``)."""
    model = build_model(seed=rank)  # rank 1 starts different
    reports = train(model, wrap_local_ddp(model), rank, WORLD_SIZE)
    return dict(state=model.state_dict(), reports=reports,
                unused_grad=model.unused.grad)


def test_two_processes_equal_one_process(tmp_path):
    results = run_gloo_processes(_worker, WORLD_SIZE, tmp_path)

    num_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        ref = build_model(seed=0)
        train(ref, ref)
    finally:
        torch.set_num_threads(num_threads)

    # replicas are identical, and equal single-process training
    for name, value in results[0]['state'].items():
        assert torch.equal(value, results[1]['state'][name]), name
        torch.testing.assert_close(
            value, ref.state_dict()[name], rtol=1e-5, atol=1e-6,
            msg=lambda m, n=name: f'{n}: {m}')
    assert all(r['unused_grad'] is None for r in results)

    # every trainable parameter reduced exactly once per synchronised
    # iteration; all but `unused` as soon as its module finished
    trainable = {n for n, p in ref.named_parameters() if p.requires_grad}
    num_modules = ref.num_modules
    for result in results:
        reports = result['reports']
        synced = reports[:NUM_ITERS] + [reports[-1]]
        for report in synced:
            assert set(report['counts']) == trainable
            assert set(report['counts'].values()) == {1}
            assert report['late'] == ['unused']
            assert report['num_buckets'] == num_modules + 1
        # the accumulation-only iteration does not communicate
        assert reports[NUM_ITERS] == {}


def _layerwise_worker(rank: int) -> dict:
    """The same replicas trained with the one step at the end, with the
    per-module step and with it and the auxiliary heads resting in host
    memory; then an iteration whose last loss is NaN on rank 1 only."""
    per_rank = GLOBAL_BATCH // WORLD_SIZE
    states = {}
    for kind, offload in ((LocalOptimWrapper, None),
                          (LayerwiseLocalOptimWrapper, dict(host='cpu')),
                          (LayerwiseLocalOptimWrapper, None)):
        model = build_model(seed=rank, aux_head_offload=offload)
        step_model = wrap_local_ddp(model)
        wrapper = kind(sgd(model))
        for it in range(NUM_ITERS):
            data = make_batch(it, rank * per_rank, (rank + 1) * per_rank)
            step_model.train_step(data, wrapper)
        key = kind.__name__ + ('+offload' if offload else '')
        states[key] = copy.deepcopy(model.state_dict())
    before = copy.deepcopy(model.state_dict())
    if rank == 1:
        model.backbone.layer3[-1].register_forward_hook(
            lambda module, args, out: out * float('nan'))
    data = make_batch(NUM_ITERS, rank * per_rank, (rank + 1) * per_rank)
    try:
        step_model.train_step(data, wrapper)
        error = None
    except FloatingPointError as exc:
        error = str(exc)
    return dict(states=states, before=before, after=model.state_dict(),
                error=error, grads=[p.grad for p in model.parameters()])


def test_layerwise_step_under_data_parallel(tmp_path):
    """LayerwiseLocalOptimWrapper under LocalDistributedDataParallel
    updates each module once its all-reduce has finished: the same
    weights, bit for bit, as the one step at the end of the iteration,
    also with the auxiliary heads resting in host memory between uses."""
    results = run_gloo_processes(_layerwise_worker, WORLD_SIZE, tmp_path)
    for result in results:
        plain = result['states']['LocalOptimWrapper']
        for kind in ('LayerwiseLocalOptimWrapper',
                     'LayerwiseLocalOptimWrapper+offload'):
            layerwise = result['states'][kind]
            for name, value in plain.items():
                assert torch.equal(value, layerwise[name]), (kind, name)
    for name, value in results[0]['after'].items():
        assert torch.equal(value, results[1]['after'][name]), name
    # a NaN loss on one rank: every rank stops, naming the module, the
    # modules before it updated alike everywhere, that one nowhere
    for result in results:
        assert result['error'] and 'local module' in result['error']
        assert not torch.equal(result['after']['backbone.conv1.weight'],
                               result['before']['backbone.conv1.weight'])
        assert torch.equal(result['after']['head.fc.weight'],
                           result['before']['head.fc.weight'])
        assert all(g is None for g in result['grads'])


# ------------------------------------------------- single-process checks
class _DoneWork:

    def wait(self):
        return True

    def is_completed(self):
        return True


@pytest.fixture
def fake_dist():
    """A world of one process, without a process group."""
    with mock.patch.object(dist, 'is_initialized', return_value=True), \
            mock.patch.object(dist, 'get_world_size', return_value=1), \
            mock.patch.object(dist, 'broadcast'), \
            mock.patch.object(dist, 'all_reduce',
                              side_effect=lambda *a, **k: _DoneWork()):
        yield


class _TwoLayer(nn.Module):
    """Two local layers; ``train_step`` reports what the test says."""

    def __init__(self, report, finish=True):
        super().__init__()
        self.a = nn.Linear(3, 3)
        self.b = nn.Linear(3, 1)
        self.report = report
        self.finish = finish

    def train_step(self, data, optim_wrapper):
        h = self.a(data)
        reports = list(self.report(self)) or [None]
        optim_wrapper.backward(h.pow(2).mean(), params=reports[0])
        for params in reports[1:]:
            optim_wrapper.backward(torch.zeros(()), params=params)
        optim_wrapper.backward(self.b(h.detach()).mean())
        if self.finish:
            optim_wrapper.finish_iteration()
        return {}


def test_needs_process_group():
    with pytest.raises(RuntimeError, match='process group'):
        LocalDistributedDataParallel(nn.Linear(2, 2))


def test_bookkeeping(fake_dist):
    model = _TwoLayer(lambda m: [m.a.parameters()])
    ddp = LocalDistributedDataParallel(model)
    log = ReductionLog(ddp)
    wrapper = LocalOptimWrapper(sgd(model))
    ddp.train_step(torch.randn(4, 3), wrapper)
    report = log.report()
    assert report['late'] == ['b.weight', 'b.bias']
    assert report['num_buckets'] == 2
    # the hooks are registered for the step only
    assert not wrapper._pre_step_hooks and not wrapper._reducers
    assert not wrapper._grads_final_hooks

    twice = _TwoLayer(lambda m: [m.a.parameters(), [m.a.weight]])
    with pytest.raises(RuntimeError, match='twice'):
        LocalDistributedDataParallel(twice).train_step(
            torch.randn(4, 3), LocalOptimWrapper(sgd(twice)))

    alien = _TwoLayer(lambda m: [[nn.Parameter(torch.ones(1))]])
    with pytest.raises(RuntimeError, match='not a parameter'):
        LocalDistributedDataParallel(alien).train_step(
            torch.randn(4, 3), LocalOptimWrapper(sgd(alien)))

    unfinished = _TwoLayer(lambda m: [], finish=False)
    with pytest.raises(RuntimeError, match='finish_iteration'):
        LocalDistributedDataParallel(unfinished).train_step(
            torch.randn(4, 3), LocalOptimWrapper(sgd(unfinished)))

    with pytest.raises(TypeError, match='LocalOptimWrapper'):
        ddp.train_step(torch.randn(4, 3), OptimWrapper(sgd(model)))


def test_delegates_val_and_test_step(fake_dist):
    model = nn.Linear(2, 2)
    model.val_step = mock.Mock(return_value=['val'])
    model.test_step = mock.Mock(return_value=['test'])
    ddp = LocalDistributedDataParallel(model)
    assert ddp.val_step('x') == ['val'] and ddp.test_step('x') == ['test']
    x = torch.randn(1, 2)
    torch.testing.assert_close(ddp(x), model(x))
