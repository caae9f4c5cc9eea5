"""Tests of LocalPipelineParallel: pipelined training equals sequential.

The Runner-level test trains the same tiny ImageNet-style job (AugLocal
heads on a CIFAR ResNet-20, K = 10, real data loader, warm-up + cosine
schedule, checkpoints every 3 iterations, one validation with the
per-module accuracy, the backbone export) sequentially in one process and
as a 2-stage pipeline in two gloo processes, and requires the checkpoints
(weights, buffers, optimizer state), the validation metrics and the
exported backbone to be equal bit for bit. Each process uses one intra-op
thread, so the floating-point sums run in the same order. Checkpoints then
cross over: a pipelined checkpoint resumed without the pipeline, and a
sequential one resumed in the pipeline, both end where the uninterrupted
run ends.

The tests that start processes take tens of seconds, most of it the start
of the spawned interpreters (torch, mmengine) and of the Runner; the
models and the runs themselves are tiny.
"""
import copy
import functools
import itertools
import os
import os.path as osp
import signal
from typing import Dict

import pytest
import torch
import torch.distributed as dist
from common_utils import (
    NUM_CLASSES,
    TINY_TEST_PIPELINE,
    TINY_TRAIN_PIPELINE,
    assert_same_state,
    build_ddp_model,
    make_batch,
    run_gloo_processes,
    sgd,
    tiny_auglocal_model,
)
from mmengine.hooks import Hook

import auglocal_det  # noqa: F401  (registers the components)
from auglocal_det.engine.hooks import EXIT_PREEMPTED
from auglocal_det.engine.model_wrappers import (
    LocalPipelineParallel,
    PipelineStoppedError,
    balance_stages,
)
from auglocal_det.engine.optim_wrappers import LocalOptimWrapper
from auglocal_det.errors import InputError
from auglocal_det.registry import MODELS

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CLASSES = ('circle', 'cross', 'square', 'triangle')
MAX_ITERS = 6  # one epoch of 24 images in batches of 4

MODEL = tiny_auglocal_model(num_classes=len(CLASSES))


def job_config(data_root: str, work_dir: str, pipeline: bool,
               resume_from: str = None) -> dict:
    """The tiny job, sequential or as a 2-stage pipeline."""
    from mmengine.config import Config
    base = Config.fromfile(
        osp.join(ROOT, 'configs/_base_/schedules/'
                 'imagenet_bs1024_sgd_cos_200e.py'))
    runtime = Config.fromfile(
        osp.join(ROOT, 'configs/_base_/default_runtime.py'))
    cfg = Config(dict(runtime.to_dict(), **base.to_dict()))
    train_pipeline = TINY_TRAIN_PIPELINE
    test_pipeline = TINY_TEST_PIPELINE
    sampler = dict(type='DefaultSampler', shuffle=True)
    if pipeline:
        sampler = dict(type='PipelineSampler', num_stages=2, shuffle=True)
    cfg.merge_from_dict(
        dict(
            default_scope='mmengine',
            work_dir=work_dir,
            model=MODEL,
            train_dataloader=dict(
                batch_size=4,
                num_workers=0,
                persistent_workers=False,
                sampler=sampler,
                collate_fn=dict(type='default_collate'),
                dataset=dict(
                    type='ImageNet', data_root=data_root, split='train',
                    classes=CLASSES, pipeline=train_pipeline)),
            val_dataloader=dict(
                batch_size=3,
                num_workers=0,
                persistent_workers=False,
                sampler=dict(type='DefaultSampler', shuffle=False),
                collate_fn=dict(type='default_collate'),
                dataset=dict(
                    type='ImageNet', data_root=data_root, split='val',
                    classes=CLASSES, pipeline=test_pipeline)),
            val_evaluator=[
                dict(type='Accuracy', topk=(1, )),
                dict(type='LayerwiseAccuracy')
            ],
            val_cfg=dict(type='ValLoop'),
            train_cfg=dict(
                type='ResumableEpochBasedTrainLoop', max_epochs=1,
                val_interval=1),
            optim_wrapper=dict(optimizer=dict(lr=0.05)),
            param_scheduler=[
                dict(type='LinearLR', start_factor=0.1, by_epoch=False,
                     begin=0, end=4),
                dict(type='CosineAnnealingLR', T_max=1, by_epoch=True,
                     begin=0, end=1, convert_to_iter_based=True),
            ],
            default_hooks=dict(
                logger=dict(interval=1),
                checkpoint=dict(interval=3, by_epoch=False,
                                max_keep_ckpts=3)),
            custom_hooks=[dict(type='ExportBackboneHook', torchvision=False)],
            log_processor=dict(window_size=1),
            randomness=dict(seed=0, deterministic=True),
            launcher='pytorch' if pipeline else 'none'))
    cfg.test_dataloader = cfg.test_evaluator = cfg.test_cfg = None
    if pipeline:
        cfg.model_wrapper_cfg = dict(type='LocalPipelineParallel',
                                     num_stages=2)
        cfg.custom_hooks.append(dict(type='LocalPipelineHook'))
    if resume_from:
        cfg.resume, cfg.load_from = True, resume_from
    return cfg


