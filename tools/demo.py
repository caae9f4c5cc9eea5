"""The demo: the whole pipeline on generated data, on a CPU in minutes.

Stages (``--stages``; each reusable from Python):

``pretrain``
    1. generate the synthetic shapes set in the ImageNet folder layout
       unless it is there (``data/synthetic_imagenet``; its size comes from
       ``synthetic_data`` in the pretraining config);
    2. pretrain ResNet-34 with AugLocal and with BP (``--rules``) through
       ``tools/train.py`` (MMEngine's Runner, the code path of ImageNet)
       with ``configs/demo/{auglocal,bp}_r34_synthetic.py``;
       ``ExportBackboneHook`` exports each backbone at the end and
       ``TrainingMemoryHook`` measures one steady-state iteration.
``detect``
    3. generate the synthetic COCO-style instance segmentation set unless it
       is there (``data/synthetic_coco``);
    4. fine-tune Mask R-CNN R-34-FPN
       (``configs/demo/mask_rcnn_r34_synthetic.py``) with ``tools/train.py``
       on one schedule and seed from every start point (``--starts``): the
       AugLocal export, the BP export and random init;
    5. evaluate each with ``tools/test.py`` (mmdet's ``CocoMetric``, bbox
       and segm) and print the model-zoo table
       (``auglocal_det.analysis.model_zoo``, as
       ``tools/analysis_tools/gather_results.py``), also written to
       ``<work_dir>/model_zoo.md``.

The runs are scheduled as soon as their inputs exist, one per core with
one intra-op thread each: the fine-tuning from random init does not wait
for any pretraining, the one from BP waits only for BP. A progress line
reports every run's start and end (stage k of n, elapsed time, ETA).

The last lines printed are the val top-1 of every pretraining, the
training memory of each rule, the box / mask AP from every start point
with the gain over random init, and the total wall time. The same summary
is written to ``<work_dir>/summary.md`` and drawn in
``<work_dir>/summary.png``.

``--full`` runs the longer variant (``configs/demo/*_full.py``: AugLocal
heads at a quarter of the paper's width, 8 epochs of pretraining, 3 of
fine-tuning; its own data folders).

Examples::

    python tools/demo.py                          # everything
    python tools/demo.py --full
    python tools/demo.py --stages pretrain --rules auglocal
    python tools/demo.py --stages detect --starts auglocal random
    python tools/demo.py --stages detect --backbone auglocal=PATH/backbone.pth
"""
import argparse
import json
import os
import os.path as osp
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, ROOT)

from mmengine.config import Config  # noqa: E402

from auglocal_det.analysis.model_zoo import (  # noqa: E402
    collect,
    to_markdown,
)
from auglocal_det.errors import InputFileNotFoundError  # noqa: E402
from auglocal_det.testing import (  # noqa: E402
    ensure_synthetic,
    generate_coco_shapes,
    generate_imagenet_shapes,
)

#: The demo's two variants: configs and data folders. ``default`` is the
#: one-command demo; ``full`` the longer run (``--full``).
PROFILES = {
    'default':
    dict(
        configs={
            'auglocal': 'configs/demo/auglocal_r34_synthetic.py',
            'bp': 'configs/demo/bp_r34_synthetic.py',
        },
        det_config='configs/demo/mask_rcnn_r34_synthetic.py',
        data_root='data/synthetic_imagenet',
        coco_root='data/synthetic_coco',
        work_dir='work_dirs/demo'),
    'full':
    dict(
        configs={
            'auglocal': 'configs/demo/auglocal_r34_synthetic_full.py',
            'bp': 'configs/demo/bp_r34_synthetic_full.py',
        },
        det_config='configs/demo/mask_rcnn_r34_synthetic_full.py',
        data_root='data/synthetic_imagenet_full',
        coco_root='data/synthetic_coco',
        work_dir='work_dirs/demo_full'),
}
#: Demo pretraining configs by rule name (of the default variant).
DEMO_CONFIGS = dict(PROFILES['default']['configs'])
RULE_NAMES = {'auglocal': 'AugLocal', 'bp': 'BP', 'random': 'random init'}
DET_CONFIG = PROFILES['default']['det_config']
#: Start points of the fine-tuning: a pretraining rule, or 'random' (no
#: pretrained weights).
STARTS = ('auglocal', 'bp', 'random')
STAGES = ('pretrain', 'detect')
DEFAULT_DATA_ROOT = PROFILES['default']['data_root']
DEFAULT_COCO_ROOT = PROFILES['default']['coco_root']
DEFAULT_WORK_DIR = PROFILES['default']['work_dir']
#: Arguments of generate_coco_shapes for the detection set: 64 px images
#: with 1-4 shapes of 10-28 px (the pixel size of the shapes in the 36 px
#: images the demo backbones are pretrained on).
COCO_DATA = dict(num_train=500, num_val=100, image_size=64, seed=0)
#: Relative cost of each kind of run of the default demo, for the ETA
#: (only the ratios matter): the CPU seconds of the two pretrainings in one
#: run of the demo (docs/benchmarks.md#demo), against about 120 s for a
#: one-epoch fine-tuning and 20 s for an evaluation, from the full demo's
#: timings scaled to one epoch.
RUN_COSTS = {'pretrain auglocal': 3.3, 'pretrain bp': 0.55, 'fine-tune': 1.,
             'evaluate': 0.15}


class JobFailed(RuntimeError):
    """A training or test run of the demo exited with an error."""


def log(msg: str) -> None:
    """Print a demo message (flushed, so it interleaves with the Runner)."""
    print(f'[demo] {msg}', flush=True)


