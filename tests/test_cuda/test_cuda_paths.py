"""The CUDA paths of local training, on a small CIFAR ResNet-32.

Each test trains the AugLocal d = 2 ResNet-32 of
``configs/auglocal/auglocal-d2_r32_400e_cifar10.py`` on tiny batches
(16 px) for a few iterations, on the GPU. They are marked ``cuda``:
``pytest -m cuda`` selects them, and they are skipped where no CUDA device
is visible. ``tools/analysis_tools/gpu_benchmark.py`` runs them first.

cuDNN is put in deterministic mode without TF32, so that two runs of the
same computation give the same bits and a changed memory format stays
within float32 rounding.
"""
import gc
import math
import os.path as osp
import re
import subprocess
import sys

import pytest
import torch
import torch.distributed as dist
from common_utils import (
    IMAGE_SIZE,
    NUM_CLASSES,
    ROOT,
    ReductionLog,
    assert_same_state,
    build_cached,
    build_ddp_model,
    free_port,
    make_batch,
    sgd,
    wrap_local_ddp,
)
from mmengine.config import Config

import auglocal_det  # noqa: F401  (registers the components)
from auglocal_det.engine.optim_wrappers import (
    AmpLocalOptimWrapper,
    LayerwiseLocalOptimWrapper,
    LocalOptimWrapper,
)
from auglocal_det.testing import write_small_image_set

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(
        not torch.cuda.is_available(),
        reason='needs a CUDA device (torch.cuda.is_available() is False)'),
]

#: The paper config whose network the tests train.
CONFIG = 'auglocal/auglocal-d2_r32_400e_cifar10.py'
ITERS = 3
DEVICE = 'cuda'


@pytest.fixture(autouse=True)
def exact_cuda():
    """Deterministic cuDNN without TF32, restored afterwards."""
    saved = (torch.backends.cudnn.deterministic,
             torch.backends.cudnn.benchmark,
             torch.backends.cudnn.allow_tf32,
             torch.backends.cuda.matmul.allow_tf32)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    yield
    (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark,
     torch.backends.cudnn.allow_tf32,
     torch.backends.cuda.matmul.allow_tf32) = saved
    gc.collect()
    torch.cuda.empty_cache()


def _model_cfg(**extra) -> dict:
    """The config's model at the tests' classes and image size."""
    cfg = Config.fromfile(osp.join(ROOT, 'configs', CONFIG))
    model = cfg.model.to_dict()
    model.update(num_classes=NUM_CLASSES, image_size=IMAGE_SIZE, **extra)
    # the Runner merges the data set's normalisation into the model
    model['data_preprocessor'] = cfg.data_preprocessor.to_dict()
    return model


def _build(**extra) -> torch.nn.Module:
    """A fresh copy of the seeded model, on the GPU."""
    return build_cached(_model_cfg(**extra)).to(DEVICE)


def _train(model, wrapper, iters=ITERS):
    return [model.train_step(make_batch(it), wrapper) for it in range(iters)]


def _cpu_state(model):
    return {k: v.detach().cpu() for k, v in model.state_dict().items()}


def _state_tensors(model, optimizer):
    """Parameters, buffers and optimizer state tensors, one per storage."""
    tensors = list(model.parameters()) + list(model.buffers())
    for state in optimizer.state.values():
        tensors += [v for v in state.values() if torch.is_tensor(v)]
    unique = {}
    for tensor in tensors:
        unique.setdefault((tensor.device, tensor.data_ptr()), tensor)
    return list(unique.values())


def _nbytes(tensors):
    return sum(t.numel() * t.element_size() for t in tensors)


def test_host_offload_same_updates_heads_at_rest_in_host_memory():
    """Heads resting in pinned host memory, brought in on a side stream,
    give the updates of heads kept on the GPU over three iterations; after
    them the GPU holds no more than the network's own tensors."""
    ref = _build()
    ref_wrapper = LayerwiseLocalOptimWrapper(sgd(ref))
    ref_logs = [{k: v.item() for k, v in log.items()}
                for log in _train(ref, ref_wrapper)]
    ref_state = _cpu_state(ref)
    # what stays allocated after this run (library workspaces) is the
    # baseline of the next one
    del ref, ref_wrapper
    gc.collect()
    torch.cuda.synchronize()
    baseline = torch.cuda.memory_allocated()

    model = _build(aux_head_offload=dict(host='cpu'))
    wrapper = LayerwiseLocalOptimWrapper(sgd(model))
    logs = [{k: v.item() for k, v in log.items()}
            for log in _train(model, wrapper)]
    assert logs == ref_logs
    state = _cpu_state(model)
    assert list(state) == list(ref_state)
    for key, value in ref_state.items():
        assert torch.equal(state[key], value), key

    offload = model.aux_head_offload
    offload.synchronize()
    assert offload.resident == set()
    at_rest = _state_tensors(model.aux_heads, wrapper.optimizer)
    assert all(t.device.type == 'cpu' and t.is_pinned() for t in at_rest)
    network = list(model.backbone.parameters()) + list(
        model.head.parameters())
    assert all(p.is_cuda for p in network)
    gc.collect()
    torch.cuda.synchronize()
    allocated = torch.cuda.memory_allocated() - baseline
    on_device = _nbytes(
        t for t in _state_tensors(model, wrapper.optimizer) if t.is_cuda)
    slack = 1 << 20  # the allocator's rounding of each tensor
    # the heads at rest (parameters, buffers, momentum) weigh far more
    # than the slack, so a head left on the GPU fails the check
    assert _nbytes(at_rest) > 4 * slack
    assert allocated <= on_device + slack