def _run_job(rank: int, data_root: str, work_dir: str, pipeline: bool,
             resume_from: str = None) -> dict:
    """Body of one process: run the job, return rank 0's metrics."""
    from auglocal_det.engine.hooks import ExportBackboneHook
    from auglocal_det.engine.runner import LocalRunner
    runner = LocalRunner.from_cfg(
        job_config(data_root, work_dir, pipeline, resume_from))
    runner.train()
    export = [h for h in runner.hooks if isinstance(h, ExportBackboneHook)]
    return dict(metrics=export[0].last_metrics)


def run_job(tmp: str, name: str, data_root: str, pipeline: bool,
            resume_from: str = None) -> Dict[str, object]:
    work_dir = osp.join(tmp, name)
    os.makedirs(work_dir)
    results = run_gloo_processes(
        functools.partial(_run_job, data_root=data_root, work_dir=work_dir,
                          pipeline=pipeline, resume_from=resume_from),
        2 if pipeline else 1, work_dir)
    return dict(work_dir=work_dir, metrics=results[0]['metrics'])


def load(work_dir: str, name: str) -> dict:
    return torch.load(osp.join(work_dir, name), map_location='cpu',
                      weights_only=False)


def assert_same_checkpoint(path: str, ref_path: str) -> None:
    ckpt, ref = torch.load(path, weights_only=False), torch.load(
        ref_path, weights_only=False)
    assert list(ckpt['state_dict']) == list(ref['state_dict'])
    for name, value in ref['state_dict'].items():
        assert torch.equal(ckpt['state_dict'][name], value), name
    state, ref_state = ckpt['optimizer']['state'], ref['optimizer']['state']
    assert sorted(state) == sorted(ref_state)
    for index, entry in ref_state.items():
        for key, value in entry.items():
            assert torch.equal(state[index][key], value), (index, key)
    assert ckpt['optimizer']['param_groups'] == ref['optimizer'][
        'param_groups']
    assert ckpt['meta']['iter'] == ref['meta']['iter']


@pytest.fixture(scope='module')
def data_root(tmp_path_factory) -> str:
    from auglocal_det.testing import generate_imagenet_shapes
    root = str(tmp_path_factory.mktemp('data') / 'tiny_imagenet')
    generate_imagenet_shapes(
        root, num_train_per_class=6, num_val_per_class=3, image_size=20,
        classes=CLASSES, progress=False)
    return root


@pytest.fixture(scope='module')
def sequential(data_root, tmp_path_factory):
    return run_job(str(tmp_path_factory.mktemp('seq')), 'run', data_root,
                   pipeline=False)


@pytest.mark.timeout(300)
def test_pipeline_job_equals_sequential(sequential, data_root, tmp_path):
    piped = run_job(str(tmp_path), 'pipe', data_root, pipeline=True)
    for name in ('iter_3.pth', f'iter_{MAX_ITERS}.pth'):
        assert_same_checkpoint(
            osp.join(piped['work_dir'], name),
            osp.join(sequential['work_dir'], name))
    metrics = piped['metrics']
    assert metrics == sequential['metrics']
    assert 'aux_top1/l08' in metrics  # every head's accuracy came back
    exported = torch.load(
        osp.join(piped['work_dir'], 'export', 'backbone.pth'),
        weights_only=False)
    ref = torch.load(
        osp.join(sequential['work_dir'], 'export', 'backbone.pth'),
        weights_only=False)
    for name, value in ref['state_dict'].items():
        assert torch.equal(exported['state_dict'][name], value), name

    # a pipelined checkpoint resumed without the pipeline
    resumed = run_job(
        str(tmp_path), 'resumed_seq', data_root, pipeline=False,
        resume_from=osp.join(piped['work_dir'], 'iter_3.pth'))
    assert_same_checkpoint(
        osp.join(resumed['work_dir'], f'iter_{MAX_ITERS}.pth'),
        osp.join(sequential['work_dir'], f'iter_{MAX_ITERS}.pth'))