def shell(cmd: Sequence[str]) -> str:
    """A command line for the log, with paths relative to the repo."""
    return ' '.join(
        osp.relpath(c, ROOT) if c.startswith(ROOT) else c for c in cmd)


def clock(seconds: float) -> str:
    """``seconds`` as ``m:ss`` (or ``h:mm:ss``)."""
    seconds = int(round(max(0., seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f'{hours}:{minutes:02d}:{secs:02d}'
    return f'{minutes}:{secs:02d}'


def auto_threads() -> int:
    """Intra-op threads for training: all cores on an idle machine, one
    on a busy one.

    On a machine whose other jobs already keep the cores busy, PyTorch's
    OpenMP threads spin waiting for each other: with 2 threads on a loaded
    2-core machine one iteration took 5 times longer (and 10 times the CPU
    time) than with 1 thread.
    """
    cores = os.cpu_count() or 1
    try:
        load = os.getloadavg()[0]
    except OSError:
        return cores
    return max(1, min(cores, int(round(cores - load))))


@dataclass
class Job:
    """One run of the demo (a ``tools/train.py`` or ``tools/test.py``).

    Attributes:
        name (str): What the progress lines call it.
        command (Callable): Returns the command line; called when the job
            starts, so that it can read what its dependencies wrote.
        log_path (str): The run's output goes there.
        after (list[str]): Names of the jobs that must finish first.
        cost (float): Relative cost, for the ETA.
        env (dict): Extra environment variables.
    """
    name: str
    command: Callable[[], List[str]]
    log_path: str
    after: List[str] = field(default_factory=list)
    cost: float = 1.
    env: Dict[str, str] = field(default_factory=dict)


class Progress:
    """Progress lines of a run of jobs: stage k of n, elapsed time, ETA.

    The ETA assumes that the remaining jobs cost what their ``cost`` says,
    at the speed (seconds per unit of cost) of the jobs already finished,
    shared among ``slots`` parallel runs (but no shorter than the longest
    of them).
    """

    def __init__(self, jobs: Sequence[Job], slots: int,
                 start: Optional[float] = None) -> None:
        self.costs = {job.name: job.cost for job in jobs}
        self.index = {job.name: i + 1 for i, job in enumerate(jobs)}
        self.total = len(jobs)
        self.slots = max(1, slots)
        self.start = time.time() if start is None else start
        self.done: Dict[str, float] = {}
        self.running: Dict[str, float] = {}

    def eta(self) -> Optional[float]:
        """Seconds left, or None before any job has finished."""
        if not self.done:
            return None
        rate = sum(self.done.values()) / max(
            1e-9, sum(self.costs[n] for n in self.done))
        now = time.time()
        left = [
            cost * rate for name, cost in self.costs.items()
            if name not in self.done and name not in self.running
        ] + [
            max(0., self.costs[name] * rate - (now - begin))
            for name, begin in self.running.items()
        ]
        # the work shared among the slots, but no less than the longest run
        return max(sum(left) / self.slots, max(left, default=0.))

    def line(self, name: str, what: str) -> str:
        eta = self.eta()
        eta_str = clock(eta) if eta is not None else 'after the first stage'
        return (f'stage {self.index[name]} of {self.total} {what}: {name} | '
                f'elapsed {clock(time.time() - self.start)} | ETA {eta_str}')

    def started(self, name: str) -> None:
        self.running[name] = time.time()
        log(self.line(name, 'started'))

    def finished(self, name: str) -> float:
        seconds = time.time() - self.running.pop(name)
        self.done[name] = seconds
        log(self.line(name, f'done in {clock(seconds)}'))
        return seconds


def run_jobs(jobs: Sequence, parallel: int = 1,
             threads: Optional[int] = None, quiet: bool = True,
             progress: Optional[Progress] = None) -> List[float]:
    """Run commands, ``parallel`` at a time, each logging into its file.

    A job starts as soon as a slot is free and the jobs it runs ``after``
    have finished, in the order of ``jobs`` otherwise.

    Args:
        jobs (Sequence): :class:`Job` objects, or ``(name, command,
            log_path)`` triples (independent jobs).
        parallel (int): How many run at once. Defaults to 1.
        threads (int, optional): ``OMP_NUM_THREADS`` of every job; None
            keeps the environment's. Defaults to None.
        quiet (bool): Only the log files get the output; otherwise a single
            job at a time (``parallel=1``) also prints it. Defaults to True.
        progress (Progress, optional): Reports starts and ends; one is
            made for ``jobs`` if None.

    Returns:
        list[float]: Seconds each job took, in the order of ``jobs``.

    Raises:
        JobFailed: If a job fails (after the running ones have finished;
            the jobs that depend on it are not started); the message names
            its log.
    """
    jobs = [
        job if isinstance(job, Job) else Job(
            job[0], (lambda cmd=job[1]: cmd), job[2]) for job in jobs
    ]
    env = dict(os.environ)
    if threads is not None:
        env['OMP_NUM_THREADS'] = str(threads)
    parallel = max(1, parallel)
    tee = not quiet and parallel == 1
    progress = progress or Progress(jobs, parallel)
    pending = list(range(len(jobs)))
    running: Dict[int, tuple] = {}
    finished, failed_names = set(), set()
    seconds: List[float] = [0.] * len(jobs)
    failed: List[str] = []
    while pending or running:
        for index in list(pending):
            if len(running) >= parallel:
                break
            job = jobs[index]
            if any(name in failed_names for name in job.after):
                pending.remove(index)
                failed_names.add(job.name)
                continue
            if not all(name in finished for name in job.after):
                continue
            pending.remove(index)
            cmd = job.command()
            progress.started(job.name)
            log(f'{job.name}: python {shell(cmd[1:])}')
            log(f'{job.name}: {env.get("OMP_NUM_THREADS", "default")} '
                f'intra-op thread(s); log: {job.log_path}')
            log_file = open(job.log_path, 'w')
            proc = subprocess.Popen(
                cmd,
                cwd=ROOT,
                env=dict(env, **job.env),
                stdout=subprocess.PIPE if tee else log_file,
                stderr=subprocess.STDOUT,
                text=True)
            running[index] = (proc, log_file)
            if tee:
                for line in proc.stdout:
                    log_file.write(line)
                    sys.stdout.write(line)
                    sys.stdout.flush()
        for index in list(running):
            proc, log_file = running[index]
            if proc.poll() is None:
                continue
            log_file.close()
            del running[index]
            job = jobs[index]
            seconds[index] = progress.finished(job.name)
            if proc.returncode == 0:
                finished.add(job.name)
            else:
                failed_names.add(job.name)
                failed.append(f'{job.name} (exit code {proc.returncode} '
                              f'after {seconds[index]:.0f} s; see '
                              f'{job.log_path})')
        if running:
            time.sleep(0.5)
        elif pending and not failed and not any(
                all(n in finished for n in jobs[i].after) for i in pending):
            raise RuntimeError('demo jobs wait for jobs that never run: ' +
                               ', '.join(jobs[i].name for i in pending))
    if failed:
        raise JobFailed('failed: ' + '; '.join(failed))
    return seconds


# ----------------------------------------------------------------------
# Stage 1: pretraining


def prepare_imagenet_shapes(config: str,
                            data_root: str,
                            progress: bool = True,
                            **overrides) -> dict:
    """Generate the synthetic classification set unless it is there.

    Args:
        config (str): A demo config whose ``synthetic_data`` holds the
            arguments of :func:`generate_imagenet_shapes`.
        data_root (str): Output folder.
        progress (bool): Show a progress bar. Defaults to True.
        **overrides: Arguments of :func:`generate_imagenet_shapes` that
            replace the config's.

    Returns:
        dict: The data set's stamp (arguments and image counts).
    """
    cfg = Config.fromfile(osp.join(ROOT, config))
    kwargs = dict(cfg.get('synthetic_data', {}), **overrides)
    if 'classes' in kwargs:
        kwargs['classes'] = tuple(kwargs['classes'])
    stamp, made = ensure_synthetic(
        generate_imagenet_shapes, data_root, progress=progress, **kwargs)
    counts = stamp.get('num_images', {})
    log(f'{"generated" if made else "found"} synthetic ImageNet-style data '
        f'in {data_root}: {len(stamp["classes"])} classes, '
        f'{counts.get("train")} train / {counts.get("val")} val images of '
        f'{stamp["image_size"]} px')
    return stamp


def pretrain_command(rule: str,
                     data_root: str = DEFAULT_DATA_ROOT,
                     work_root: str = DEFAULT_WORK_DIR,
                     cfg_options: Sequence[str] = (),
                     python: str = sys.executable,
                     config: Optional[str] = None) -> Tuple[List[str], str]:
    """The ``tools/train.py`` command pretraining with one rule.

    Args:
        rule (str): A key of :data:`DEMO_CONFIGS`.
        data_root (str): The synthetic ImageNet-style data.
        work_root (str): Parent of the work dir
            (``<work_root>/<config name>``).
        cfg_options (Sequence[str]): Extra ``key=value`` overrides.
        python (str): Interpreter. Defaults to this one.
        config (str, optional): The config; defaults to the rule's in
            :data:`DEMO_CONFIGS`.

    Returns:
        tuple: The command and the work dir.
    """
    config = config or DEMO_CONFIGS[rule]
    name = osp.splitext(osp.basename(config))[0]
    work_dir = osp.join(work_root, name)
    options = [
        f'{loader}.dataset.data_root={data_root}'
        for loader in ('train_dataloader', 'val_dataloader',
                       'test_dataloader')
    ] + list(cfg_options)
    cmd = [
        python,
        osp.join(ROOT, 'tools', 'train.py'),
        osp.join(ROOT, config), '--work-dir', work_dir, '--overwrite',
        '--cfg-options', *options
    ]
    return cmd, work_dir


def read_export(rule: str, work_dir: str) -> Dict:
    """What a pretraining run exported (``<work_dir>/export``) and the
    memory it measured (``<work_dir>/training_memory.json``).

    Returns:
        dict: ``rule``, ``work_dir``, ``export_dir``, ``backbone`` (path of
        ``backbone.pth``), ``torchvision``, ``sidecar`` (``backbone.json``
        content), ``val_top1``, ``chance``, ``plot`` and ``memory``
        (:class:`TrainingMemoryHook`'s figures in MiB, or None).

    Raises:
        RuntimeError: If ``backbone.json`` is missing.
    """
    export_dir = osp.join(work_dir, 'export')
    sidecar_path = osp.join(export_dir, 'backbone.json')
    if not osp.isfile(sidecar_path):
        raise RuntimeError(f'training finished but {sidecar_path} is '
                           f'missing (ExportBackboneHook not run?); see '
                           f'{osp.join(work_dir, "demo_train.log")}')
    with open(sidecar_path) as f:
        sidecar = json.load(f)
    memory = None
    memory_path = osp.join(work_dir, 'training_memory.json')
    if osp.isfile(memory_path):
        with open(memory_path) as f:
            memory = json.load(f)
    num_classes = sidecar.get('num_classes')
    return dict(
        rule=rule,
        work_dir=work_dir,
        export_dir=export_dir,
        backbone=osp.join(export_dir, 'backbone.pth'),
        torchvision=(sidecar.get('files', {}).get('torchvision.pth', {})
                     .get('path')),
        sidecar=sidecar,
        val_top1=sidecar.get('val_top1'),
        chance=100. / num_classes if num_classes else None,
        plot=osp.join(work_dir, 'layerwise_accuracy.png'),
        memory=memory)


def pretrain_job(rule: str,
                 data_root: str = DEFAULT_DATA_ROOT,
                 work_root: str = DEFAULT_WORK_DIR,
                 cfg_options: Sequence[str] = (),
                 config: Optional[str] = None) -> Tuple[Job, str]:
    """The :class:`Job` pretraining with one rule, and its work dir."""
    cmd, work_dir = pretrain_command(
        rule, data_root, work_root, cfg_options, config=config)
    os.makedirs(work_dir, exist_ok=True)
    job = Job(
        f'pretrain {RULE_NAMES.get(rule, rule)}', (lambda: cmd),
        osp.join(work_dir, 'demo_train.log'),
        cost=RUN_COSTS.get(f'pretrain {rule}', 1.))
    return job, work_dir


def pretrain(rule: str = 'auglocal',
             data_root: str = DEFAULT_DATA_ROOT,
             work_root: str = DEFAULT_WORK_DIR,
             cfg_options: Sequence[str] = (),
             quiet: bool = False,
             threads: Optional[int] = None,
             config: Optional[str] = None) -> Dict:
    """Pretrain the demo classifier with ``tools/train.py``; read the export.

    Args:
        rule (str): A key of :data:`DEMO_CONFIGS` ('auglocal' or 'bp').
        data_root (str): The synthetic ImageNet-style data.
        work_root (str): Parent of the run's work dir.
        cfg_options (Sequence[str]): Extra ``--cfg-options`` items.
        quiet (bool): Write the training log only to
            ``<work_dir>/demo_train.log`` instead of also to the console.
        threads (int, optional): ``OMP_NUM_THREADS`` of the training
            process; None keeps the environment's setting, or uses
            :func:`auto_threads` if it has none.
        config (str, optional): The config; defaults to the rule's in
            :data:`DEMO_CONFIGS`.

    Returns:
        dict: :func:`read_export`'s dict plus ``config`` and ``seconds``.

    Raises:
        JobFailed: If training fails (the message names the log).
    """
    job, work_dir = pretrain_job(rule, data_root, work_root, cfg_options,
                                 config)
    if threads is None and 'OMP_NUM_THREADS' not in os.environ:
        threads = auto_threads()
    seconds, = run_jobs([job], threads=threads, quiet=quiet)
    return dict(
        read_export(rule, work_dir), config=config or DEMO_CONFIGS[rule],
        seconds=seconds)


# ----------------------------------------------------------------------
# Stage 2: detection


def prepare_coco_shapes(data_root: str = DEFAULT_COCO_ROOT,
                        progress: bool = True,
                        **kwargs) -> dict:
    """Generate the synthetic COCO-style set unless it is already there.

    Args:
        data_root (str): Output folder. Defaults to ``data/synthetic_coco``.
        progress (bool): Show a progress bar. Defaults to True.
        **kwargs: Arguments of :func:`generate_coco_shapes`, overriding
            :data:`COCO_DATA`.

    Returns:
        dict: The data set's stamp.
    """
    args = dict(COCO_DATA, **kwargs)
    stamp, made = ensure_synthetic(
        generate_coco_shapes, data_root, progress=progress, **args)
    counts = stamp['counts']
    log(f'{"generated" if made else "found"} synthetic COCO-style data in '
        f'{data_root}: {counts["train"]["images"]} train / '
        f'{counts["val"]["images"]} val images of {stamp["image_size"]} px, '
        f'{counts["train"]["instances"]} / {counts["val"]["instances"]} '
        f'instances of {len(stamp["classes"])} classes')
    return stamp


def coco_data_options(data_root: str,
                      splits: Sequence[str] = ('train', 'val',
                                               'test')) -> List[str]:
    """``--cfg-options`` that point the detection config at ``data_root``.

    Args:
        data_root (str): The synthetic COCO-style data.
        splits (Sequence[str]): The dataloaders (and evaluators) to point.
            Defaults to all three.
    """
    root = data_root.rstrip('/') + '/'
    ann_file = f'{root}annotations/instances_val.json'
    options = []
    for split in splits:
        options.append(f'{split}_dataloader.dataset.data_root={root}')
        if split != 'train':
            options.append(f'{split}_evaluator.ann_file={ann_file}')
    return options


def finetune_command(start: str,
                     backbone: Optional[str],
                     data_root: str = DEFAULT_COCO_ROOT,
                     work_root: str = DEFAULT_WORK_DIR,
                     epochs: Optional[int] = None,
                     cfg_options: Sequence[str] = (),
                     python: str = sys.executable,
                     det_config: str = DET_CONFIG) -> Tuple[List[str], str]:
    """The ``tools/train.py`` command fine-tuning from one start point.

    Args:
        start (str): Name of the start point (``'auglocal'``, ``'bp'``,
            ``'random'``); names the work dir.
        backbone (str, optional): Exported ``backbone.pth``; None trains
            from random init.
        data_root (str): The synthetic COCO-style data.
        work_root (str): Parent of the work dir
            (``<work_root>/<config name>_<start>``).
        epochs (int, optional): Override the config's ``max_epochs`` (the
            lr step follows at 2/3 of it).
        cfg_options (Sequence[str]): Extra ``key=value`` overrides.
        python (str): Interpreter. Defaults to this one.
        det_config (str): The detection config. Defaults to
            :data:`DET_CONFIG`.

    Returns:
        tuple: The command and the work dir.
    """
    name = osp.splitext(osp.basename(det_config))[0]
    work_dir = osp.join(work_root, f'{name}_{start}')
    options = coco_data_options(data_root, ['train'])
    if backbone is None:
        options.append('model.backbone.init_cfg=None')
    else:
        options.append(f'model.backbone.init_cfg.checkpoint={backbone}')
    if epochs is not None:
        step = max(1, round(epochs * 2 / 3))
        options += [
            f'train_cfg.max_epochs={epochs}',
            f'train_cfg.val_interval={epochs}',
            f'param_scheduler.1.end={epochs}',
            f'param_scheduler.1.milestones=[{step}]',
            f'default_hooks.checkpoint.interval={epochs}',
        ]
    # the figures come from tools/test.py: no validation during training
    options += ['val_cfg=None', 'val_dataloader=None', 'val_evaluator=None']
    options += list(cfg_options)
    cmd = [
        python,
        osp.join(ROOT, 'tools', 'train.py'),
        osp.join(ROOT, det_config), '--work-dir', work_dir, '--overwrite',
        '--cfg-options', *options
    ]
    return cmd, work_dir


def evaluate_command(work_dir: str,
                     data_root: str = DEFAULT_COCO_ROOT,
                     cfg_options: Sequence[str] = (),
                     python: str = sys.executable,
                     det_config: str = DET_CONFIG) -> Tuple[List[str], str]:
    """The ``tools/test.py`` command evaluating a run's last checkpoint.

    Returns:
        tuple: The command and the metrics file it writes
        (``<work_dir>/test_metrics.json``).
    """
    with open(osp.join(work_dir, 'last_checkpoint')) as f:
        checkpoint = f.read().strip()
    metrics_path = osp.join(work_dir, 'test_metrics.json')
    cmd = [
        python,
        osp.join(ROOT, 'tools', 'test.py'),
        osp.join(ROOT, det_config), checkpoint, '--work-dir', work_dir,
        '--out-metrics', metrics_path, '--cfg-options',
        *coco_data_options(data_root, ['test']), *cfg_options
    ]
    return cmd, metrics_path


def find_backbones(starts: Sequence[str],
                   work_root: str = DEFAULT_WORK_DIR,
                   given: Optional[Dict[str, str]] = None,
                   configs: Optional[Dict[str, str]] = None,
                   pending: Sequence[str] = ()
                   ) -> Dict[str, Optional[str]]:
    """The backbone file of every start point.

    Args:
        starts (Sequence[str]): Start points (see :data:`STARTS`).
        work_root (str): Where the pretraining stage puts its work dirs.
        given (dict, optional): Start point -> backbone file, from the
            command line.
        configs (dict, optional): Rule -> pretraining config. Defaults to
            :data:`DEMO_CONFIGS`.
        pending (Sequence[str]): Rules pretrained in this run: their
            backbones need not exist yet.

    Returns:
        dict: Start point -> ``backbone.pth`` path (None for 'random').

    Raises:
        FileNotFoundError: If a start point has no backbone; the message
            says how to make one.
    """
    configs = configs or DEMO_CONFIGS
    backbones: Dict[str, Optional[str]] = {}
    for start in starts:
        if start == 'random':
            backbones[start] = None
            continue
        path = (given or {}).get(start)
        if path is None:
            name = osp.splitext(osp.basename(configs[start]))[0]
            path = osp.join(work_root, name, 'export', 'backbone.pth')
        if start not in pending and not osp.isfile(path):
            raise InputFileNotFoundError(
                f'no {RULE_NAMES[start]} backbone at {path}: run `python '
                f'tools/demo.py --stages pretrain --rules {start}` first, or '
                f'pass --backbone {start}=PATH')
        backbones[start] = path
    return backbones


def detection_jobs(backbones: Dict[str, Optional[str]],
                   data_root: str = DEFAULT_COCO_ROOT,
                   work_root: str = DEFAULT_WORK_DIR,
                   epochs: Optional[int] = None,
                   cfg_options: Sequence[str] = (),
                   det_config: str = DET_CONFIG,
                   after: Optional[Dict[str, str]] = None
                   ) -> Tuple[List[Job], Dict[str, str]]:
    """A fine-tuning and an evaluation :class:`Job` per start point.

    Args:
        backbones (dict): Start point -> ``backbone.pth`` (None: random).
        data_root (str): The synthetic COCO-style data.
        work_root (str): Parent of the work dirs.
        epochs (int, optional): Override the detection config's epochs.
        cfg_options (Sequence[str]): Extra overrides of the training and
            test runs.
        det_config (str): The detection config.
        after (dict, optional): Start point -> name of the job that makes
            its backbone.

    Returns:
        tuple: The jobs, and start point -> work dir.
    """
    jobs, work_dirs = [], {}
    for start, backbone in backbones.items():
        cmd, work_dir = finetune_command(
            start, backbone, data_root=data_root, work_root=work_root,
            epochs=epochs, cfg_options=cfg_options, det_config=det_config)
        os.makedirs(work_dir, exist_ok=True)
        work_dirs[start] = work_dir
        train_name = f'fine-tune Mask R-CNN from {RULE_NAMES[start]}'
        jobs.append(
            Job(train_name, (lambda cmd=cmd: cmd),
                osp.join(work_dir, 'demo_train.log'),
                after=[after[start]] if after and start in after else [],
                cost=RUN_COSTS['fine-tune']))
        jobs.append(
            Job(f'evaluate Mask R-CNN from {RULE_NAMES[start]}',
                (lambda work_dir=work_dir: evaluate_command(
                    work_dir, data_root, cfg_options,
                    det_config=det_config)[0]),
                osp.join(work_dir, 'demo_test.log'),
                after=[train_name],
                cost=RUN_COSTS['evaluate']))
    return jobs, work_dirs


def gather_detection(work_dirs: Dict[str, str], work_root: str,
                     seconds: Dict[str, float]) -> List[Dict]:
    """Read the COCO metrics of every fine-tuning; print the zoo table.

    Returns:
        list[dict]: Per start point: ``start``, ``work_dir``, ``row`` (the
        model-zoo row, with all COCO metrics), ``train_seconds`` and
        ``test_seconds``.
    """
    results = []
    for start, work_dir in work_dirs.items():
        name = RULE_NAMES[start]
        results.append(
            dict(
                start=start,
                work_dir=work_dir,
                row=collect(work_dir, osp.join(ROOT, 'configs')),
                train_seconds=seconds.get(
                    f'fine-tune Mask R-CNN from {name}', 0.),
                test_seconds=seconds.get(f'evaluate Mask R-CNN from {name}',
                                         0.)))
    table = to_markdown([r['row'] for r in results])
    table_path = osp.join(work_root, 'model_zoo.md')
    with open(table_path, 'w') as f:
        f.write(table)
    print(flush=True)
    log('Mask R-CNN R-34-FPN on the synthetic shapes (val, CocoMetric); '
        f'also in {table_path}:')
    print(table, flush=True)
    return results


def finetune_and_evaluate(backbones: Dict[str, Optional[str]],
                          data_root: str = DEFAULT_COCO_ROOT,
                          work_root: str = DEFAULT_WORK_DIR,
                          epochs: Optional[int] = None,
                          cfg_options: Sequence[str] = (),
                          parallel: Optional[int] = None,
                          threads: Optional[int] = None,
                          quiet: bool = True,
                          det_config: str = DET_CONFIG) -> List[Dict]:
    """Fine-tune from every backbone, evaluate and print the zoo table.

    Args:
        backbones (dict): Start point -> ``backbone.pth`` (None: random).
        data_root (str): The synthetic COCO-style data (must exist).
        work_root (str): Parent of the work dirs.
        epochs (int, optional): Override the detection config's epochs.
        cfg_options (Sequence[str]): Extra overrides of the training and
            test runs.
        parallel (int, optional): Runs side by side. Defaults to one per
            core.
        threads (int, optional): Intra-op threads of each run. Defaults to
            the environment's ``OMP_NUM_THREADS``, else the idle cores
            shared among the parallel runs (at least 1).
        quiet (bool): Keep the training logs in the work dirs only.
        det_config (str): The detection config.

    Returns:
        list[dict]: See :func:`gather_detection`.
    """
    parallel = parallel or max(1, os.cpu_count() or 1)
    if threads is None and 'OMP_NUM_THREADS' not in os.environ:
        threads = max(1, auto_threads() // parallel)
    jobs, work_dirs = detection_jobs(backbones, data_root, work_root, epochs,
                                     cfg_options, det_config)
    seconds = run_jobs(jobs, parallel, threads, quiet)
    return gather_detection(work_dirs, work_root,
                            {j.name: t for j, t in zip(jobs, seconds)})


# ----------------------------------------------------------------------
# Summary


def _mib(value: Optional[float]) -> str:
    if value is None:
        return 'n/a'
    return f'{value / 1024:.2f} GiB' if value >= 1024 else f'{value:.0f} MiB'


def _ratio(a: Optional[float], b: Optional[float]) -> str:
    return f'{a / b:.2f}x' if a is not None and b else 'n/a'


def summary_lines(pretrained: List[Dict], detected: List[Dict],
                  wall_seconds: float) -> List[str]:
    """The demo's last lines: top-1, memory, AP and wall time."""
    lines = []
    by_rule = {res['rule']: res for res in pretrained}
    if pretrained:
        chance = next((r['chance'] for r in pretrained if r['chance']), None)
        parts = [
            f'{RULE_NAMES[r["rule"]]} {r["val_top1"]:.2f}%'
            if r['val_top1'] is not None else f'{RULE_NAMES[r["rule"]]} n/a'
            for r in pretrained
        ]
        gap = ''
        if all(by_rule.get(k, {}).get('val_top1') is not None
               for k in ('auglocal', 'bp')):
            diff = by_rule['auglocal']['val_top1'] - by_rule['bp']['val_top1']
            gap = f'; AugLocal - BP {diff:+.2f} points'
        chance_str = f'; chance {chance:.1f}%' if chance else ''
        lines.append(f'val top-1 of ResNet-34 on the synthetic shapes: '
                     f'{", ".join(parts)}{gap}{chance_str}')
        memory = {r['rule']: r.get('memory') or {} for r in pretrained}
        for key, what in (
                ('peak_rss', 'peak training memory (process RSS, whole '
                 'iteration)'),
                ('activation_rss', 'activation memory (peak before the '
                 'optimizer step - memory alive before the iteration - '
                 'gradients)')):
            parts = [
                f'{RULE_NAMES[rule]} {_mib(mem.get(key))}'
                for rule, mem in memory.items()
            ]
            ratio = ''
            if 'auglocal' in memory and 'bp' in memory:
                ratio = (' (AugLocal / BP ' + _ratio(
                    memory['auglocal'].get(key), memory['bp'].get(key)) +
                         ')')
            lines.append(f'{what}: {", ".join(parts)}{ratio}')
    if detected:
        rows = {d['start']: d['row'] for d in detected}
        parts = []
        for start, row in rows.items():
            text = (f'{RULE_NAMES[start]} {row["box AP"]} / '
                    f'{row["mask AP"]}')
            if start != 'random' and 'random' in rows:
                try:
                    text += (
                        ' ({:+.1f} / {:+.1f} over random init)'.format(
                            float(row['box AP']) -
                            float(rows['random']['box AP']),
                            float(row['mask AP']) -
                            float(rows['random']['mask AP'])))
                except ValueError:
                    pass
            parts.append(text)
        lines.append('Mask R-CNN box AP / mask AP (synthetic shapes val) '
                     'from ' + ', '.join(parts))
    lines.append(f'total wall time: {clock(wall_seconds)} '
                 f'({wall_seconds:.0f} s)')
    return lines


def summary_table(pretrained: List[Dict], detected: List[Dict]) -> str:
    """A markdown table: one column per rule / start point."""
    starts = [d['start'] for d in detected]
    names = []
    for key in [r['rule'] for r in pretrained] + starts:
        if key not in names:
            names.append(key)
    by_rule = {r['rule']: r for r in pretrained}
    rows_det = {d['start']: d for d in detected}

    def cell(key, get):
        try:
            value = get(key)
        except (KeyError, TypeError):
            value = None
        return '-' if value is None else value

    def top1(key):
        value = by_rule[key]['val_top1']
        return None if value is None else f'{value:.2f}'

    def mem(field_name):
        return lambda key: _mib((by_rule[key].get('memory') or {}).get(
            field_name)) if key in by_rule else None

    def seconds(key):
        return f'{by_rule[key]["seconds"]:.0f} s'

    def ap(column):
        return lambda key: rows_det[key]['row'][column]

    def ft_seconds(key):
        return f'{rows_det[key]["train_seconds"]:.0f} s'

    table = [
        ('pretraining val top-1 (%)', top1),
        ('peak training memory (process RSS)', mem('peak_rss')),
        ('activation memory (process RSS)', mem('activation_rss')),
        ('parameters + buffers (tensors)', mem('params')),
        ('pretraining time', seconds),
        ('Mask R-CNN box AP', ap('box AP')),
        ('Mask R-CNN mask AP', ap('mask AP')),
        ('fine-tuning time', ft_seconds),
    ]
    out = ['| | ' + ' | '.join(RULE_NAMES[n] for n in names) + ' |',
           '|---' * (len(names) + 1) + '|']
    for title, get in table:
        values = [str(cell(n, get)) for n in names]
        if all(v == '-' for v in values):
            continue
        out.append(f'| {title} | ' + ' | '.join(values) + ' |')
    return '\n'.join(out) + '\n'


def plot_summary(pretrained: List[Dict], detected: List[Dict],
                 path: str) -> None:
    """Bar charts of the top-1, the memory figures and the AP; a PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    panels = []
    if pretrained:
        names = [RULE_NAMES[r['rule']] for r in pretrained]
        panels.append(('val top-1 (%)', names,
                       [[r['val_top1'] or 0. for r in pretrained]], None))
        memory = [r.get('memory') or {} for r in pretrained]
        # two panels: the activations are far smaller than the peak
        panels.append(('peak training memory (MiB, RSS)', names,
                       [[m.get('peak_rss', 0.) for m in memory]], None))
        panels.append(('activation memory (MiB, RSS)', names,
                       [[m.get('activation_rss', 0.) for m in memory]],
                       None))
    if detected:
        names = [RULE_NAMES[d['start']] for d in detected]

        def value(row, key):
            try:
                return float(row[key])
            except (KeyError, ValueError):
                return 0.

        panels.append(('Mask R-CNN AP', names,
                       [[value(d['row'], 'box AP') for d in detected],
                        [value(d['row'], 'mask AP') for d in detected]],
                       ['box AP', 'mask AP']))
    if not panels:
        return
    fig = Figure(figsize=(4 * len(panels), 3.6), dpi=110)
    FigureCanvasAgg(fig)
    for k, (title, names, series, labels) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), k + 1)
        width = 0.8 / len(series)
        for s, values in enumerate(series):
            xs = [i + (s - (len(series) - 1) / 2) * width
                  for i in range(len(names))]
            bars = ax.bar(xs, values, width,
                          label=labels[s] if labels else None)
            for bar, v in zip(bars, values):
                ax.annotate(f'{v:.0f}' if v >= 100 else f'{v:.1f}',
                            (bar.get_x() + bar.get_width() / 2, v),
                            textcoords='offset points', xytext=(0, 2),
                            ha='center', fontsize=7)
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names, fontsize=8)
        ax.set_title(title, fontsize=9)
        ax.grid(True, axis='y', alpha=0.3)
        if labels:
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)


def summarize(pretrained: List[Dict], detected: List[Dict],
              work_root: str = DEFAULT_WORK_DIR,
              wall_seconds: float = 0.) -> List[str]:
    """Print the summary table and the last lines; write ``summary.md``
    and ``summary.png`` into ``work_root``.

    Returns:
        list[str]: The last lines (without the ``[demo]`` prefix).
    """
    print(flush=True)
    for res in pretrained:
        log(f'{RULE_NAMES[res["rule"]]}: backbone -> {res["backbone"]} '
            f'(mmdet/LocalResNet keys), {res["torchvision"]} (torchvision), '
            f'backbone.json; layer-wise plot -> {res["plot"]}')
    os.makedirs(work_root, exist_ok=True)
    table = summary_table(pretrained, detected)
    lines = summary_lines(pretrained, detected, wall_seconds)
    md_path = osp.join(work_root, 'summary.md')
    png_path = osp.join(work_root, 'summary.png')
    with open(md_path, 'w') as f:
        f.write('# Demo summary\n\n' + table + '\n' +
                ''.join(f'- {line}\n' for line in lines))
    plot_summary(pretrained, detected, png_path)
    log(f'summary (also in {md_path}, chart {png_path}):')
    print(table, flush=True)
    for line in lines:
        log(line)
    return lines


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Demo on generated data (CPU, minutes): pretrain '
        'ResNet-34 with AugLocal and BP, export the backbones, fine-tune '
        'Mask R-CNN from them and from random init, print the model-zoo '
        'table and a summary')
    parser.add_argument(
        '--full',
        action='store_true',
        help='the longer variant (configs/demo/*_full.py, its own data '
        'and work dirs)')
    parser.add_argument(
        '--stages',
        nargs='+',
        choices=STAGES,
        default=list(STAGES),
        help='what to run (default: both)')
    parser.add_argument(
        '--rules',
        nargs='+',
        choices=sorted(DEMO_CONFIGS),
        default=['auglocal', 'bp'],
        help='learning rules to pretrain with (default: auglocal bp)')
    parser.add_argument(
        '--starts',
        nargs='+',
        choices=STARTS,
        default=list(STARTS),
        help='backbones Mask R-CNN starts from (default: all three)')
    parser.add_argument(
        '--backbone',
        nargs='+',
        default=[],
        metavar='START=PATH',
        help='fine-tune from this backbone.pth instead of the pretraining '
        'stage\'s export')
    parser.add_argument(
        '--data-root',
        help='synthetic classification data (default: '
        f'{DEFAULT_DATA_ROOT}; with --full '
        f'{PROFILES["full"]["data_root"]})')
    parser.add_argument(
        '--coco-root',
        help=f'synthetic detection data (default: {DEFAULT_COCO_ROOT})')
    parser.add_argument(
        '--work-dir',
        help=f'parent of the work dirs (default: {DEFAULT_WORK_DIR}; with '
        f'--full {PROFILES["full"]["work_dir"]})')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        default=[],
        help='extra key=value overrides of the pretraining runs')
    parser.add_argument(
        '--det-cfg-options',
        nargs='+',
        default=[],
        help='extra key=value overrides of the fine-tuning and test runs')
    parser.add_argument(
        '--det-epochs',
        type=int,
        help='fine-tuning epochs (default: the detection config\'s)')
    parser.add_argument(
        '--parallel',
        type=int,
        help='runs side by side (default: one per core)')
    parser.add_argument(
        '--threads',
        type=int,
        help='intra-op threads per run (default: $OMP_NUM_THREADS, else '
        'the idle cores, shared among parallel runs)')
    parser.add_argument(
        '--quiet',
        action='store_true',
        help='keep the training logs in the work dirs only')
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> Tuple[List, List]:
    begin = time.time()
    args = parse_args(argv)
    os.chdir(ROOT)
    profile = PROFILES['full' if args.full else 'default']
    configs = profile['configs']
    det_config = profile['det_config']
    data_root = args.data_root or profile['data_root']
    coco_root = args.coco_root or profile['coco_root']
    work_root = args.work_dir or profile['work_dir']
    given = {}
    for item in args.backbone:
        start, sep, path = item.partition('=')
        if not sep or start not in configs:
            raise SystemExit(f'error: --backbone expects auglocal=PATH or '
                             f'bp=PATH, got {item!r}')
        given[start] = path

    rules = [r for r in args.rules
             if r not in given] if 'pretrain' in args.stages else []
    starts = args.starts if 'detect' in args.stages else []
    # fail before any training if a start point has no backbone
    backbones = find_backbones(starts, work_root, given, configs,
                               pending=rules)

    # the data first (seconds), then every run as soon as its inputs exist
    if rules:
        prepare_imagenet_shapes(configs['auglocal'], data_root,
                                progress=not args.quiet)
    if starts:
        prepare_coco_shapes(coco_root, progress=not args.quiet)
    jobs: List[Job] = []
    work_dirs: Dict[str, str] = {}
    for rule in rules:
        job, work_dirs[rule] = pretrain_job(rule, data_root, work_root,
                                            args.cfg_options, configs[rule])
        jobs.append(job)
    det_jobs, det_dirs = detection_jobs(
        backbones,
        data_root=coco_root,
        work_root=work_root,
        epochs=args.det_epochs,
        cfg_options=args.det_cfg_options,
        det_config=det_config,
        after={r: f'pretrain {RULE_NAMES[r]}'
               for r in rules})
    # fine-tunings (and their evaluations) that wait for no pretraining
    # first: they start beside the pretrainings
    pairs = [det_jobs[i:i + 2] for i in range(0, len(det_jobs), 2)]
    for pair in sorted(pairs, key=lambda pair: bool(pair[0].after)):
        jobs += pair
    cores = os.cpu_count() or 1
    parallel = args.parallel or max(1, min(cores, len(jobs)))
    threads = args.threads
    if threads is None and 'OMP_NUM_THREADS' not in os.environ:
        threads = max(1, auto_threads() // parallel)
    progress = Progress(jobs, parallel, start=begin)
    seconds = run_jobs(jobs, parallel, threads, args.quiet, progress)
    by_name = {job.name: t for job, t in zip(jobs, seconds)}

    pretrained = [
        dict(read_export(rule, work_dirs[rule]), config=configs[rule],
             seconds=by_name[f'pretrain {RULE_NAMES[rule]}'])
        for rule in rules
    ]
    detected = gather_detection(det_dirs, work_root,
                                by_name) if starts else []
    summarize(pretrained, detected, work_root, time.time() - begin)
    return pretrained, detected


if __name__ == '__main__':
    from auglocal_det.utils.cli import run_with_clean_errors  # noqa: E402
    from auglocal_det.utils.warning_filters import (  # noqa: E402
        ignore_pkg_resources_deprecation,
    )
    ignore_pkg_resources_deprecation()
    try:
        run_with_clean_errors(main)
    except JobFailed as exc:
        print(f'error: {exc}', file=sys.stderr)
        sys.exit(1)