@pytest.mark.parametrize('dtype,loss_scale', [('bfloat16', 'dynamic'),
                                              ('float16', 'dynamic')])
def test_amp_train_step_stays_finite(dtype, loss_scale):
    """AmpLocalOptimWrapper: autocast in the given type, losses scaled,
    the updates made and every weight finite."""
    model = _build()
    before = _cpu_state(model)
    wrapper = AmpLocalOptimWrapper(
        optimizer=sgd(model), loss_scale=loss_scale, dtype=dtype)
    assert wrapper.cast_dtype == getattr(torch, dtype)
    conv = next(m for m in model.backbone.modules()
                if isinstance(m, torch.nn.Conv2d))
    outputs = []
    conv.register_forward_hook(lambda m, i, out: outputs.append(out.dtype))
    for log in _train(model, wrapper):
        assert log, 'no losses logged'
        for key, value in log.items():
            assert math.isfinite(float(value)), (key, value)
    assert outputs and set(outputs) == {getattr(torch, dtype)}
    assert wrapper.loss_scaler.get_scale() > 0
    for key, value in _cpu_state(model).items():
        assert torch.isfinite(value.float()).all(), key
    # an update went through (the loss scaler may skip the first ones,
    # not all of them): the weights moved, not only BN's statistics
    weights = dict(model.named_parameters())
    changed = [
        name for name, param in weights.items()
        if not torch.equal(param.detach().cpu(), before[name])
    ]
    assert len(changed) > len(weights) // 2


def test_channels_last_same_updates():
    """The model in channels_last format trains as the contiguous one,
    within float32 rounding, and stays in that format."""
    ref = _build()
    ref_wrapper = LocalOptimWrapper(sgd(ref))
    ref_logs = _train(ref, ref_wrapper)
    model = _build().to(memory_format=torch.channels_last)
    wrapper = LocalOptimWrapper(sgd(model))
    logs = _train(model, wrapper)
    for log, ref_log in zip(logs, ref_logs):
        assert list(log) == list(ref_log)
        for key, value in ref_log.items():
            torch.testing.assert_close(
                log[key], value, rtol=1e-4, atol=1e-5,
                msg=lambda m, k=key: f'{k}: {m}')
    ref_state = ref.state_dict()
    for key, value in model.state_dict().items():
        torch.testing.assert_close(
            value, ref_state[key], rtol=1e-3, atol=1e-4,
            msg=lambda m, k=key: f'{k}: {m}')
    convs = [p for p in model.backbone.parameters() if p.dim() == 4]
    assert convs and all(
        p.is_contiguous(memory_format=torch.channels_last)
        and not p.is_contiguous() for p in convs if p.shape[-1] > 1)


def test_local_ddp_with_nccl_world_of_one():
    """LocalDistributedDataParallel over NCCL in a world of one reduces
    every module's gradients and gives the updates of the bare model."""
    if dist.is_initialized():
        pytest.skip('a default process group already exists')
    if not dist.is_nccl_available():
        pytest.skip('this torch build has no NCCL')
    cfg = _model_cfg()
    ref = build_ddp_model(cfg, seed=0).to(DEVICE)
    ref_wrapper = LocalOptimWrapper(sgd(ref))
    _train(ref, ref_wrapper)

    dist.init_process_group(
        'nccl', init_method=f'tcp://127.0.0.1:{free_port()}', rank=0,
        world_size=1)
    try:
        model = build_ddp_model(cfg, seed=0).to(DEVICE)
        ddp = wrap_local_ddp(model)
        log = ReductionLog(ddp)
        wrapper = LocalOptimWrapper(sgd(model))
        reports = []
        for it in range(ITERS):
            ddp.train_step(make_batch(it), wrapper)
            reports.append(log.report())
        torch.cuda.synchronize()
    finally:
        dist.destroy_process_group()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    for report in reports:
        assert set(report['counts']) == trainable
        assert report['num_buckets'] >= model.num_modules
    assert model.unused.grad is None
    assert_same_state(model, ref, check_keys=True)


def test_train_tool_amp(tmp_path):
    """``tools/train.py --amp`` trains the paper config on generated
    CIFAR-10 files on the GPU: the mixed-precision wrapper, finite losses,
    the loss scaler saved with the checkpoint."""
    data = str(tmp_path / 'data')
    write_small_image_set('CIFAR10', data, num_train=16, num_test=8)
    work_dir = tmp_path / 'work'
    options = [
        'train_cfg.max_epochs=1', 'default_hooks.logger.interval=1',
        'param_scheduler.0.T_max=1', 'param_scheduler.0.end=1'
    ]
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        options += [
            f'{loader}.batch_size=8', f'{loader}.num_workers=0',
            f'{loader}.persistent_workers=False',
            f'{loader}.dataset.data_root={data}'
        ]
    cmd = [
        sys.executable, 'tools/train.py', f'configs/{CONFIG}', '--amp',
        '--work-dir',
        str(work_dir), '--cfg-options', *options
    ]
    done = subprocess.run(
        cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-4000:]
    train_lines = [ln for ln in log.splitlines() if 'Epoch(train)' in ln]
    assert any('[1][2/2]' in ln for ln in train_lines)
    # MMEngine logs the GPU's peak memory of a run on CUDA
    assert all('memory: ' in ln for ln in train_lines)
    assert 'Epoch(val) [1][1/1]' in log
    losses = re.findall(r'\bloss: (\S+)', log)
    assert losses and all(math.isfinite(float(x)) for x in losses), losses
    checkpoint = torch.load(
        work_dir / 'epoch_1.pth', map_location='cpu', weights_only=False)
    assert 'loss_scaler' in checkpoint['optimizer']