@pytest.mark.timeout(300)
def test_sequential_checkpoint_resumed_in_pipeline(sequential, data_root,
                                                   tmp_path):
    resumed = run_job(
        str(tmp_path), 'resumed_pipe', data_root, pipeline=True,
        resume_from=osp.join(sequential['work_dir'], 'iter_3.pth'))
    assert_same_checkpoint(
        osp.join(resumed['work_dir'], f'iter_{MAX_ITERS}.pth'),
        osp.join(sequential['work_dir'], f'iter_{MAX_ITERS}.pth'))
    assert resumed['metrics'] == sequential['metrics']


def _best_job(rank: int, data_root: str, work_dir: str) -> dict:
    """The pipelined job keeping only the best checkpoint: validation at
    the end of the epoch (iteration 6) is not a checkpoint iteration."""
    from auglocal_det.engine.runner import LocalRunner
    cfg = job_config(data_root, work_dir, True)
    cfg.default_hooks.checkpoint.update(
        interval=4, save_last=False, save_best='accuracy/top1',
        rule='greater')
    LocalRunner.from_cfg(cfg).train()
    return {}


@pytest.mark.timeout(300)
def test_pipeline_best_checkpoint_holds_the_whole_network(
        sequential, data_root, tmp_path):
    work_dir = str(tmp_path / 'best')
    os.makedirs(work_dir)
    run_gloo_processes(
        functools.partial(_best_job, data_root=data_root,
                          work_dir=work_dir), 2, work_dir)
    ref = osp.join(sequential['work_dir'], f'iter_{MAX_ITERS}.pth')
    best = load(work_dir, f'best_accuracy_top1_iter_{MAX_ITERS}.pth')
    for name, value in load(*osp.split(ref))['state_dict'].items():
        assert torch.equal(best['state_dict'][name], value), name
    # MMEngine writes the iteration's full checkpoint again after a new
    # best one (to record it)
    assert_same_checkpoint(osp.join(work_dir, f'iter_{MAX_ITERS}.pth'), ref)


class _SignalAt(Hook):
    """Send SIGUSR1 to this process after iteration ``at`` (1-based)."""

    priority = 'HIGHEST'

    def __init__(self, at: int) -> None:
        self.at = at

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None):
        if runner.iter + 1 == self.at:
            os.kill(os.getpid(), signal.SIGUSR1)


def _preempted_job(rank: int, data_root: str, work_dir: str) -> dict:
    """The pipelined job; rank 1 alone is signalled after iteration 4."""
    from auglocal_det.engine.hooks import TrainingPreempted
    from auglocal_det.engine.runner import LocalRunner
    runner = LocalRunner.from_cfg(job_config(data_root, work_dir, True))
    if rank == 1:
        runner.register_hook(_SignalAt(4))
    code = None
    try:
        runner.train()
    except TrainingPreempted as exc:
        code = exc.code
    # the parameters this rank holds, and those of its stage
    held = (sum(not p.is_meta for p in runner.model.parameters()),
            len(list(runner.model.stage_module.parameters())))
    return dict(code=code, held=held)


@pytest.mark.timeout(300)
def test_preempted_pipeline_saves_the_whole_network(sequential, data_root,
                                                    tmp_path):
    """A pre-emption signal to one stage stops both after the same
    iteration with a checkpoint of the whole network, which a sequential
    run resumes to the uninterrupted run's end."""
    work_dir = str(tmp_path / 'preempted')
    os.makedirs(work_dir)
    results = run_gloo_processes(
        functools.partial(_preempted_job, data_root=data_root,
                          work_dir=work_dir), 2, work_dir)
    assert [r['code'] for r in results] == [EXIT_PREEMPTED] * 2
    # rank 0 took the whole network for the checkpoint; rank 1 its stage
    num_params = len(list(MODELS.build(MODEL).parameters()))
    assert results[0]['held'][0] == num_params
    assert results[1]['held'][0] == results[1]['held'][1] < num_params
    resumed = run_job(
        str(tmp_path), 'resumed_seq', data_root, pipeline=False,
        resume_from=osp.join(work_dir, 'iter_4.pth'))
    assert_same_checkpoint(
        osp.join(resumed['work_dir'], f'iter_{MAX_ITERS}.pth'),
        osp.join(sequential['work_dir'], f'iter_{MAX_ITERS}.pth'))


