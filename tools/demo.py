"""The demo: the whole pipeline on generated data, on a CPU in minutes.

Stages (``--stages``; each reusable from Python):

``pretrain``
    1. generate the synthetic shapes set in the ImageNet folder layout
       unless it is there (``data/synthetic_imagenet``; its size comes from
       ``synthetic_data`` in
       ``configs/_base_/datasets/synthetic_imagenet.py``);
    2. pretrain ResNet-34 with AugLocal and with BP (``--rules``) through
       ``tools/train.py`` (MMEngine's Runner, the code path of ImageNet)
       with ``configs/demo/{auglocal,bp}_r34_synthetic.py``;
       ``ExportBackboneHook`` exports each backbone at the end.
``detect``
    3. generate the synthetic COCO-style instance segmentation set unless it
       is there (``data/synthetic_coco``);
    4. fine-tune Mask R-CNN R-34-FPN
       (``configs/demo/mask_rcnn_r34_synthetic.py``) with ``tools/train.py``
       on one schedule and seed from every start point (``--starts``): the
       AugLocal export, the BP export and random init;
    5. evaluate each with ``tools/test.py`` (mmdet's ``CocoMetric``, bbox
       and segm) and print the model-zoo table
       (``tools/analysis_tools/gather_results.py``), also written to
       ``<work_dir>/model_zoo.md``.

The last lines printed are the val top-1 of every pretraining and the box /
mask AP of every fine-tuning.

Examples::

    python tools/demo.py                          # everything
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
from typing import Dict, List, Optional, Sequence, Tuple

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, osp.join(ROOT, 'tools'))

from mmengine.config import Config  # noqa: E402

from auglocal_det.testing import (  # noqa: E402
    ensure_synthetic,
    generate_coco_shapes,
    generate_imagenet_shapes,
)

#: Demo pretraining configs by rule name.
DEMO_CONFIGS = {
    'auglocal': 'configs/demo/auglocal_r34_synthetic.py',
    'bp': 'configs/demo/bp_r34_synthetic.py',
}
RULE_NAMES = {'auglocal': 'AugLocal', 'bp': 'BP', 'random': 'random init'}
DET_CONFIG = 'configs/demo/mask_rcnn_r34_synthetic.py'
#: Start points of the fine-tuning: a pretraining rule, or 'random' (no
#: pretrained weights).
STARTS = ('auglocal', 'bp', 'random')
STAGES = ('pretrain', 'detect')
DEFAULT_DATA_ROOT = 'data/synthetic_imagenet'
DEFAULT_COCO_ROOT = 'data/synthetic_coco'
DEFAULT_WORK_DIR = 'work_dirs/demo'
#: Arguments of generate_coco_shapes for the detection set: 64 px images
#: with 1-4 shapes of 10-28 px (the pixel size of the shapes in the 36 px
#: images the demo backbones are pretrained on).
COCO_DATA = dict(num_train=500, num_val=100, image_size=64, seed=0)


class JobFailed(RuntimeError):
    """A training or test run of the demo exited with an error."""


def log(msg: str) -> None:
    """Print a demo message (flushed, so it interleaves with the Runner)."""
    print(f'[demo] {msg}', flush=True)


def shell(cmd: Sequence[str]) -> str:
    """A command line for the log, with paths relative to the repo."""
    return ' '.join(
        osp.relpath(c, ROOT) if c.startswith(ROOT) else c for c in cmd)


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


def run_jobs(jobs: Sequence[Tuple[str, List[str], str]],
             parallel: int = 1,
             threads: Optional[int] = None,
             quiet: bool = True) -> List[float]:
    """Run commands, ``parallel`` at a time, each logging into its file.

    Args:
        jobs (Sequence[tuple]): ``(name, command, log_path)`` triples.
        parallel (int): How many run at once. Defaults to 1.
        threads (int, optional): ``OMP_NUM_THREADS`` of every job; None
            keeps the environment's. Defaults to None.
        quiet (bool): Only the log files get the output; otherwise a single
            job at a time (``parallel=1``) also prints it. Defaults to True.

    Returns:
        list[float]: Seconds each job took, in the order of ``jobs``.

    Raises:
        JobFailed: If a job fails (after the others have finished); the
            message names its log.
    """
    env = dict(os.environ)
    if threads is not None:
        env['OMP_NUM_THREADS'] = str(threads)
    tee = not quiet and parallel == 1
    pending = list(enumerate(jobs))
    running: Dict[int, tuple] = {}
    seconds: List[float] = [0.] * len(jobs)
    failed: List[str] = []
    while pending or running:
        while pending and len(running) < max(1, parallel):
            index, (name, cmd, log_path) = pending.pop(0)
            log(f'{name}: python {shell(cmd[1:])}')
            log(f'{name}: {env.get("OMP_NUM_THREADS", "default")} '
                f'intra-op thread(s); log: {log_path}')
            log_file = open(log_path, 'w')
            proc = subprocess.Popen(
                cmd,
                cwd=ROOT,
                env=env,
                stdout=subprocess.PIPE if tee else log_file,
                stderr=subprocess.STDOUT,
                text=True)
            running[index] = (name, proc, log_file, log_path, time.time())
            if tee:
                for line in proc.stdout:
                    log_file.write(line)
                    sys.stdout.write(line)
                    sys.stdout.flush()
        for index in list(running):
            name, proc, log_file, log_path, begin = running[index]
            if proc.poll() is None:
                continue
            log_file.close()
            del running[index]
            seconds[index] = time.time() - begin
            if proc.returncode != 0:
                failed.append(f'{name} (exit code {proc.returncode} after '
                              f'{seconds[index]:.0f} s; see {log_path})')
        if running:
            time.sleep(0.5)
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
                     python: str = sys.executable) -> Tuple[List[str], str]:
    """The ``tools/train.py`` command pretraining with one rule.

    Args:
        rule (str): A key of :data:`DEMO_CONFIGS`.
        data_root (str): The synthetic ImageNet-style data.
        work_root (str): Parent of the work dir
            (``<work_root>/<config name>``).
        cfg_options (Sequence[str]): Extra ``key=value`` overrides.
        python (str): Interpreter. Defaults to this one.

    Returns:
        tuple: The command and the work dir.
    """
    config = DEMO_CONFIGS[rule]
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
    """What a pretraining run exported (``<work_dir>/export``).

    Returns:
        dict: ``rule``, ``work_dir``, ``export_dir``, ``backbone`` (path of
        ``backbone.pth``), ``torchvision``, ``sidecar`` (``backbone.json``
        content), ``val_top1``, ``chance`` and ``plot``.

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
        plot=osp.join(work_dir, 'layerwise_accuracy.png'))


