"""tools/demo.py: the command lines it builds, its errors, and one tiny run
of the whole pipeline (pretraining, export, Mask R-CNN fine-tuning from the
export and from random init, CocoMetric evaluation, model-zoo table)."""
import functools
import json
import os.path as osp
import re
import sys

import pytest
from common_utils import load_tool

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


@pytest.fixture(scope='module')
def demo():
    return load_tool('tools/demo.py', 'auglocal_demo')


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
    log_path = str(tmp_path / 'job.log')
    with pytest.raises(demo.JobFailed, match='job.log'):
        demo.run_jobs([('boom', [sys.executable, '-c', 'raise SystemExit(3)'],
                        log_path)])


def _job(demo, tmp_path, name, code, after=(), cost=1.):
    return demo.Job(name, lambda: [sys.executable, '-c', code],
                    str(tmp_path / f'{name}.log'), after=list(after),
                    cost=cost)


def test_jobs_wait_for_their_inputs(demo, tmp_path, capsys):
    """A job starts only after the jobs it runs after, one that depends on
    a failed job never starts, and every start and end is reported."""
    stamp = tmp_path / 'made'
    jobs = [
        _job(demo, tmp_path, 'use', f'open({str(stamp)!r}).read()',
             after=['make']),
        _job(demo, tmp_path, 'make',
             f'import time; time.sleep(0.3); open({str(stamp)!r}, "w")'),
        _job(demo, tmp_path, 'free', 'pass', cost=0.5),
    ]
    seconds = demo.run_jobs(jobs, parallel=2)
    assert len(seconds) == 3 and seconds[1] >= 0.3
    out = capsys.readouterr().out
    assert 'stage 2 of 3 started: make | elapsed 0:00 | ETA after the first' \
        in out
    assert out.index('started: make') < out.index('started: use')
    assert 'stage 1 of 3 done in' in out

    jobs = [
        _job(demo, tmp_path, 'fail', 'raise SystemExit(2)'),
        _job(demo, tmp_path, 'never', f'open({str(stamp) + "2"!r}, "w")',
             after=['fail']),
    ]
    with pytest.raises(demo.JobFailed, match='fail.log'):
        demo.run_jobs(jobs)
    assert not osp.exists(str(stamp) + '2')


def test_eta_from_finished_runs(demo, monkeypatch):
    jobs = [demo.Job(n, list, 'x.log', cost=c)
            for n, c in (('a', 1.), ('b', 3.), ('c', 2.))]
    clock = [100.]
    monkeypatch.setattr(demo.time, 'time', lambda: clock[0])
    progress = demo.Progress(jobs, slots=1, start=100.)
    progress.started('a')
    assert progress.eta() is None
    clock[0] = 110.
    progress.finished('a')  # 10 s per unit of cost
    progress.started('b')
    clock[0] = 120.
    # b has 20 of its 30 s left, c needs 20 s
    assert progress.eta() == pytest.approx(40.)
    assert 'stage 2 of 3 started: b | elapsed 0:20 | ETA 0:40' in (
        progress.line('b', 'started'))
    assert demo.clock(3725) == '1:02:05'
    # two slots, one long run left: its own time, not half of it
    progress = demo.Progress(jobs[1:], slots=2, start=100.)
    progress.done['x'] = 10.
    progress.costs['x'] = 1.
    progress.started('b')
    assert progress.eta() == pytest.approx(30.)


def test_summary_lines_and_files(demo, tmp_path):
    pretrained = [
        dict(rule=rule, val_top1=top1, chance=12.5, seconds=60.,
             backbone='b.pth', torchvision='t.pth', plot='p.png',
             memory=dict(peak_rss=peak, activation_rss=act, params=par))
        for rule, top1, peak, act, par in (
            ('auglocal', 50.25, 3072., 10., 700.),
            ('bp', 53.0, 1024., 40., 85.))
    ]
    detected = [
        dict(start=start, train_seconds=30.,
             row={'box AP': box, 'mask AP': mask})
        for start, box, mask in (('auglocal', '17.7', '14.3'),
                                 ('random', '11.7', '10.7'))
    ]
    lines = demo.summarize(pretrained, detected, str(tmp_path), 431.)
    assert lines[0] == ('val top-1 of ResNet-34 on the synthetic shapes: '
                        'AugLocal 50.25%, BP 53.00%; AugLocal - BP -2.75 '
                        'points; chance 12.5%')
    # the synthetic result points to the comparison on real data
    assert lines[1] == demo.REAL_DATA_NOTE
    anchor = demo.REAL_DATA_NOTE.rsplit('#', 1)[1]
    with open(osp.join(ROOT, 'docs', 'benchmarks.md')) as f:
        headings = [ln.lstrip('#').strip() for ln in f if ln.startswith('#')]
    assert anchor in [
        re.sub(r'[^a-z0-9 -]', '', h.lower()).replace(' ', '-')
        for h in headings
    ]
    assert lines[2].endswith('AugLocal 3.00 GiB, BP 1.00 GiB (AugLocal / '
                             'BP 3.00x)')
    assert lines[3].startswith('activation memory (peak before the '
                               'optimizer step')
    assert lines[3].endswith('AugLocal 10 MiB, BP 40 MiB (AugLocal / BP '
                             '0.25x)')
    assert lines[4].endswith('from AugLocal 17.7 / 14.3 (+6.0 / +3.6 over '
                             'random init), random init 11.7 / 10.7')
    assert lines[5] == 'total wall time: 7:11 (431 s)'
    summary = (tmp_path / 'summary.md').read_text()
    assert '| pretraining val top-1 (%) | 50.25 | 53.00 | - |' in summary
    assert '| Mask R-CNN box AP | 17.7 | - | 11.7 |' in summary
    assert (tmp_path / 'summary.png').read_bytes()[:4] == b'\x89PNG'