def _holdings(model: torch.nn.Module, optimizer: torch.optim.Optimizer,
              owned: set, grads: list) -> dict:
    """What this rank holds, by name: the materialised parameters and
    buffers, the parameters with a gradient at the last optimizer step
    (``grads``) and those with optimizer state, with their element
    counts."""
    names = {id(p): n for n, p in model.named_parameters()}
    materialised = [
        n for n, t in itertools.chain(model.named_parameters(),
                                      model.named_buffers())
        if not t.is_meta
    ]
    numel = dict(itertools.chain(
        ((n, t.numel()) for n, t in model.named_parameters()),
        ((n, t.numel()) for n, t in model.named_buffers())))
    optim = [names[id(p)] for p in optimizer.state]
    optim_numel = sum(
        v.numel() for state in optimizer.state.values()
        for v in state.values() if torch.is_tensor(v) and not v.is_meta)
    return dict(
        materialised=sorted(materialised), grads=sorted(grads),
        optim=sorted(optim), owned=sorted(owned),
        materialised_numel=sum(numel[n] for n in materialised),
        optim_numel=optim_numel,
        owned_param_numel=sum(
            numel[n] for n, _ in model.named_parameters() if n in owned))


def _ownership(rank: int) -> dict:
    """3 pipelined iterations, the state gathered on rank 0, 1 more."""
    torch.manual_seed(0)
    model = MODELS.build(dict(MODEL, num_classes=NUM_CLASSES))
    pipe = LocalPipelineParallel(
        model, num_stages=2, balance=[6, 4], standalone=True)
    optimizer = sgd(model)
    optim_wrapper = LocalOptimWrapper(optimizer)
    grads = []  # the parameters with a gradient at the last step
    optimizer.register_step_pre_hook(lambda *_: grads.__setitem__(
        slice(None),
        [n for n, p in model.named_parameters() if p.grad is not None]))
    before = _holdings(model, optimizer, set(), grads)
    owned = {
        n for n, t in itertools.chain(model.named_parameters(),
                                      model.named_buffers())
        if any(t is o for o in itertools.chain(
            pipe.stage_module.parameters(), pipe.stage_module.buffers()))
    }
    for it in range(3):
        pipe.train_step(make_batch(it), optim_wrapper)
    pipe.flush()
    training = _holdings(model, optimizer, owned, grads)
    pipe.gather_state(optim_wrapper)
    gathered = _holdings(model, optimizer, owned, grads)
    state = {k: v.clone() for k, v in model.state_dict().items()
             } if rank == 0 else None
    pipe.train_step(make_batch(3), optim_wrapper)
    pipe.flush()
    again = _holdings(model, optimizer, owned, grads)
    pipe.drain_logs()
    pipe.close()
    return dict(before=before, training=training, gathered=gathered,
                again=again, state=state)


@pytest.mark.timeout(120)
def test_stage_holds_only_its_modules(tmp_path):
    """Each stage's weights, buffers, gradients and optimizer state are
    its own modules' only (the others' are on the meta device); rank 0
    holds the whole network after gathering, equal to sequential training,
    and releases it again in its next iteration."""
    results = run_gloo_processes(_ownership, 2, str(tmp_path))
    model = MODELS.build(dict(MODEL, num_classes=NUM_CLASSES))
    names = sorted(n for n, _ in itertools.chain(model.named_parameters(),
                                                 model.named_buffers()))
    params = sorted(n for n, _ in model.named_parameters())
    total = sum(t.numel() for t in itertools.chain(model.parameters(),
                                                   model.buffers()))
    owned = [set(r['training']['owned']) for r in results]
    assert not owned[0] & owned[1]
    # every rank keeps the data preprocessor's mean and std (not saved)
    common = {'data_preprocessor.mean', 'data_preprocessor.std'}
    assert owned[0] | owned[1] | common == set(names)
    assert not set(model.state_dict()) - owned[0] - owned[1]
    for rank, result in enumerate(results):
        # the whole network until the first iteration
        assert result['before']['materialised'] == names
        phases = ('training', 'gathered', 'again')
        for phase in phases[::2] if rank == 0 else phases:
            held = result[phase]
            assert held['materialised'] == sorted(owned[rank] | common), \
                phase
            assert held['grads'] == sorted(owned[rank] & set(params))
            # SGD with momentum: one buffer per owned parameter
            assert held['optim'] == held['grads']
            assert held['optim_numel'] == held['owned_param_numel']
            assert held['materialised_numel'] < total
    common_numel = sum(b.numel() for b in model.data_preprocessor.buffers())
    assert sum(r['training']['materialised_numel']
               for r in results) == total + common_numel
    assert results[0]['gathered']['materialised'] == names
    assert results[0]['gathered']['optim'] == params
    torch.manual_seed(0)
    ref = MODELS.build(dict(MODEL, num_classes=NUM_CLASSES))
    optim_wrapper = LocalOptimWrapper(sgd(ref))
    for it in range(3):
        ref.train_step(make_batch(it), optim_wrapper)
    for name, value in ref.state_dict().items():
        assert torch.equal(results[0]['state'][name], value), name


