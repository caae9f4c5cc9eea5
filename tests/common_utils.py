"""Helpers shared by the model and engine tests.

``tests/conftest.py`` puts this folder on ``sys.path`` (pytest's default
``prepend`` import mode), so the test modules import these by the bare
module name, and so do the processes that :func:`run_gloo_processes`
spawns (they inherit the parent's ``sys.path``).
"""
import copy
import importlib.util
import os
import os.path as osp
import socket
import subprocess
import sys
import types
from typing import Callable, Dict, List

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn as nn
from torch.nn.modules.batchnorm import _BatchNorm

from auglocal_det.registry import MODEL_WRAPPERS, MODELS
from auglocal_det.structures import ClsDataSample

#: Classes and image size of the tiny classifiers built by the tests.
NUM_CLASSES = 5
IMAGE_SIZE = 16
#: The data pipelines of the tiny ImageNet-style training jobs (16 px).
TINY_TRAIN_PIPELINE = [
    dict(type='LoadImageTensor'),
    dict(type='RandomResizedCropTensor', size=16, scale=(0.35, 1.0)),
    dict(type='RandomFlipTensor', prob=0.5),
    dict(type='PackClsInputs'),
]
TINY_TEST_PIPELINE = [
    dict(type='LoadImageTensor'),
    dict(type='CenterCropTensor', size=16),
    dict(type='PackClsInputs'),
]

_MODEL_CACHE: Dict[str, nn.Module] = {}


def loader_options(data_root: str, batch_size: int = 8) -> List[str]:
    """``--cfg-options`` items that read every loader of a config from
    ``data_root`` in the tool's own process."""
    options = []
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        options += [
            f'{loader}.batch_size={batch_size}', f'{loader}.num_workers=0',
            f'{loader}.persistent_workers=False',
            f'{loader}.pin_memory=False',
            f'{loader}.dataset.data_root={data_root}'
        ]
    return options


def run_train_tool(config: str, work_dir: str,
                   *options: str) -> subprocess.CompletedProcess:
    """``tools/train.py CONFIG --work-dir WORK_DIR --cfg-options
    OPTIONS`` from the repository's root, as a user runs it."""
    return subprocess.run(
        [
            sys.executable, 'tools/train.py', config, '--work-dir',
            str(work_dir), '--cfg-options', *options
        ],
        cwd=ROOT, capture_output=True, text=True, timeout=300)


def one_error_line(done: subprocess.CompletedProcess) -> str:
    """The one ``error:`` line of a tool that failed on bad input
    (exit status 1, no traceback)."""
    assert done.returncode == 1
    errors = [ln for ln in done.stderr.splitlines() if ln.startswith('error')]
    assert len(errors) == 1 and 'Traceback' not in done.stderr
    return errors[0]


def tiny_auglocal_model(**overrides) -> dict:
    """The config of the tests' tiny local model: AugLocal d = 2 on a
    CIFAR ResNet-20 of base width 4 (K = 10 local modules), 4 classes at
    16 x 16 pixels; ``overrides`` replace its top-level keys. Each call
    returns a config of its own."""
    return copy.deepcopy(dict(
        dict(type='LocalImageClassifier',
             backbone=dict(type='LocalCifarResNet', depth=20,
                           base_channels=4),
             aux_head=dict(type='AugLocalAuxHead', depth=2),
             num_classes=4,
             image_size=16), **overrides))


#: The repository's root.
ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))


def load_tool(path: str, name: str,
              register: bool = False) -> types.ModuleType:
    """Import a script of ``tools/`` as a module.

    Args:
        path (str): The script, relative to the repository's root.
        name (str): The module's name.
        register (bool): Also put it in ``sys.modules`` under ``name``
            (before running it), e.g. so that worker processes can unpickle
            its functions. Defaults to False.

    Returns:
        module: The script's module.
    """
    spec = importlib.util.spec_from_file_location(name, osp.join(ROOT, path))
    module = importlib.util.module_from_spec(spec)
    if register:
        sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def build_cached(cfg: dict) -> nn.Module:
    """Build a model once per config and hand out fresh copies of it.

    The first build of ``cfg`` runs with seed 0, so every copy starts from
    the same weights however many tests ran before.

    Args:
        cfg (dict): Model config for ``MODELS.build``; its ``repr`` is the
            cache key.

    Returns:
        nn.Module: A deep copy of the cached model, in train mode.
    """
    key = repr(cfg)
    if key not in _MODEL_CACHE:
        torch.manual_seed(0)
        _MODEL_CACHE[key] = MODELS.build(cfg)
    model = copy.deepcopy(_MODEL_CACHE[key])
    model.train()
    return model


def make_batch(seed: int, num: int = 4) -> dict:
    """A seeded batch of ``num`` uint8 images and their class labels.

    Args:
        seed (int): Seed of the generator drawing images and labels.
        num (int): Number of samples. Defaults to 4.

    Returns:
        dict: ``inputs`` (list of (3, H, W) tensors) and ``data_samples``
        (list of :class:`ClsDataSample`), as a data loader yields them.
    """
    gen = torch.Generator().manual_seed(seed)
    inputs = [
        torch.randint(0, 256, (3, IMAGE_SIZE, IMAGE_SIZE),
                      dtype=torch.uint8, generator=gen) for _ in range(num)
    ]
    labels = torch.randint(0, NUM_CLASSES, (num, ), generator=gen)
    samples = [ClsDataSample().set_gt_label(int(y)) for y in labels]
    return dict(inputs=inputs, data_samples=samples)


