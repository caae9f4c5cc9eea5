"""The model-zoo table of configs/README.md, gathered from work dirs.

Reads, for every work dir, what MMEngine and our tools wrote there:

- the config the runner dumped (``<work_dir>/<config name>.py``): backbone,
  schedule and pretrained backbone;
- the COCO metrics, preferring a ``tools/test.py --out-metrics`` JSON file
  in the work dir, then the test log ``<timestamp>/<timestamp>.json`` of
  the latest ``tools/test.py`` run, then the last validation entry of the
  training log ``<timestamp>/vis_data/<timestamp>.json``;
- the peak memory, the largest ``memory`` field (MB, logged on GPUs only)
  of the training log.

``tools/analysis_tools/gather_results.py`` is the command line of this
module; ``tools/demo.py`` calls it for its table.
"""
import glob
import json
import os
import os.path as osp
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

from mmengine.config import Config

from auglocal_det.engine.runner.checkpoint import read_dumped_config
from auglocal_det.errors import InputFileNotFoundError

__all__ = ['COLUMNS', 'collect', 'to_markdown', 'write_table']

COLUMNS = ('Backbone', 'Pretrain rule', 'Lr schd', 'Mem (GB)', 'box AP',
           'mask AP', 'Config', 'Download')
BBOX_KEY = 'coco/bbox_mAP'
SEGM_KEY = 'coco/segm_mAP'
#: How the exported ``backbone.json`` names a rule -> how tables print it.
RULE_NAMES = {
    'auglocal': 'AugLocal',
    'bp': 'BP',
    'dgl': 'DGL',
    'infopro': 'InfoPro',
    'predsim': 'PredSim',
    'mlaan': 'MLAAN',
}


def collect(work_dir: str, config_root: str = 'configs') -> Dict[str, Any]:
    """Gather one row of the model-zoo table from a work dir.

    Args:
        work_dir (str): Work dir of a ``tools/train.py`` run, possibly with
            later ``tools/test.py`` runs in it.
        config_root (str): Folder searched for the run's config, to link
            it. Defaults to ``'configs'``.

    Returns:
        dict: ``work_dir``, the table's columns (see :data:`COLUMNS`),
        ``metrics`` (all COCO metrics found) and ``metrics_source`` (the
        file they were read from).

    Raises:
        FileNotFoundError: If ``work_dir`` does not exist or holds no
            dumped config.
        InputError: If the dumped config is not assignments of literals
            (it is read as data, never executed).
    """
    if not osp.isdir(work_dir):
        raise InputFileNotFoundError(f'work dir {work_dir!r} not found')
    cfg_path = _find_config(work_dir)
    cfg = read_dumped_config(cfg_path)
    metrics, source = _find_metrics(work_dir)
    memory = _peak_memory_mb(work_dir)
    row = {
        'work_dir': work_dir,
        'Backbone': _backbone_name(cfg),
        'Pretrain rule': _pretrain_rule(cfg),
        'Lr schd': _schedule_name(cfg),
        'Mem (GB)': '-' if memory is None else f'{memory / 1024:.1f}',
        'box AP': _ap(metrics, BBOX_KEY),
        'mask AP': _ap(metrics, SEGM_KEY),
        'Config': _config_link(_config_name(work_dir, cfg_path),
                               config_root),
        'Download': '-',
        'metrics': metrics,
        'metrics_source': source,
    }
    return row


def to_markdown(rows: Sequence[Dict[str, Any]]) -> str:
    """Render rows as mmdet's model-zoo markdown table."""
    lines = [
        '| ' + ' | '.join(COLUMNS) + ' |',
        '| ' + ' | '.join(':-:' for _ in COLUMNS) + ' |',
    ]
    for row in rows:
        lines.append('| ' + ' | '.join(str(row[c]) for c in COLUMNS) + ' |')
    return '\n'.join(lines) + '\n'