def _tiny_pretraining(demo, monkeypatch):
    monkeypatch.setattr(
        demo, 'prepare_imagenet_shapes',
        functools.partial(
            demo.prepare_imagenet_shapes,
            num_train_per_class=2,
            num_val_per_class=1))
    monkeypatch.setenv('OMP_NUM_THREADS', '1')
    return [
        '--cfg-options', 'train_cfg.max_epochs=1', 'train_cfg.val_interval=1',
        'param_scheduler.1.T_max=1', 'param_scheduler.1.end=1',
        'default_hooks.checkpoint.interval=1',
        # 4 iterations: the memory hook measures the third
        'train_dataloader.batch_size=4'
    ]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_pretraining_stage_tiny(demo, tmp_path, monkeypatch, capsys):
    """Both rules pretrained side by side, exported and measured; the
    summary of the pretraining half. Four iterations of each rule (the
    memory hook measures the third) at the paper's auxiliary width: the
    end-to-end check of the demo that needs no mmdet."""
    options = _tiny_pretraining(demo, monkeypatch)
    work = tmp_path / 'work'
    pretrained, detected = demo.main([
        '--stages', 'pretrain', '--data-root', str(tmp_path / 'imagenet'),
        '--work-dir', str(work), '--quiet', *options
    ])
    assert detected == []
    assert [p['rule'] for p in pretrained] == ['auglocal', 'bp']
    memory = {p['rule']: p['memory'] for p in pretrained}
    for mem in memory.values():
        assert mem['iteration'] == 2
        assert mem['peak_rss'] >= mem['before_rss'] > 0
    # the auxiliary networks' parameters, and AdamW's two moments of them
    assert memory['auglocal']['params'] > 1.3 * memory['bp']['params']
    assert memory['auglocal']['optim_state'] == pytest.approx(
        2 * memory['auglocal']['params'], rel=0.01)
    summary = (work / 'summary.md').read_text()
    assert '| peak training memory (process RSS) |' in summary
    tail = capsys.readouterr().out.strip().splitlines()[-5:]
    assert tail[0].startswith('[demo] val top-1 of ResNet-34 on the '
                              'synthetic shapes: AugLocal ')
    assert 'AugLocal - BP' in tail[0]
    assert 'Fashion-MNIST' in tail[1]
    assert '(AugLocal / BP ' in tail[2] and '(AugLocal / BP ' in tail[3]
    assert tail[4].startswith('[demo] total wall time: ')


