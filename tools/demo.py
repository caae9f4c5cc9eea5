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

``--full`` runs the longer variant (``configs/demo/*_full.py``, with
its own data folders).

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
import sys
import time
from typing import Dict, List, Optional, Sequence, Tuple

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
from auglocal_det.utils.demo_summary import (  # noqa: E402,F401
    REAL_DATA_NOTE,
    RULE_NAMES,
    write_summary,
)
from auglocal_det.utils.jobs import (  # noqa: E402,F401
    Job,
    JobFailed,
    Progress,
    auto_threads,
    clock,
)
from auglocal_det.utils.jobs import run_jobs as run_commands  # noqa: E402

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
#: Relative cost of each kind of run of the default demo, for the ETA.
#: Only the ratios matter; docs/benchmarks.md#demo gives the timings they
#: come from.
RUN_COSTS = {'pretrain auglocal': 3.3, 'pretrain bp': 0.55, 'fine-tune': 1.,
             'evaluate': 0.15}


def log(msg: str) -> None:
    """Print a demo message (flushed, so it interleaves with the Runner)."""
    print(f'[demo] {msg}', flush=True)


def run_jobs(jobs: Sequence,
             parallel: int = 1,
             threads: Optional[int] = None,
             quiet: bool = True,
             progress: Optional[Progress] = None) -> List[float]:
    """:func:`~auglocal_det.utils.jobs.run_jobs` from the repository root,
    with the demo's log lines."""
    return run_commands(
        jobs, parallel, threads, quiet, progress, cwd=ROOT, log=log)


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
    table, lines, md_path, png_path = write_summary(
        pretrained, detected, work_root, wall_seconds)
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
    progress = Progress(jobs, parallel, start=begin, log=log)
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
