"""Fill the model-zoo table of configs/README.md from training work dirs.

Reads, for every work dir, the config the runner dumped, the COCO metrics
(a ``tools/test.py --out-metrics`` JSON file, the latest test log, or the
last validation of the training log) and the peak memory the training log
recorded (GPUs only); see :mod:`auglocal_det.analysis.model_zoo`.

Example::

    python tools/analysis_tools/gather_results.py \\
        work_dirs/mask_rcnn_auglocal_r34_coco \\
        work_dirs/mask_rcnn_bp_r34_coco --out work_dirs/model_zoo.md
"""
import argparse
import os.path as osp
import sys
from typing import Any, Dict, List, Optional, Sequence

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(
    osp.abspath(__file__)))))
from auglocal_det.analysis.model_zoo import collect, write_table  # noqa: E402


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Gather COCO results of detection work dirs into the '
        'model-zoo markdown table')
    parser.add_argument(
        'work_dirs', nargs='+', help='work dirs of tools/train.py runs')
    parser.add_argument(
        '--config-root',
        default='configs',
        help='folder searched for the config of each run, to link it. '
        'Defaults to configs')
    parser.add_argument('--out', help='also write the markdown table here')
    parser.add_argument('--json', help='also write the rows as JSON here')
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> List[Dict[str, Any]]:
    args = parse_args(argv)
    rows = [collect(d, args.config_root) for d in args.work_dirs]
    print(write_table(rows, args.out, args.json), end='')
    for row in rows:
        print(f'{row["work_dir"]}: metrics from {row["metrics_source"]}')
    return rows


if __name__ == '__main__':
    from auglocal_det.utils.cli import run_with_clean_errors
    run_with_clean_errors(main)