def _diverge(rank: int, bad_iter: int) -> dict:
    """Train 4 iterations; stage 1's head weights turn NaN at bad_iter."""
    torch.manual_seed(0)
    model = MODELS.build(dict(MODEL, num_classes=NUM_CLASSES))
    pipe = LocalPipelineParallel(
        model, num_stages=2, balance=[6, 4], standalone=True)
    optim_wrapper = LocalOptimWrapper(sgd(model))
    try:
        for it in range(4):
            if it == bad_iter and pipe.stage == 1:
                with torch.no_grad():
                    model.head.fc.weight.fill_(float('nan'))
            pipe.train_step(make_batch(it), optim_wrapper)
        pipe.close()
    except Exception as exc:  # noqa: BLE001  (the test inspects it)
        return dict(type=type(exc).__name__, message=str(exc))
    return dict(type=None, message='')


@pytest.mark.timeout(120)
def test_nonfinite_loss_stops_every_rank(tmp_path):
    results = run_gloo_processes(
        functools.partial(_diverge, bad_iter=1), 2, str(tmp_path))
    assert [r['type'] for r in results] == ['TrainingDivergedError'] * 2
    assert 'local module 9' in results[1]['message']
    assert 'iteration 2' in results[1]['message']
    # rank 0 names the rank that failed and repeats its reason
    assert 'rank 1 (stage 1' in results[0]['message']
    assert 'local module 9' in results[0]['message']


def _fail(rank: int) -> dict:
    """Stage 0 fails with a bug in its second iteration (after checking
    that a pipeline under a Runner needs LocalPipelineHook)."""
    torch.manual_seed(0)
    model = MODELS.build(dict(MODEL, num_classes=NUM_CLASSES))
    unhooked = LocalPipelineParallel(model, num_stages=2)
    with pytest.raises(InputError, match="type='LocalPipelineHook'"):
        unhooked.train_step(make_batch(0), LocalOptimWrapper(sgd(model)))
    unhooked.close()
    pipe = LocalPipelineParallel(model, num_stages=2, standalone=True)
    optim_wrapper = LocalOptimWrapper(sgd(model))
    try:
        for it in range(4):
            batch = make_batch(it)
            if it == 1 and rank == 0:
                batch['inputs'] = batch['inputs'][:2]  # labels of 4
            pipe.train_step(batch, optim_wrapper)
        pipe.close()
    except Exception as exc:  # noqa: BLE001
        return dict(type=type(exc).__name__, message=str(exc))
    return dict(type=None, message='')


@pytest.mark.timeout(120)
def test_failure_on_one_rank_stops_the_other(tmp_path):
    results = run_gloo_processes(_fail, 2, str(tmp_path))
    assert results[0]['type'] not in (None, 'PipelineStoppedError')
    assert results[1]['type'] == PipelineStoppedError.__name__
    assert 'rank 0 (stage 0' in results[1]['message']