# ----------------------------------------------------------------------
# reading the work dir
# ----------------------------------------------------------------------
def _find_config(work_dir: str) -> str:
    """The config of the latest training run in the work dir.

    Every run saves its config as ``<timestamp>/vis_data/config.py``; the
    one at the top of the work dir is overwritten by later runs, including
    ``tools/test.py`` runs, which do not carry the training overrides.
    """
    train_configs = [
        osp.join(run_dir, 'vis_data', 'config.py')
        for run_dir in _run_dirs(work_dir) if _is_training_run(run_dir)
    ]
    train_configs = [p for p in train_configs if osp.isfile(p)]
    if train_configs:
        return _newest_first(train_configs)[0]
    candidates = glob.glob(osp.join(work_dir, '*.py'))
    if not candidates:
        raise InputFileNotFoundError(
            f'no dumped config (*.py) in work dir {work_dir!r}; is it the '
            f'work dir of a tools/train.py run?')
    return _newest_first(candidates)[0]


def _config_name(work_dir: str, cfg_path: str) -> str:
    """File name of the run's config (the runner dumps it under its name)."""
    dumped = glob.glob(osp.join(work_dir, '*.py'))
    return osp.basename(_newest_first(dumped)[0] if dumped else cfg_path)


def _is_training_run(run_dir: str) -> bool:
    """Whether a ``<timestamp>`` folder logged training iterations."""
    stamp = osp.basename(run_dir)
    log = osp.join(run_dir, 'vis_data', f'{stamp}.json')
    return osp.isfile(log) and any('loss' in e for e in _json_lines(log))


def _find_metrics(work_dir: str) -> Tuple[Dict[str, float], str]:
    """The most authoritative COCO metrics in the work dir, and their file.

    Order: ``tools/test.py --out-metrics`` files, then the latest test log,
    then the last validation entry of the latest training log.
    """
    for path in _newest_first(glob.glob(osp.join(work_dir, '*.json'))):
        data = _read_json(path)
        if isinstance(data, dict) and _has_coco(data.get('metrics')):
            return _coco_only(data['metrics']), path

    test_logs, train_logs = [], []
    for run_dir in _run_dirs(work_dir):
        stamp = osp.basename(run_dir)
        test_log = osp.join(run_dir, f'{stamp}.json')
        if osp.isfile(test_log):
            test_logs.append(test_log)
        train_log = osp.join(run_dir, 'vis_data', f'{stamp}.json')
        if osp.isfile(train_log):
            train_logs.append(train_log)
    for path in _newest_first(test_logs):
        data = _read_json(path)
        if isinstance(data, dict) and _has_coco(data):
            return _coco_only(data), path
    for path in _newest_first(train_logs):
        val_entries = [e for e in _json_lines(path) if _has_coco(e)]
        if val_entries:
            return _coco_only(val_entries[-1]), path
    return {}, 'none (no COCO metrics found)'


def _peak_memory_mb(work_dir: str) -> Optional[float]:
    """Largest ``memory`` (MB) logged during training, if any."""
    peak = None
    for run_dir in _run_dirs(work_dir):
        for path in glob.glob(osp.join(run_dir, 'vis_data', '*.json')):
            for entry in _json_lines(path):
                value = entry.get('memory')
                if isinstance(value, (int, float)):
                    peak = value if peak is None else max(peak, value)
    return peak


def _run_dirs(work_dir: str) -> List[str]:
    """The ``<timestamp>`` folders MMEngine writes one per run."""
    return sorted(d for d in glob.glob(osp.join(work_dir, '*'))
                  if osp.isdir(d) and osp.basename(d)[:1].isdigit())


def _newest_first(paths: Sequence[str]) -> List[str]:
    return sorted(paths, key=lambda p: (osp.getmtime(p), p), reverse=True)


def _read_json(path: str) -> Any:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _json_lines(path: str) -> Iterator[Dict[str, Any]]:
    """Entries of a scalars log (one JSON object per line)."""
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                entry = json.loads(line)
            except ValueError:
                continue  # a line cut short by an interrupted run
            if isinstance(entry, dict):
                yield entry


def _has_coco(entry: Any) -> bool:
    return isinstance(entry, dict) and (BBOX_KEY in entry
                                        or SEGM_KEY in entry)


