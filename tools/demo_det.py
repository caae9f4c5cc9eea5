"""The detection part of the demo: Mask R-CNN from the demo backbones.

Runs after ``tools/demo.py`` has pretrained and exported the demo
ResNet-34s (it pretrains the missing ones itself):

1. generate the synthetic COCO-style instance segmentation set
   (``data/synthetic_coco``) unless it is there;
2. fine-tune Mask R-CNN R-34-FPN (``configs/demo/mask_rcnn_r34_synthetic.py``)
   with ``tools/train.py`` three times on the same short schedule and seed:
   from the AugLocal backbone, from the BP backbone and from random init;
3. evaluate each with ``tools/test.py`` (mmdet's ``CocoMetric``, bbox and
   segm) and print the model-zoo table
   (``tools/analysis_tools/gather_results.py``), also written to
   ``<work_dir>/model_zoo.md``.

Examples::

    python tools/demo_det.py
    python tools/demo_det.py --starts auglocal random --epochs 2
    python tools/demo_det.py --backbone auglocal=PATH/backbone.pth
"""
import argparse
import json
import os
import os.path as osp
import subprocess
import sys
import time
from typing import Dict, List, Optional, Sequence

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, osp.join(ROOT, 'tools'))

from analysis_tools.gather_results import collect, to_markdown  # noqa: E402

from auglocal_det.datasets import (  # noqa: E402
    ensure_synthetic,
    generate_coco_shapes,
)

DET_CONFIG = 'configs/demo/mask_rcnn_r34_synthetic.py'
DEFAULT_DATA_ROOT = 'data/synthetic_coco'
DEFAULT_WORK_DIR = 'work_dirs/demo'
#: Start points of the fine-tuning: a pretraining rule of tools/demo.py, or
#: 'random' (no pretrained weights).
STARTS = ('auglocal', 'bp', 'random')
#: Arguments of generate_coco_shapes for the demo set: 96 px images with
#: 1-4 shapes of 15-42 px.
COCO_DATA = dict(num_train=500, num_val=100, image_size=96, seed=0)


def log(msg: str) -> None:
    """Print a demo message (flushed, so it interleaves with the Runner)."""
    print(f'[demo_det] {msg}', flush=True)