def pretrain(rule: str = 'auglocal',
             data_root: str = DEFAULT_DATA_ROOT,
             work_root: str = DEFAULT_WORK_DIR,
             cfg_options: Sequence[str] = (),
             python: str = sys.executable,
             quiet: bool = False,
             threads: Optional[int] = None) -> Dict:
    """Pretrain the demo classifier with ``tools/train.py``; read the export.

    Args:
        rule (str): A key of :data:`DEMO_CONFIGS` ('auglocal' or 'bp').
        data_root (str): The synthetic ImageNet-style data.
        work_root (str): Parent of the run's work dir.
        cfg_options (Sequence[str]): Extra ``--cfg-options`` items.
        python (str): Interpreter for ``tools/train.py``.
        quiet (bool): Write the training log only to
            ``<work_dir>/demo_train.log`` instead of also to the console.
        threads (int, optional): ``OMP_NUM_THREADS`` of the training
            process; None keeps the environment's setting, or uses
            :func:`auto_threads` if it has none.

    Returns:
        dict: :func:`read_export`'s dict plus ``config`` and ``seconds``.

    Raises:
        JobFailed: If training fails (the message names the log).
    """
    cmd, work_dir = pretrain_command(rule, data_root, work_root, cfg_options,
                                     python)
    os.makedirs(work_dir, exist_ok=True)
    if threads is None and 'OMP_NUM_THREADS' not in os.environ:
        threads = auto_threads()
    seconds, = run_jobs([(f'pretrain {RULE_NAMES.get(rule, rule)}', cmd,
                          osp.join(work_dir, 'demo_train.log'))],
                        threads=threads,
                        quiet=quiet)
    return dict(
        read_export(rule, work_dir), config=DEMO_CONFIGS[rule],
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
                     python: str = sys.executable) -> Tuple[List[str], str]:
    """The ``tools/train.py`` command fine-tuning from one start point.

    Args:
        start (str): Name of the start point (``'auglocal'``, ``'bp'``,
            ``'random'``); names the work dir.
        backbone (str, optional): Exported ``backbone.pth``; None trains
            from random init.
        data_root (str): The synthetic COCO-style data.
        work_root (str): Parent of the work dir
            (``<work_root>/mask_rcnn_r34_synthetic_<start>``).
        epochs (int, optional): Override the config's ``max_epochs`` (the
            lr step follows at 2/3 of it).
        cfg_options (Sequence[str]): Extra ``key=value`` overrides.
        python (str): Interpreter. Defaults to this one.

    Returns:
        tuple: The command and the work dir.
    """
    name = osp.splitext(osp.basename(DET_CONFIG))[0]
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
        osp.join(ROOT, DET_CONFIG), '--work-dir', work_dir, '--overwrite',
        '--cfg-options', *options
    ]
    return cmd, work_dir


