"""End to end: tools/train.py then tools/test.py on synthetic COCO shapes.

A few iterations of the demo Mask R-CNN from an exported-format backbone
file, then a model-zoo style evaluation with mmdet's CocoMetric (bbox and
segm), read back by gather_results.py. About a minute on two CPU cores.
"""
import json
import os
import os.path as osp
import subprocess
import sys

import pytest

pytest.importorskip('mmdet')
pytest.importorskip('pycocotools')

import torch  # noqa: E402

from auglocal_det.models import LocalResNet  # noqa: E402
from auglocal_det.testing import generate_coco_shapes  # noqa: E402

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIG = osp.join(ROOT, 'configs/demo/mask_rcnn_r34_synthetic.py')


def _run(args, cwd):
    # One intra-op thread unless told otherwise: on a shared 2-core machine
    # two spinning OpenMP threads make an iteration several times slower.
    env = dict(os.environ)
    env.setdefault('OMP_NUM_THREADS', '1')
    proc = subprocess.run([sys.executable, *args],
                          cwd=cwd,
                          env=env,
                          capture_output=True,
                          text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


@pytest.mark.slow
def test_train_then_test_with_coco_metric(tmp_path):
    data_root = str(tmp_path / 'coco') + '/'
    generate_coco_shapes(
        data_root, num_train=8, num_val=4, image_size=64, progress=False)
    backbone = str(tmp_path / 'export' / 'backbone.pth')
    torch.manual_seed(0)
    (tmp_path / 'export').mkdir()
    torch.save(
        dict(state_dict=LocalResNet(depth=34).state_dict(), meta={}),
        backbone)
    (tmp_path / 'export' / 'backbone.json').write_text(
        json.dumps(dict(rule='local', aux_head='AugLocalAuxHead')))

    ann_file = data_root + 'annotations/instances_val.json'
    data_options = [
        f'train_dataloader.dataset.data_root={data_root}',
        f'test_dataloader.dataset.data_root={data_root}',
        f'test_evaluator.ann_file={ann_file}',
    ]
    work_dir = str(tmp_path / 'work_dir')
    _run([
        osp.join(ROOT, 'tools/train.py'), CONFIG, '--work-dir', work_dir,
        '--cfg-options', *data_options,
        f'model.backbone.init_cfg.checkpoint={backbone}',
        'train_cfg.max_epochs=1', 'default_hooks.checkpoint.interval=1',
        'val_cfg=None', 'val_dataloader=None', 'val_evaluator=None'
    ], cwd=str(tmp_path))
    checkpoint = osp.join(work_dir, 'epoch_1.pth')
    assert osp.isfile(checkpoint)

    metrics_file = osp.join(work_dir, 'test_metrics.json')
    _run([
        osp.join(ROOT, 'tools/test.py'), CONFIG, checkpoint, '--work-dir',
        work_dir, '--out-metrics', metrics_file, '--cfg-options',
        *data_options
    ], cwd=str(tmp_path))
    with open(metrics_file) as f:
        metrics = json.load(f)['metrics']
    for key in ('coco/bbox_mAP', 'coco/bbox_mAP_50', 'coco/segm_mAP',
                'coco/segm_mAP_50'):
        assert 0. <= metrics[key] <= 1., (key, metrics)

    proc = _run([
        osp.join(ROOT, 'tools/analysis_tools/gather_results.py'), work_dir,
        '--config-root',
        osp.join(ROOT, 'configs')
    ], cwd=str(tmp_path))
    row = proc.stdout.splitlines()[2]
    assert row.startswith('| R-34 | AugLocal | 1e | - |')
    assert '[config](demo/mask_rcnn_r34_synthetic.py)' in row