def prepare_coco_shapes(data_root: str = DEFAULT_DATA_ROOT,
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


def data_options(data_root: str) -> List[str]:
    """``--cfg-options`` that point the demo config at ``data_root``."""
    root = data_root.rstrip('/') + '/'
    options = [
        f'{loader}.dataset.data_root={root}'
        for loader in ('train_dataloader', 'val_dataloader',
                       'test_dataloader')
    ]
    ann_file = f'{root}annotations/instances_val.json'
    options += [f'val_evaluator.ann_file={ann_file}',
                f'test_evaluator.ann_file={ann_file}']
    return options


def run_logged(cmd: Sequence[str], log_path: str, quiet: bool) -> float:
    """Run a command, teeing its output into ``log_path``.

    Returns:
        float: Seconds it took.

    Raises:
        RuntimeError: If it fails; the message names the log.
    """
    start = time.time()
    with open(log_path, 'w') as log_file:
        proc = subprocess.Popen(
            list(cmd),
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1)
        for line in proc.stdout:
            log_file.write(line)
            if not quiet:
                sys.stdout.write(line)
                sys.stdout.flush()
        code = proc.wait()
    seconds = time.time() - start
    if code != 0:
        raise RuntimeError(f'{osp.relpath(cmd[1], ROOT)} failed with exit '
                           f'code {code} after {seconds:.0f} s; see '
                           f'{log_path}')
    return seconds


def finetune(start: str,
             backbone: Optional[str],
             data_root: str = DEFAULT_DATA_ROOT,
             work_root: str = DEFAULT_WORK_DIR,
             epochs: Optional[int] = None,
             cfg_options: Sequence[str] = (),
             python: str = sys.executable,
             quiet: bool = False) -> Dict:
    """Fine-tune and evaluate the demo Mask R-CNN from one start point.

    Args:
        start (str): Name of the start point (``'auglocal'``, ``'bp'``,
            ``'random'``); names the work dir.
        backbone (str, optional): Exported ``backbone.pth``; None trains
            from random init.
        data_root (str): The synthetic COCO-style data.
        work_root (str): Parent of the work dir
            (``<work_root>/mask_rcnn_r34_synthetic_<start>``).
        epochs (int, optional): Override the config's ``max_epochs``
            (the lr steps follow at 2/3 and 5/6 of it).
        cfg_options (Sequence[str]): Extra ``key=value`` overrides.
        python (str): Interpreter for the tools. Defaults to this one.
        quiet (bool): Keep the logs in the work dir only.

    Returns:
        dict: ``start``, ``work_dir``, ``checkpoint``, ``metrics`` (the
        ``tools/test.py --out-metrics`` content), ``train_seconds`` and
        ``test_seconds``.
    """
    name = osp.splitext(osp.basename(DET_CONFIG))[0]
    work_dir = osp.join(work_root, f'{name}_{start}')
    os.makedirs(work_dir, exist_ok=True)
    options = data_options(data_root)
    if backbone is None:
        options.append('model.backbone.init_cfg=None')
    else:
        options.append(f'model.backbone.init_cfg.checkpoint={backbone}')
    if epochs is not None:
        steps = sorted({max(1, round(epochs * 2 / 3)),
                        max(1, round(epochs * 5 / 6))})
        options += [
            f'train_cfg.max_epochs={epochs}',
            f'train_cfg.val_interval={epochs}',
            f'param_scheduler.1.end={epochs}',
            f'param_scheduler.1.milestones={steps}'.replace(' ', ''),
            f'default_hooks.checkpoint.interval={epochs}',
        ]
    # the final numbers come from tools/test.py: no validation in training
    options += ['val_cfg=None', 'val_dataloader=None', 'val_evaluator=None']
    options += list(cfg_options)

    config = osp.join(ROOT, DET_CONFIG)
    train_cmd = [
        python,
        osp.join(ROOT, 'tools', 'train.py'), config, '--work-dir', work_dir,
        '--cfg-options', *options
    ]
    label = backbone or 'random init'
    log(f'fine-tuning Mask R-CNN from {label}: '
        f'{_shell(train_cmd[1:])}')
    train_seconds = run_logged(train_cmd,
                               osp.join(work_dir, 'demo_train.log'), quiet)

    with open(osp.join(work_dir, 'last_checkpoint')) as f:
        checkpoint = f.read().strip()
    metrics_path = osp.join(work_dir, 'test_metrics.json')
    test_cmd = [
        python,
        osp.join(ROOT, 'tools', 'test.py'), config, checkpoint,
        '--work-dir', work_dir, '--out-metrics', metrics_path,
        '--cfg-options', *data_options(data_root)
    ]
    log(f'evaluating: {_shell(test_cmd[1:])}')
    test_seconds = run_logged(test_cmd, osp.join(work_dir, 'demo_test.log'),
                              quiet)
    with open(metrics_path) as f:
        metrics = json.load(f)['metrics']
    return dict(
        start=start,
        work_dir=work_dir,
        checkpoint=checkpoint,
        metrics=metrics,
        train_seconds=train_seconds,
        test_seconds=test_seconds)


def find_backbones(starts: Sequence[str],
                   work_root: str = DEFAULT_WORK_DIR,
                   given: Optional[Dict[str, str]] = None,
                   pretrain_missing: bool = True,
                   quiet: bool = False) -> Dict[str, Optional[str]]:
    """The backbone file of every start point, pretraining missing ones.

    Args:
        starts (Sequence[str]): Start points (see :data:`STARTS`).
        work_root (str): Where ``tools/demo.py`` puts its work dirs.
        given (dict, optional): Start point -> backbone file, from the
            command line.
        pretrain_missing (bool): Run ``tools/demo.py``'s pretraining for a
            rule whose export is missing; otherwise raise.
        quiet (bool): Keep the pretraining logs in the work dirs only.

    Returns:
        dict: Start point -> ``backbone.pth`` path (None for 'random').
    """
    import demo  # tools/demo.py: the pretraining part of the demo

    backbones: Dict[str, Optional[str]] = {}
    for start in starts:
        if start == 'random':
            backbones[start] = None
            continue
        if given and start in given:
            backbones[start] = given[start]
            continue
        config = demo.DEMO_CONFIGS[start]
        name = osp.splitext(osp.basename(config))[0]
        path = osp.join(work_root, name, 'export', 'backbone.pth')
        if not osp.isfile(path):
            if not pretrain_missing:
                raise FileNotFoundError(
                    f'no {start} backbone at {path}; run `python '
                    f'tools/demo.py --rules {start}` first or pass '
                    f'--backbone {start}=PATH')
            log(f'{path} is missing: pretraining it with tools/demo.py')
            demo.prepare_imagenet_shapes(config, demo.DEFAULT_DATA_ROOT)
            path = demo.pretrain(
                start, work_root=work_root, quiet=quiet)['backbone']
        backbones[start] = path
    return backbones


def run_detection_demo(backbones: Dict[str, Optional[str]],
                       data_root: str = DEFAULT_DATA_ROOT,
                       work_root: str = DEFAULT_WORK_DIR,
                       epochs: Optional[int] = None,
                       quiet: bool = True) -> List[Dict]:
    """Fine-tune from every backbone, evaluate and print the zoo table.

    Args:
        backbones (dict): Start point -> ``backbone.pth`` (None: random).
        data_root (str): The synthetic COCO-style data (generated if
            missing).
        work_root (str): Parent of the work dirs.
        epochs (int, optional): Override the demo config's epochs.
        quiet (bool): Keep the training logs in the work dirs only.

    Returns:
        list[dict]: One :func:`finetune` result per start point, with the
        model-zoo ``row`` added.
    """
    os.chdir(ROOT)
    prepare_coco_shapes(data_root, progress=not quiet)
    results = []
    for start, backbone in backbones.items():
        res = finetune(
            start,
            backbone,
            data_root=data_root,
            work_root=work_root,
            epochs=epochs,
            quiet=quiet)
        res['row'] = collect(res['work_dir'], osp.join(ROOT, 'configs'))
        log(f'{start}: box AP {res["row"]["box AP"]}, mask AP '
            f'{res["row"]["mask AP"]} (train {res["train_seconds"]:.0f} s, '
            f'test {res["test_seconds"]:.0f} s)')
        results.append(res)

    table = to_markdown([r['row'] for r in results])
    table_path = osp.join(work_root, 'model_zoo.md')
    with open(table_path, 'w') as f:
        f.write(table)
    print(flush=True)
    log('Mask R-CNN R-34-FPN on the synthetic shapes (val, CocoMetric); '
        f'also in {table_path}:')
    print(table, flush=True)
    return results


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Demo, detection part: fine-tune Mask R-CNN R-34-FPN '
        'on generated COCO-style data from the AugLocal and BP demo '
        'backbones and from random init (CPU, minutes)')
    parser.add_argument(
        '--starts',
        nargs='+',
        choices=STARTS,
        default=list(STARTS),
        help='backbones to start from (default: all three)')
    parser.add_argument(
        '--backbone',
        nargs='+',
        default=[],
        metavar='START=PATH',
        help='use this backbone.pth for a start point instead of the '
        'tools/demo.py export')
    parser.add_argument(
        '--no-pretrain',
        action='store_true',
        help='fail instead of pretraining a missing demo backbone')
    parser.add_argument(
        '--epochs', type=int, help='override the config\'s epochs')
    parser.add_argument(
        '--data-root',
        default=DEFAULT_DATA_ROOT,
        help=f'synthetic COCO-style data (default: {DEFAULT_DATA_ROOT})')
    parser.add_argument(
        '--work-dir',
        default=DEFAULT_WORK_DIR,
        help=f'parent of the work dirs (default: {DEFAULT_WORK_DIR})')
    parser.add_argument(
        '--verbose',
        action='store_true',
        help='also print the training and test logs')
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = parse_args(argv)
    os.chdir(ROOT)
    given = {}
    for item in args.backbone:
        start, sep, path = item.partition('=')
        if not sep or start not in STARTS or start == 'random':
            raise ValueError(f'--backbone expects auglocal=PATH or '
                             f'bp=PATH, got {item!r}')
        given[start] = path
    backbones = find_backbones(
        args.starts,
        work_root=args.work_dir,
        given=given,
        pretrain_missing=not args.no_pretrain,
        quiet=not args.verbose)
    run_detection_demo(
        backbones,
        data_root=args.data_root,
        work_root=args.work_dir,
        epochs=args.epochs,
        quiet=not args.verbose)


def _shell(cmd: Sequence[str]) -> str:
    """A command line for the log, with paths relative to the repo."""
    return ' '.join(
        osp.relpath(c, ROOT) if c.startswith(ROOT) else c for c in cmd)


if __name__ == '__main__':
    main()