def evaluate_command(work_dir: str,
                     data_root: str = DEFAULT_COCO_ROOT,
                     cfg_options: Sequence[str] = (),
                     python: str = sys.executable) -> Tuple[List[str], str]:
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
        osp.join(ROOT, DET_CONFIG), checkpoint, '--work-dir', work_dir,
        '--out-metrics', metrics_path, '--cfg-options',
        *coco_data_options(data_root, ['test']), *cfg_options
    ]
    return cmd, metrics_path


def find_backbones(starts: Sequence[str],
                   work_root: str = DEFAULT_WORK_DIR,
                   given: Optional[Dict[str, str]] = None
                   ) -> Dict[str, Optional[str]]:
    """The backbone file of every start point.

    Args:
        starts (Sequence[str]): Start points (see :data:`STARTS`).
        work_root (str): Where the pretraining stage puts its work dirs.
        given (dict, optional): Start point -> backbone file, from the
            command line or from the pretraining stage.

    Returns:
        dict: Start point -> ``backbone.pth`` path (None for 'random').

    Raises:
        FileNotFoundError: If a start point has no backbone; the message
            says how to make one.
    """
    backbones: Dict[str, Optional[str]] = {}
    for start in starts:
        if start == 'random':
            backbones[start] = None
            continue
        path = (given or {}).get(start)
        if path is None:
            name = osp.splitext(osp.basename(DEMO_CONFIGS[start]))[0]
            path = osp.join(work_root, name, 'export', 'backbone.pth')
        if not osp.isfile(path):
            raise FileNotFoundError(
                f'no {RULE_NAMES[start]} backbone at {path}: run `python '
                f'tools/demo.py --stages pretrain --rules {start}` first, or '
                f'pass --backbone {start}=PATH')
        backbones[start] = path
    return backbones