def _coco_only(entry: Dict[str, Any]) -> Dict[str, float]:
    return {
        k: float(v)
        for k, v in entry.items()
        if k.startswith('coco/') and isinstance(v, (int, float))
    }


# ----------------------------------------------------------------------
# table cells
# ----------------------------------------------------------------------
def _ap(metrics: Dict[str, float], key: str) -> str:
    """CocoMetric's AP in [0, 1] as the zoo's percentage with 1 decimal."""
    return f'{metrics[key] * 100:.1f}' if key in metrics else '-'


def _backbone_name(cfg: Config) -> str:
    backbone = cfg.model.get('backbone', {})
    depth = backbone.get('depth')
    return f'R-{depth}' if depth else str(backbone.get('type', '-'))


def _pretrain_rule(cfg: Config) -> str:
    """The learning rule of the backbone the detector started from.

    Read from the ``backbone.json`` next to the exported ``backbone.pth``
    when it is there, otherwise guessed from the file's path.
    """
    init_cfg = cfg.model.get('backbone', {}).get('init_cfg')
    if not isinstance(init_cfg, dict) or \
            init_cfg.get('type') != 'Pretrained':
        return 'none (random init)'
    checkpoint = str(init_cfg.get('checkpoint', ''))
    meta = _read_json(osp.join(osp.dirname(checkpoint), 'backbone.json'))
    if isinstance(meta, dict) and meta.get('rule'):
        return _rule_from_export(meta)
    lowered = checkpoint.lower()
    for key, name in RULE_NAMES.items():
        if key != 'bp' and key in lowered:
            return name
    if 'bp_' in lowered or '/bp' in lowered:
        return 'BP'
    return osp.basename(checkpoint) or '-'


def _rule_from_export(meta: Dict[str, Any]) -> str:
    """Name the rule recorded by the export (``backbone.json``).

    Local rules are recorded as ``rule='local'`` plus the auxiliary head
    (``'AugLocalAuxHead'``, ...); MLAAN by its classifier.
    """
    rule = str(meta['rule'])
    if rule.lower() in RULE_NAMES:
        return RULE_NAMES[rule.lower()]
    if 'mlaan' in str(meta.get('model', '')).lower():
        return RULE_NAMES['mlaan']
    head = str(meta.get('aux_head') or '')
    if head.endswith('AuxHead'):
        head = head[:-len('AuxHead')]
    return RULE_NAMES.get(head.lower(), head or rule)


def _schedule_name(cfg: Config) -> str:
    """mmdet's schedule names: 1x = 12 epochs, 2x = 24, 3x = 36."""
    train_cfg = cfg.get('train_cfg') or {}
    epochs = train_cfg.get('max_epochs')
    if epochs:
        return f'{epochs // 12}x' if epochs % 12 == 0 else f'{epochs}e'
    iters = train_cfg.get('max_iters')
    return f'{iters}it' if iters else '-'


def _config_link(name: str, config_root: str) -> str:
    """Link to the config called ``name`` under ``config_root``."""
    for root, _, files in os.walk(config_root):
        if name in files:
            rel = osp.relpath(osp.join(root, name), config_root)
            return f'[config]({rel.replace(os.sep, "/")})'
    return name


def write_table(rows: Sequence[Dict[str, Any]],
                out: Optional[str] = None,
                json_out: Optional[str] = None) -> str:
    """Render ``rows`` and write the table and/or the rows as JSON.

    Args:
        rows (Sequence[dict]): Rows of :func:`collect`.
        out (str, optional): Path of the markdown table. Defaults to None.
        json_out (str, optional): Path of the rows as JSON. Defaults to
            None.

    Returns:
        str: The markdown table.
    """
    table = to_markdown(rows)
    if out:
        _makedirs_for(out)
        with open(out, 'w') as f:
            f.write(table)
    if json_out:
        _makedirs_for(json_out)
        with open(json_out, 'w') as f:
            json.dump(rows, f, indent=2)
    return table


def _makedirs_for(path: str) -> None:
    folder = osp.dirname(osp.abspath(path))
    os.makedirs(folder, exist_ok=True)
