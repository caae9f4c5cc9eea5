"""tools/demo.py: the command lines it builds, its errors, and one tiny run
of the whole pipeline (pretraining, export, Mask R-CNN fine-tuning from the
export and from random init, CocoMetric evaluation, model-zoo table)."""
import functools
import importlib.util
import json
import os.path as osp

import pytest

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


@pytest.fixture(scope='module')
def demo():
    spec = importlib.util.spec_from_file_location(
        'auglocal_demo', osp.join(ROOT, 'tools', 'demo.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _option(cmd, key):
    """The value of ``key=...`` in a command's ``--cfg-options``."""
    values = [c.split('=', 1)[1] for c in cmd if c.startswith(key + '=')]
    assert len(values) == 1, (key, cmd)
    return values[0]


def test_finetune_command(demo, tmp_path):
    cmd, work_dir = demo.finetune_command(
        'auglocal', 'exp/backbone.pth', data_root='coco', work_root='wd',
        epochs=6, cfg_options=['optim_wrapper.optimizer.lr=0.01'])
    assert work_dir == osp.join('wd', 'mask_rcnn_r34_synthetic_auglocal')
    assert cmd[1] == osp.join(ROOT, 'tools', 'train.py')
    assert cmd[2] == osp.join(ROOT, demo.DET_CONFIG)
    assert _option(cmd, 'model.backbone.init_cfg.checkpoint') == (
        'exp/backbone.pth')
    assert _option(cmd, 'train_dataloader.dataset.data_root') == 'coco/'
    assert _option(cmd, 'train_cfg.max_epochs') == '6'
    assert _option(cmd, 'param_scheduler.1.milestones') == '[4]'
    assert _option(cmd, 'val_cfg') == 'None'
    # extra options come last, so they win
    assert cmd[-1] == 'optim_wrapper.optimizer.lr=0.01'

    cmd, _ = demo.finetune_command('random', None)
    assert _option(cmd, 'model.backbone.init_cfg') == 'None'
    assert not any(c.startswith('train_cfg.max_epochs') for c in cmd)

    (tmp_path / 'last_checkpoint').write_text('/x/epoch_3.pth\n')
    cmd, metrics = demo.evaluate_command(str(tmp_path), data_root='coco')
    assert cmd[1:4] == [
        osp.join(ROOT, 'tools', 'test.py'),
        osp.join(ROOT, demo.DET_CONFIG), '/x/epoch_3.pth'
    ]
    assert metrics == str(tmp_path / 'test_metrics.json')
    assert _option(cmd, 'test_evaluator.ann_file') == (
        'coco/annotations/instances_val.json')


def test_missing_backbone_says_how_to_make_it(demo, tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        demo.find_backbones(['bp', 'random'], str(tmp_path))
    msg = str(info.value)
    assert 'bp_r34_synthetic/export/backbone.pth' in msg
    assert 'tools/demo.py --stages pretrain --rules bp' in msg
    assert demo.find_backbones(['random'], str(tmp_path)) == {'random': None}


def test_bad_backbone_option(demo):
    with pytest.raises(SystemExit, match='auglocal=PATH'):
        demo.main(['--backbone', 'random=x.pth'])


def test_failed_job_names_its_log(demo, tmp_path):
    import sys
    log_path = str(tmp_path / 'job.log')
    with pytest.raises(demo.JobFailed, match='job.log'):
        demo.run_jobs([('boom', [sys.executable, '-c', 'raise SystemExit(3)'],
                        log_path)])


@pytest.mark.timeout(900)
def test_whole_pipeline_tiny(demo, tmp_path, monkeypatch, capsys):
    """Pretrain with AugLocal, export, fine-tune from the export and from
    random init, evaluate, print the table: a few iterations of each."""
    pytest.importorskip('mmdet')
    pytest.importorskip('pycocotools')
    monkeypatch.setattr(
        demo, 'prepare_imagenet_shapes',
        functools.partial(
            demo.prepare_imagenet_shapes,
            num_train_per_class=2,
            num_val_per_class=1))
    monkeypatch.setattr(demo, 'COCO_DATA',
                        dict(num_train=4, num_val=2, image_size=64, seed=0))
    monkeypatch.setenv('OMP_NUM_THREADS', '1')
    work = tmp_path / 'work'
    pretrained, detected = demo.main([
        '--rules', 'auglocal', '--starts', 'auglocal', 'random',
        '--data-root', str(tmp_path / 'imagenet'), '--coco-root',
        str(tmp_path / 'coco'), '--work-dir', str(work), '--quiet',
        '--cfg-options', 'train_cfg.max_epochs=1',
        'param_scheduler.1.T_max=1', 'param_scheduler.1.end=1',
        'default_hooks.checkpoint.interval=1', '--det-epochs', '1',
        '--det-cfg-options', 'train_dataloader.batch_size=2'
    ])
    assert [p['rule'] for p in pretrained] == ['auglocal']
    export = pretrained[0]
    assert osp.isfile(export['backbone']) and osp.isfile(export['plot'])
    sidecar = json.loads(
        (work / 'auglocal_r34_synthetic' / 'export' /
         'backbone.json').read_text())
    assert sidecar['aux_head'] == 'AugLocalAuxHead'

    assert [d['start'] for d in detected] == ['auglocal', 'random']
    rows = {d['start']: d['row'] for d in detected}
    assert rows['auglocal']['Pretrain rule'] == 'AugLocal'
    assert rows['random']['Pretrain rule'] == 'none (random init)'
    for row in rows.values():
        assert 0 <= float(row['box AP']) <= 100
        assert 0 <= float(row['mask AP']) <= 100
    # the fine-tuning really started from the export
    log = (work / 'mask_rcnn_r34_synthetic_auglocal' /
           'demo_train.log').read_text()
    assert export['backbone'] in log

    table = (work / 'model_zoo.md').read_text()
    assert table.count('\n| R-34 |') == 2
    out = capsys.readouterr().out
    tail = out.strip().splitlines()[-3:]
    assert 'val top-1 AugLocal ResNet-34' in tail[0]
    assert 'Mask R-CNN from AugLocal: box AP' in tail[1]
    assert 'Mask R-CNN from random init: box AP' in tail[2]