def finetune_and_evaluate(backbones: Dict[str, Optional[str]],
                          data_root: str = DEFAULT_COCO_ROOT,
                          work_root: str = DEFAULT_WORK_DIR,
                          epochs: Optional[int] = None,
                          cfg_options: Sequence[str] = (),
                          parallel: Optional[int] = None,
                          threads: Optional[int] = None,
                          quiet: bool = True) -> List[Dict]:
    """Fine-tune from every backbone, evaluate and print the zoo table.

    Args:
        backbones (dict): Start point -> ``backbone.pth`` (None: random).
        data_root (str): The synthetic COCO-style data (must exist).
        work_root (str): Parent of the work dirs.
        epochs (int, optional): Override the detection config's epochs.
        cfg_options (Sequence[str]): Extra overrides of the training and
            test runs.
        parallel (int, optional): Fine-tunings run side by side. Defaults
            to one per core, at most one per start point.
        threads (int, optional): Intra-op threads of each run. Defaults to
            the environment's ``OMP_NUM_THREADS``, else the idle cores
            shared among the parallel runs (at least 1).
        quiet (bool): Keep the training logs in the work dirs only.

    Returns:
        list[dict]: Per start point: ``start``, ``work_dir``, ``row`` (the
        model-zoo row, with all COCO metrics), ``train_seconds`` and
        ``test_seconds``.
    """
    from analysis_tools.gather_results import collect, to_markdown

    parallel = parallel or max(1, min(len(backbones), os.cpu_count() or 1))
    if threads is None and 'OMP_NUM_THREADS' not in os.environ:
        threads = max(1, auto_threads() // parallel)

    train_jobs, work_dirs = [], {}
    for start, backbone in backbones.items():
        cmd, work_dir = finetune_command(
            start, backbone, data_root=data_root, work_root=work_root,
            epochs=epochs, cfg_options=cfg_options)
        os.makedirs(work_dir, exist_ok=True)
        work_dirs[start] = work_dir
        train_jobs.append((f'fine-tune from {RULE_NAMES[start]}', cmd,
                           osp.join(work_dir, 'demo_train.log')))
    train_seconds = run_jobs(train_jobs, parallel, threads, quiet)

    test_jobs = []
    for start, work_dir in work_dirs.items():
        cmd, _ = evaluate_command(work_dir, data_root, cfg_options)
        test_jobs.append((f'evaluate {RULE_NAMES[start]}', cmd,
                          osp.join(work_dir, 'demo_test.log')))
    test_seconds = run_jobs(test_jobs, parallel, threads, quiet)

    results = [
        dict(
            start=start,
            work_dir=work_dir,
            row=collect(work_dir, osp.join(ROOT, 'configs')),
            train_seconds=train_time,
            test_seconds=test_time)
        for (start, work_dir), train_time, test_time in zip(
            work_dirs.items(), train_seconds, test_seconds)
    ]
    table = to_markdown([r['row'] for r in results])
    table_path = osp.join(work_root, 'model_zoo.md')
    with open(table_path, 'w') as f:
        f.write(table)
    print(flush=True)
    log('Mask R-CNN R-34-FPN on the synthetic shapes (val, CocoMetric); '
        f'also in {table_path}:')
    print(table, flush=True)
    return results


# ----------------------------------------------------------------------


def summarize(pretrained: List[Dict], detected: List[Dict]) -> None:
    """Print where each backbone went, the top-1 and the AP (last lines)."""
    print(flush=True)
    for res in pretrained:
        log(f'{RULE_NAMES[res["rule"]]}: backbone -> {res["backbone"]} '
            f'(mmdet/LocalResNet keys), {res["torchvision"]} (torchvision), '
            f'backbone.json; layer-wise plot -> {res["plot"]}')
    for res in pretrained:
        top1, chance = res['val_top1'], res['chance']
        ratio = f', {top1 / chance:.1f}x chance' if top1 and chance else ''
        top1_str = f'{top1:.2f}%' if top1 is not None else 'n/a'
        chance_str = f'{chance:.1f}%' if chance else 'n/a'
        log(f'val top-1 {RULE_NAMES[res["rule"]]} ResNet-34 (synthetic '
            f'shapes, chance {chance_str}): {top1_str}{ratio}; trained in '
            f'{res["seconds"]:.0f} s')
    for res in detected:
        row = res['row']
        log(f'Mask R-CNN from {RULE_NAMES[res["start"]]}: box AP '
            f'{row["box AP"]}, mask AP {row["mask AP"]} (synthetic shapes '
            f'val; fine-tuned in {res["train_seconds"]:.0f} s)')


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Demo on generated data (CPU, minutes): pretrain '
        'ResNet-34 with AugLocal and BP, export the backbones, fine-tune '
        'Mask R-CNN from them and from random init, print the model-zoo '
        'table')
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
        default=DEFAULT_DATA_ROOT,
        help=f'synthetic classification data (default: {DEFAULT_DATA_ROOT})')
    parser.add_argument(
        '--coco-root',
        default=DEFAULT_COCO_ROOT,
        help=f'synthetic detection data (default: {DEFAULT_COCO_ROOT})')
    parser.add_argument(
        '--work-dir',
        default=DEFAULT_WORK_DIR,
        help=f'parent of the work dirs (default: {DEFAULT_WORK_DIR})')
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
        help='fine-tunings run side by side (default: one per core)')
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
    args = parse_args(argv)
    os.chdir(ROOT)
    given = {}
    for item in args.backbone:
        start, sep, path = item.partition('=')
        if not sep or start not in DEMO_CONFIGS:
            raise SystemExit(f'error: --backbone expects auglocal=PATH or '
                             f'bp=PATH, got {item!r}')
        given[start] = path

    pretrained: List[Dict] = []
    if 'pretrain' in args.stages:
        prepare_imagenet_shapes(DEMO_CONFIGS['auglocal'], args.data_root,
                                progress=not args.quiet)
        for rule in args.rules:
            if rule in given:
                continue
            res = pretrain(
                rule,
                data_root=args.data_root,
                work_root=args.work_dir,
                cfg_options=args.cfg_options,
                quiet=args.quiet,
                threads=args.threads)
            given[rule] = res['backbone']
            pretrained.append(res)

    detected: List[Dict] = []
    if 'detect' in args.stages:
        backbones = find_backbones(args.starts, args.work_dir, given)
        prepare_coco_shapes(args.coco_root, progress=not args.quiet)
        detected = finetune_and_evaluate(
            backbones,
            data_root=args.coco_root,
            work_root=args.work_dir,
            epochs=args.det_epochs,
            cfg_options=args.det_cfg_options,
            parallel=args.parallel,
            threads=args.threads,
            quiet=args.quiet)
    summarize(pretrained, detected)
    return pretrained, detected


if __name__ == '__main__':
    from auglocal_det.utils.cli import run_with_clean_errors  # noqa: E402
    try:
        run_with_clean_errors(main)
    except JobFailed as exc:
        print(f'error: {exc}', file=sys.stderr)
        sys.exit(1)
