"""Training loss of the network's output per epoch, read from work dirs.

MMEngine's ``LocalVisBackend`` writes every logged training iteration to
``<work_dir>/<timestamp>/vis_data/scalars.json`` (one JSON object per
line). The loss of the network's output is that of the last local module
(``loss_lNN`` with the largest NN) for a local rule and ``loss_cls`` for
back-propagation; its per-epoch mean is the learning curve the AugLocal
paper plots (Ma et al., ICLR 2024, appendix, Figure 1).
"""
import glob
import json
import os.path as osp
import re
from collections import OrderedDict
from typing import Dict, List, Optional, Sequence

from auglocal_det.errors import InputError, InputFileNotFoundError
from auglocal_det.fileio import save_json_atomic
from auglocal_det.plot_style import new_figure, save_figure

__all__ = [
    'read_train_records', 'output_loss_key', 'read_learning_curve',
    'plot_learning_curves', 'learning_curves'
]

_MODULE_LOSS = re.compile(r'^loss_l(\d+)$')


def read_train_records(work_dir: str) -> List[dict]:
    """The logged training iterations of a work dir, in order.

    Every run (``<timestamp>`` folder) is read in time order; an iteration
    logged again by a resumed run replaces the earlier record.

    Args:
        work_dir (str): A training work dir.

    Returns:
        list[dict]: One record per logged iteration (with ``epoch``,
        ``iter`` and the logged values), sorted by ``iter``.
    """
    if not osp.isdir(work_dir):
        raise InputFileNotFoundError(
            f'work dir {work_dir!r} does not exist')
    files = sorted(
        glob.glob(osp.join(work_dir, '*', 'vis_data', 'scalars.json')))
    if not files:
        raise InputFileNotFoundError(
            f'work dir {work_dir!r} has no training log '
            '(<work_dir>/<timestamp>/vis_data/scalars.json, written by '
            "MMEngine's LocalVisBackend); train with tools/train.py first")
    records: Dict[int, dict] = {}
    for path in files:
        with open(path) as f:
            for lineno, line in enumerate(f, 1):
                line = line.strip()
                if not line:
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise InputError(f'{path}:{lineno}: not a JSON line '
                                     f'({exc})') from exc
                if 'loss' in record and 'epoch' in record:
                    records[int(record['iter'])] = record
    return [records[i] for i in sorted(records)]


def output_loss_key(records: Sequence[dict]) -> str:
    """Name of the logged loss of the network's output.

    Args:
        records (Sequence[dict]): Training records.

    Returns:
        str: ``loss_lNN`` of the last local module, else ``loss_cls``, else
        ``loss``.
    """
    keys = set().union(*(r.keys() for r in records)) if records else set()
    modules = [int(m.group(1)) for m in map(_MODULE_LOSS.match, keys) if m]
    if modules:
        width = max(2, len(str(max(modules))))
        return f'loss_l{max(modules):0{width}d}'
    return 'loss_cls' if 'loss_cls' in keys else 'loss'