@pytest.mark.timeout(900)
def test_whole_pipeline_tiny(demo, tmp_path, monkeypatch, capsys):
    """Pretrain with AugLocal, export, fine-tune from the export and from
    random init, evaluate, print the table: a few iterations of each."""
    pytest.importorskip('mmdet')
    pytest.importorskip('pycocotools')
    options = _tiny_pretraining(demo, monkeypatch)
    monkeypatch.setattr(demo, 'COCO_DATA',
                        dict(num_train=4, num_val=2, image_size=64, seed=0))
    work = tmp_path / 'work'
    pretrained, detected = demo.main([
        '--rules', 'auglocal', '--starts', 'auglocal', 'random',
        '--data-root', str(tmp_path / 'imagenet'), '--coco-root',
        str(tmp_path / 'coco'), '--work-dir', str(work), '--quiet',
        *options, '--det-epochs', '1', '--det-cfg-options',
        'train_dataloader.batch_size=2'
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
    memory = export['memory']
    assert memory['iteration'] == 2
    assert memory['peak_rss'] >= memory['before_rss'] > 0
    assert memory['grads'] > 0 and memory['params'] > 0
    assert (work / 'summary.md').is_file() and (work / 'summary.png').is_file()
    out = capsys.readouterr().out
    tail = out.strip().splitlines()[-6:]
    assert 'val top-1 of ResNet-34 on the synthetic shapes: AugLocal' in (
        tail[0])
    assert 'Fashion-MNIST' in tail[1]
    assert 'peak training memory (process RSS, whole iteration): ' \
        'AugLocal' in tail[2]
    assert 'activation memory' in tail[3]
    assert 'from AugLocal' in tail[4] and 'over random init' in tail[4]
    assert tail[5].startswith('[demo] total wall time: ')
    assert 'stage 1 of 5 started: pretrain AugLocal' in out


def test_demo_configs(demo):
    """The default demo: the paper's width and d = 4, one schedule for both
    rules; --full keeps the longer run; each variant has its own data."""
    from mmengine.config import Config

    def load(path):
        return Config.fromfile(osp.join(ROOT, path))

    for name, profile in demo.PROFILES.items():
        auglocal = load(profile['configs']['auglocal'])
        bp = load(profile['configs']['bp'])
        assert auglocal.model.rule == 'local' and bp.model.rule == 'bp'
        assert auglocal.model.aux_head.depth == 4
        assert auglocal.model.split_points is None  # K = 17
        for key in ('optim_wrapper', 'param_scheduler', 'train_cfg',
                    'synthetic_data', 'train_dataloader'):
            assert auglocal[key] == bp[key], (name, key)
        root = profile['data_root'].rstrip('/') + '/'
        assert auglocal.train_dataloader.dataset.data_root == root
        assert auglocal.val_dataloader.dataset.data_root == root
        assert any(h.type == 'TrainingMemoryHook'
                   for h in auglocal.custom_hooks)
    default = load(demo.DEMO_CONFIGS['auglocal'])
    full = load(demo.PROFILES['full']['configs']['auglocal'])
    assert default.model.aux_head.widen_factor == 1.0
    assert full.model.aux_head.widen_factor == 0.25
    assert full.train_cfg.max_epochs == 8
    assert full.train_dataloader.batch_size == 16
    assert full.synthetic_data.num_train_per_class == 200
    assert demo.PROFILES['full']['data_root'] != demo.DEFAULT_DATA_ROOT

    pytest.importorskip('mmdet')  # the detection configs inherit mmdet's
    epochs = {}
    for name, profile in demo.PROFILES.items():
        det = load(profile['det_config'])
        epochs[name] = det.train_cfg.max_epochs
        assert det.default_hooks.checkpoint.interval == epochs[name]
    assert epochs == dict(default=1, full=3)


class _Scheduled(Exception):
    """Raised by the fake run_jobs: the test has what it wanted."""


def test_stages_are_scheduled_by_their_inputs(demo, tmp_path, monkeypatch):
    """The one command: both pretrainings and the fine-tuning from random
    init first, each fine-tuning after the backbone it needs, each
    evaluation after its fine-tuning; two at a time on two cores."""
    seen = {}

    def fake_run_jobs(jobs, parallel, threads, quiet, progress):
        seen.update(jobs=jobs, parallel=parallel, threads=threads)
        raise _Scheduled

    monkeypatch.setattr(demo, 'run_jobs', fake_run_jobs)
    monkeypatch.setattr(demo, 'prepare_imagenet_shapes',
                        lambda *args, **kwargs: None)
    monkeypatch.setattr(demo, 'prepare_coco_shapes',
                        lambda *args, **kwargs: None)
    monkeypatch.setattr(demo.os, 'cpu_count', lambda: 2)
    monkeypatch.delenv('OMP_NUM_THREADS', raising=False)
    with pytest.raises(_Scheduled):
        demo.main(['--work-dir', str(tmp_path), '--threads', '1'])
    jobs = seen['jobs']
    assert [j.name for j in jobs] == [
        'pretrain AugLocal', 'pretrain BP',
        'fine-tune Mask R-CNN from random init',
        'evaluate Mask R-CNN from random init',
        'fine-tune Mask R-CNN from AugLocal',
        'evaluate Mask R-CNN from AugLocal',
        'fine-tune Mask R-CNN from BP', 'evaluate Mask R-CNN from BP'
    ]
    after = {j.name: j.after for j in jobs}
    assert after['fine-tune Mask R-CNN from AugLocal'] == ['pretrain AugLocal']
    assert after['fine-tune Mask R-CNN from BP'] == ['pretrain BP']
    assert after['fine-tune Mask R-CNN from random init'] == []
    assert after['evaluate Mask R-CNN from BP'] == [
        'fine-tune Mask R-CNN from BP'
    ]
    assert seen['parallel'] == 2 and seen['threads'] == 1
    # the AugLocal fine-tuning starts from the export the pretraining makes
    cmd = jobs[4].command()
    assert _option(cmd, 'model.backbone.init_cfg.checkpoint') == osp.join(
        str(tmp_path), 'auglocal_r34_synthetic', 'export', 'backbone.pth')
    assert _option(cmd, 'train_dataloader.dataset.data_root') == (
        demo.DEFAULT_COCO_ROOT + '/')
    # --full: its own configs, data and work dirs
    with pytest.raises(_Scheduled):
        demo.main(['--full', '--rules', 'bp', '--starts', 'bp'])
    cmd = seen['jobs'][0].command()
    assert cmd[2].endswith('configs/demo/bp_r34_synthetic_full.py')
    assert _option(cmd, 'train_dataloader.dataset.data_root') == (
        demo.PROFILES['full']['data_root'])
    assert cmd[cmd.index('--work-dir') + 1] == osp.join(
        demo.PROFILES['full']['work_dir'], 'bp_r34_synthetic_full')
    cmd = seen['jobs'][1].command()
    assert cmd[2].endswith('configs/demo/mask_rcnn_r34_synthetic_full.py')