def sgd(model: nn.Module) -> torch.optim.Optimizer:
    """The Nesterov SGD optimizer that every training test uses."""
    return torch.optim.SGD(
        model.parameters(), lr=0.05, momentum=0.9, nesterov=True,
        weight_decay=1e-4)


def assert_same_state(model: nn.Module,
                      ref: nn.Module,
                      check_keys: bool = False) -> None:
    """Assert that two models hold the same weights and buffers.

    Args:
        model (nn.Module): The model under test.
        ref (nn.Module): The reference model.
        check_keys (bool): Also require both state dicts to have the same
            keys in the same order. Defaults to False (``ref`` may hold
            more entries than ``model``).
    """
    ref_state = ref.state_dict()
    state = model.state_dict()
    if check_keys:
        assert list(state) == list(ref_state)
    for name, value in state.items():
        torch.testing.assert_close(
            value, ref_state[name], rtol=2e-6, atol=1e-7,
            msg=lambda m, n=name: f'{n}: {m}')


def free_port() -> int:
    """A TCP port on the loopback interface that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def build_ddp_model(cfg: dict, seed: int) -> nn.Module:
    """Build a model for the data-parallel tests.

    Every BN layer is put in eval mode with random (non-trivial) running
    statistics, so the samples of a batch are processed independently and
    splitting the batch over processes cannot change the result. The model
    also gets a trainable parameter ``unused`` that no loss reaches: its
    gradient must stay None on every rank, and the wrapper reduces it at
    the step.

    Args:
        cfg (dict): Model config for ``MODELS.build``.
        seed (int): Seed of the weights and the BN statistics.

    Returns:
        nn.Module: The model.
    """
    torch.manual_seed(seed)
    model = MODELS.build(cfg)
    model.unused = nn.Parameter(torch.zeros(3))
    for module in model.modules():
        if isinstance(module, _BatchNorm):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
            module.eval()
    return model


def wrap_local_ddp(model: nn.Module) -> nn.Module:
    """Wrap ``model`` in ``LocalDistributedDataParallel`` (registry)."""
    return MODEL_WRAPPERS.build(
        dict(type='LocalDistributedDataParallel', module=model))


class ReductionLog:
    """What a ``LocalDistributedDataParallel`` all-reduces per iteration.

    Observes the wrapper's bucket launches (wrapped on the instance):
    :meth:`report` after each ``train_step`` gives ``counts`` (parameter
    name -> reductions), ``num_buckets`` (all-reduce calls) and ``late``
    (names reduced at the step because the model never reported them), or
    ``{}`` for an iteration without reduction (accumulation only).

    Args:
        ddp (nn.Module): The data-parallel wrapper; anything else gives
            empty reports.
    """

    def __init__(self, ddp: nn.Module) -> None:
        self._entries: List[tuple] = []
        self._late = False
        if type(ddp).__name__ != 'LocalDistributedDataParallel':
            return
        names = {id(p): n for n, p in ddp.module.named_parameters()}
        launch, rest = ddp._launch, ddp._reduce_rest

        def spy_launch(params):
            buckets = len({(p.device, p.dtype) for p in params})
            self._entries.append(
                ([names[id(p)] for p in params], buckets, self._late))
            launch(params)

        def spy_rest():
            self._late = True
            try:
                rest()
            finally:
                self._late = False

        ddp._launch, ddp._reduce_rest = spy_launch, spy_rest

    def report(self) -> dict:
        """The reductions since the last report."""
        entries, self._entries = self._entries, []
        if not entries:
            return {}
        counts: Dict[str, int] = {}
        for names, _, _ in entries:
            for name in names:
                counts[name] = counts.get(name, 0) + 1
        return dict(
            counts=counts,
            num_buckets=sum(buckets for _, buckets, _ in entries),
            late=[n for names, _, late in entries if late for n in names])


def _gloo_process(rank: int, worker: Callable[[int], dict],
                  world_size: int, port: int, out_dir: str) -> None:
    """Body of one spawned process: join the group, run, save, leave."""
    torch.set_num_threads(1)
    os.environ.setdefault('GLOO_SOCKET_IFNAME', 'lo')
    dist.init_process_group(
        'gloo', init_method=f'tcp://127.0.0.1:{port}', rank=rank,
        world_size=world_size)
    try:
        torch.save(worker(rank), osp.join(out_dir, f'rank{rank}.pth'))
    finally:
        dist.destroy_process_group()


def run_gloo_processes(worker: Callable[[int], dict], world_size: int,
                       out_dir: str) -> List[dict]:
    """Run ``worker`` in ``world_size`` processes of one gloo group.

    Each process uses one intra-op thread, joins a process group on the
    loopback interface, calls ``worker(rank)`` and saves what it returns
    to ``out_dir/rank{rank}.pth``.

    Args:
        worker (callable): Module-level function (it is pickled into the
            spawned processes) taking the rank and returning a dict.
        world_size (int): Number of processes.
        out_dir (str): Folder for the results of the processes.

    Returns:
        list[dict]: The results, in rank order.
    """
    out_dir = str(out_dir)
    mp.spawn(
        _gloo_process, args=(worker, world_size, free_port(), out_dir),
        nprocs=world_size, join=True)
    return [
        torch.load(osp.join(out_dir, f'rank{rank}.pth'), weights_only=False)
        for rank in range(world_size)
    ]