def test_refuses_what_cannot_be_pipelined():
    bp = MODELS.build(dict(MODEL, rule='bp', aux_head=None))
    with pytest.raises(InputError, match="rule='bp' cannot be pipelined"):
        LocalPipelineParallel(bp, num_stages=2)
    mlaan = MODELS.build(
        dict(type='MLAANImageClassifier',
             backbone=dict(type='LocalCifarResNet', depth=32,
                           base_channels=4),
             num_classes=4, image_size=16, span=2))
    with pytest.raises(InputError, match='cascaded stream'):
        LocalPipelineParallel(mlaan, num_stages=2)
    offload = MODELS.build(dict(MODEL, aux_head_offload=dict(host='cpu')))
    with pytest.raises(InputError, match='aux_head_offload=None'):
        LocalPipelineParallel(offload, num_stages=2)
    model = MODELS.build(MODEL)
    with pytest.raises(InputError, match='more than the model has'):
        LocalPipelineParallel(model, num_stages=11)
    assert not dist.is_initialized()
    with pytest.raises(InputError, match='--launcher pytorch'):
        LocalPipelineParallel(model, num_stages=2)


def test_balance_stages():
    assert balance_stages([1, 1, 1, 1], 2) == ([2, 2], 1.0)
    sizes, efficiency = balance_stages([4, 1, 1, 1, 1], 2)
    assert sizes == [1, 4] and efficiency == 1.0
    costs = [3, 1, 1, 1, 2, 2]
    sizes, efficiency = balance_stages(costs, 3)
    assert len(sizes) == 3 and sum(sizes) == 6 and min(sizes) >= 1
    ends = [sum(sizes[:i + 1]) for i in range(3)]
    assert max(sum(costs[a:b]) for a, b in zip([0] + ends, ends)) == 4
    assert efficiency == pytest.approx(10 / 12)
    assert balance_stages([5, 1], 2) == ([1, 1], 0.6)


def test_module_times_leave_the_model_as_it_was():
    from auglocal_det.engine.profiling import module_times
    model = MODELS.build(MODEL)
    model.train()
    before = copy.deepcopy(model.state_dict())
    rng = torch.get_rng_state()
    times = module_times(model, batch_size=2)
    assert len(times) == model.num_modules and min(times) > 0
    assert torch.equal(torch.get_rng_state(), rng)
    for name, value in model.state_dict().items():
        assert torch.equal(value, before[name]), name
    assert all(p.grad is None for p in model.parameters())
    assert model.training


def test_pipeline_sampler_shards_over_replicas():
    from auglocal_det.registry import DATA_SAMPLERS
    dataset = list(range(10))
    sampler = DATA_SAMPLERS.build(
        dict(type='PipelineSampler', num_stages=1, shuffle=False, seed=0),
        default_args=dict(dataset=dataset))
    assert list(sampler) == dataset and len(sampler) == 10
    with pytest.raises(InputError, match='num_stages=2 must divide'):
        DATA_SAMPLERS.build(
            dict(type='PipelineSampler', num_stages=2, seed=0),
            default_args=dict(dataset=dataset))


def _replicas(rank: int) -> dict:
    """2 stages x 2 replicas, each replica on its half of a batch of 4."""
    model = build_ddp_model(dict(MODEL, num_classes=NUM_CLASSES), 0)
    del model.unused  # a parameter no loss reaches; no stage owns it
    # stages balanced by times every rank measures: one partition for all
    pipe = LocalPipelineParallel(model, num_stages=2, balance='time',
                                 profile_batch_size=2, standalone=True)
    optim_wrapper = LocalOptimWrapper(sgd(model))
    half = slice(2 * pipe.replica, 2 * pipe.replica + 2)
    for it in range(3):
        batch = make_batch(it)
        pipe.train_step(
            dict(inputs=batch['inputs'][half],
                 data_samples=batch['data_samples'][half]), optim_wrapper)
    pipe.gather_state(optim_wrapper)
    pipe.drain_logs()
    pipe.close()
    return dict(state=model.state_dict())


@pytest.mark.timeout(200)
def test_replicated_stages_equal_sequential_on_the_global_batch(tmp_path):
    """Each stage's gradients are averaged over its replicas (BN frozen so
    that the batch split cannot change the result, as in the data-parallel
    tests)."""
    results = run_gloo_processes(_replicas, 4, str(tmp_path))
    ref = build_ddp_model(dict(MODEL, num_classes=NUM_CLASSES), 0)
    del ref.unused
    optim_wrapper = LocalOptimWrapper(sgd(ref))
    for it in range(3):
        ref.train_step(make_batch(it), optim_wrapper)
    model = build_ddp_model(dict(MODEL, num_classes=NUM_CLASSES), 0)
    del model.unused
    model.load_state_dict(results[0]['state'])
    assert_same_state(model, ref, check_keys=True)