def read_learning_curve(work_dir: str,
                        key: Optional[str] = None,
                        name: Optional[str] = None,
                        points_per_epoch: int = 1) -> dict:
    """Per-epoch mean of the output loss logged in a work dir.

    Args:
        work_dir (str): A training work dir.
        key (str, optional): Logged loss to read; defaults to
            :func:`output_loss_key`.
        name (str, optional): Label of the curve; defaults to the work
            dir's folder name.
        points_per_epoch (int): Split each epoch's logged iterations into
            this many consecutive parts of (nearly) equal count and give
            the mean of each, placed at the middle of its part of the
            epoch. Defaults to 1 (one mean per epoch, at the epoch's
            number).

    Returns:
        dict: ``name``, ``work_dir``, ``key``, ``epochs`` (the x values:
        epoch numbers, or fractional epochs with several points per epoch)
        and ``loss`` (the means).
    """
    if isinstance(points_per_epoch, bool) or not isinstance(
            points_per_epoch, int) or points_per_epoch < 1:
        raise InputError('--points-per-epoch must be a positive integer, '
                         f'got {points_per_epoch!r}')
    records = read_train_records(work_dir)
    if not records:
        raise InputError(f'the training log of {work_dir!r} has no logged '
                         'iteration with a loss')
    key = key or output_loss_key(records)
    per_epoch: Dict[int, List[float]] = OrderedDict()
    for record in records:
        if key in record:
            per_epoch.setdefault(int(record['epoch']), []).append(
                float(record[key]))
    if not per_epoch:
        raise InputError(f'the training log of {work_dir!r} has no {key!r} '
                         '(choose the loss with --key)')
    xs: List[float] = []
    means: List[float] = []
    for epoch in sorted(per_epoch):
        values = per_epoch[epoch]
        if points_per_epoch == 1:
            xs.append(epoch)
            means.append(sum(values) / len(values))
            continue
        parts = min(points_per_epoch, len(values))
        bounds = [round(k * len(values) / parts) for k in range(parts + 1)]
        for k in range(parts):
            part = values[bounds[k]:bounds[k + 1]]
            xs.append(epoch - 1 + (k + 0.5) / parts)
            means.append(sum(part) / len(part))
    return dict(
        name=name or osp.basename(osp.normpath(work_dir)),
        work_dir=work_dir,
        key=key,
        epochs=xs,
        loss=means)


def plot_learning_curves(curves: Sequence[dict],
                         path: str,
                         title: str = 'Training loss of the network output'
                         ) -> None:
    """One line per curve, loss on a log scale against epoch; save a PNG.

    Args:
        curves (Sequence[dict]): Results of :func:`read_learning_curve`.
        path (str): Output PNG (written atomically).
        title (str): Figure title.
    """
    fig, ax = new_figure()
    for curve in curves:
        ax.plot(
            curve['epochs'],
            curve['loss'],
            marker='o' if len(curve['epochs']) <= 20 else None,
            markersize=3,
            linewidth=1.6,
            label=f'{curve["name"]} ({curve["key"]})')
    from matplotlib.ticker import MaxNLocator
    ax.set_yscale('log')
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel('epoch')
    per_epoch = all(
        float(x).is_integer() for curve in curves for x in curve['epochs'])
    ax.set_ylabel('training loss (mean over the epoch)' if per_epoch else
                  'training loss (mean over each part of an epoch)')
    ax.grid(True, which='both', alpha=0.3)
    ax.set_title(title)
    ax.legend(loc='best', fontsize=8)
    save_figure(fig, path)


def learning_curves(work_dirs: Sequence[str],
                    out: str,
                    names: Optional[Sequence[str]] = None,
                    key: Optional[str] = None,
                    points_per_epoch: int = 1) -> List[dict]:
    """Read the work dirs, write ``out`` (PNG) and its numbers (JSON).

    Args:
        work_dirs (Sequence[str]): Training work dirs, one line each.
        out (str): Output PNG; the numbers go to the same name with
            ``.json``.
        names (Sequence[str], optional): Labels, one per work dir.
        key (str, optional): Logged loss to plot (default: the output's).
        points_per_epoch (int): Points of each curve per epoch (see
            :func:`read_learning_curve`). Defaults to 1.

    Returns:
        list[dict]: The curves.
    """
    if not out.endswith('.png'):
        raise InputError(f'--out must name a .png file, got {out!r}')
    if names is not None and len(names) != len(work_dirs):
        raise InputError(f'--names gives {len(names)} labels for '
                         f'{len(work_dirs)} work dirs')
    curves = [
        read_learning_curve(d, key, names[i] if names else None,
                            points_per_epoch)
        for i, d in enumerate(work_dirs)
    ]
    plot_learning_curves(curves, out)
    save_json_atomic(dict(curves=curves), out[:-len('.png')] + '.json')
    return curves
