"""The demo: local-learning pretraining on synthetic data, on a CPU.

Steps (each reusable from Python, see :func:`pretrain`):

1. generate the synthetic shapes data set in the ImageNet folder layout if
   it is missing (``data/synthetic_imagenet``; its size comes from
   ``synthetic_data`` in ``configs/_base_/datasets/synthetic_imagenet.py``);
2. pretrain ResNet-34 with AugLocal through ``tools/train.py`` (MMEngine's
   Runner, the same code path as ImageNet) with
   ``configs/demo/auglocal_r34_synthetic.py``; ``ExportBackboneHook``
   exports the backbone at the end;
3. print where the backbone went and the validation top-1.

Examples::

    python tools/demo.py                     # AugLocal
    python tools/demo.py --rules auglocal bp # and the BP baseline
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

from mmengine.config import Config  # noqa: E402

from auglocal_det.datasets import (  # noqa: E402
    ensure_synthetic,
    generate_imagenet_shapes,
)

#: Demo pretraining configs by rule name.
DEMO_CONFIGS = {
    'auglocal': 'configs/demo/auglocal_r34_synthetic.py',
    'bp': 'configs/demo/bp_r34_synthetic.py',
}
RULE_NAMES = {'auglocal': 'AugLocal', 'bp': 'BP'}
DEFAULT_DATA_ROOT = 'data/synthetic_imagenet'
DEFAULT_WORK_DIR = 'work_dirs/demo'


def log(msg: str) -> None:
    """Print a demo message (flushed, so it interleaves with the Runner)."""
    print(f'[demo] {msg}', flush=True)


def prepare_imagenet_shapes(config: str,
                            data_root: str,
                            progress: bool = True) -> dict:
    """Generate the synthetic classification set unless it is there.

    Args:
        config (str): A demo config whose ``synthetic_data`` holds the
            arguments of :func:`generate_imagenet_shapes`.
        data_root (str): Output folder.
        progress (bool): Show a progress bar. Defaults to True.

    Returns:
        dict: The data set's stamp (arguments and image counts).
    """
    cfg = Config.fromfile(osp.join(ROOT, config))
    kwargs = dict(cfg.get('synthetic_data', {}))
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


def pretrain(rule: str = 'auglocal',
             data_root: str = DEFAULT_DATA_ROOT,
             work_root: str = DEFAULT_WORK_DIR,
             cfg_options: Optional[Sequence[str]] = None,
             python: str = sys.executable,
             quiet: bool = False,
             threads: Optional[int] = None) -> Dict:
    """Pretrain the demo classifier with ``tools/train.py``; read the export.

    Args:
        rule (str): A key of :data:`DEMO_CONFIGS` ('auglocal' or 'bp').
        data_root (str): The synthetic ImageNet-style data.
        work_root (str): Parent of the run's work dir
            (``<work_root>/<config name>``).
        cfg_options (Sequence[str], optional): Extra ``--cfg-options``
            ``key=value`` items.
        python (str): Interpreter for ``tools/train.py``. Defaults to this
            one.
        quiet (bool): Write the training log only to
            ``<work_dir>/demo_train.log`` instead of also to the console.
        threads (int, optional): ``OMP_NUM_THREADS`` of the training
            process; None keeps the environment's setting, or uses
            :func:`auto_threads` if it has none.

    Returns:
        dict: ``rule``, ``config``, ``work_dir``, ``export_dir``,
        ``backbone`` (path of ``backbone.pth``), ``torchvision``,
        ``sidecar`` (``backbone.json`` content), ``val_top1``, ``chance``,
        ``plot`` and ``seconds``.

    Raises:
        RuntimeError: If training fails (the message names the log).
    """
    config = DEMO_CONFIGS[rule]
    name = osp.splitext(osp.basename(config))[0]
    work_dir = osp.join(work_root, name)
    os.makedirs(work_dir, exist_ok=True)
    options = [
        f'{loader}.dataset.data_root={data_root}'
        for loader in ('train_dataloader', 'val_dataloader',
                       'test_dataloader')
    ] + list(cfg_options or [])
    cmd = [
        python,
        osp.join(ROOT, 'tools', 'train.py'),
        osp.join(ROOT, config), '--work-dir', work_dir, '--cfg-options',
        *options
    ]
    shown = ' '.join(
        osp.relpath(c, ROOT) if c.startswith(ROOT) else c for c in cmd[1:])
    log(f'pretraining {RULE_NAMES.get(rule, rule)} ResNet-34: python '
        f'{shown}')
    env = dict(os.environ)
    if threads is not None or 'OMP_NUM_THREADS' not in env:
        env['OMP_NUM_THREADS'] = str(threads or auto_threads())
    log(f'training with {env["OMP_NUM_THREADS"]} intra-op thread(s); log: '
        f'{osp.join(work_dir, "demo_train.log")}')
    log_path = osp.join(work_dir, 'demo_train.log')
    start = time.time()
    with open(log_path, 'w') as log_file:
        proc = subprocess.Popen(
            cmd,
            env=env,
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
        raise RuntimeError(f'tools/train.py failed with exit code {code} '
                           f'after {seconds:.0f} s; see {log_path}')
    export_dir = osp.join(work_dir, 'export')
    sidecar_path = osp.join(export_dir, 'backbone.json')
    if not osp.isfile(sidecar_path):
        raise RuntimeError(f'training finished but {sidecar_path} is '
                           f'missing (ExportBackboneHook not run?); see '
                           f'{log_path}')
    with open(sidecar_path) as f:
        sidecar = json.load(f)
    num_classes = sidecar.get('num_classes')
    return dict(
        rule=rule,
        config=config,
        work_dir=work_dir,
        export_dir=export_dir,
        backbone=osp.join(export_dir, 'backbone.pth'),
        torchvision=(sidecar.get('files', {}).get('torchvision.pth', {})
                     .get('path')),
        sidecar=sidecar,
        val_top1=sidecar.get('val_top1'),
        chance=100. / num_classes if num_classes else None,
        plot=osp.join(work_dir, 'layerwise_accuracy.png'),
        seconds=seconds)


def summarize(results: List[Dict]) -> None:
    """Print where each backbone went and its val top-1 (the last lines)."""
    print(flush=True)
    for res in results:
        log(f'{RULE_NAMES.get(res["rule"], res["rule"])}: backbone -> '
            f'{res["backbone"]} (mmdet/LocalResNet keys), '
            f'{res["torchvision"]} (torchvision), backbone.json; layer-wise '
            f'plot -> {res["plot"]}')
    for res in results:
        top1, chance = res['val_top1'], res['chance']
        ratio = f', {top1 / chance:.1f}x chance' if top1 and chance else ''
        top1_str = f'{top1:.2f}%' if top1 is not None else 'n/a'
        chance_str = f'{chance:.1f}%' if chance else 'n/a'
        log(f'val top-1 {RULE_NAMES.get(res["rule"], res["rule"])} '
            f'ResNet-34 (synthetic shapes, chance {chance_str}): '
            f'{top1_str}{ratio}; trained in {res["seconds"]:.0f} s')


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Demo: pretrain ResNet-34 with local learning on '
        'generated data (CPU, minutes), export the backbone')
    parser.add_argument(
        '--rules',
        nargs='+',
        choices=sorted(DEMO_CONFIGS),
        default=['auglocal'],
        help='learning rules to pretrain with (default: auglocal)')
    parser.add_argument(
        '--data-root',
        default=DEFAULT_DATA_ROOT,
        help=f'synthetic data folder (default: {DEFAULT_DATA_ROOT})')
    parser.add_argument(
        '--work-dir',
        default=DEFAULT_WORK_DIR,
        help=f'parent of the work dirs (default: {DEFAULT_WORK_DIR})')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        default=[],
        help='extra key=value overrides for tools/train.py')
    parser.add_argument(
        '--quiet',
        action='store_true',
        help='keep the training logs in the work dirs only')
    parser.add_argument(
        '--threads',
        type=int,
        help='intra-op threads for training (default: $OMP_NUM_THREADS, '
        'else all cores on an idle machine and 1 on a busy one)')
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    os.chdir(ROOT)
    prepare_imagenet_shapes(DEMO_CONFIGS['auglocal'], args.data_root)
    results = [
        pretrain(
            rule,
            data_root=args.data_root,
            work_root=args.work_dir,
            cfg_options=args.cfg_options,
            quiet=args.quiet,
            threads=args.threads) for rule in args.rules
    ]
    summarize(results)


if __name__ == '__main__':
    main()
