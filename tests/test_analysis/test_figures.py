"""The figure tools: learning curves and layer-wise linear CKA."""
import json
import os.path as osp
import runpy
import sys

import pytest
import torch
from mmengine.config import Config

from auglocal_det.analysis import (
    cka_from_grams,
    gram_matrix,
    linear_cka,
    output_loss_key,
    read_learning_curve,
)
from auglocal_det.errors import InputError, InputFileNotFoundError
from auglocal_det.testing import write_cifar10

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def _feature_space_cka(x, y):
    """Kornblith et al.'s formula on centred features (the reference)."""
    x = x.reshape(len(x), -1).double()
    y = y.reshape(len(y), -1).double()
    x, y = x - x.mean(0), y - y.mean(0)
    return float((y.t() @ x).norm()**2 /
                 ((x.t() @ x).norm() * (y.t() @ y).norm()))


def test_linear_cka_properties():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(40, 3, 4, 4, generator=gen)
    y = torch.randn(40, 20, generator=gen)
    assert linear_cka(x, x) == pytest.approx(1.0)
    # invariant to an orthogonal transform, isotropic scaling and a shift
    q, _ = torch.linalg.qr(torch.randn(48, 48, generator=gen))
    moved = 3.0 * x.reshape(40, -1) @ q + 5.0
    assert linear_cka(x, moved) == pytest.approx(1.0)
    assert linear_cka(x, y) == pytest.approx(_feature_space_cka(x, y))
    assert linear_cka(x, y) < 0.8
    mixed = torch.cat([x.reshape(40, -1), y], 1)
    assert linear_cka(x, y) < linear_cka(x, mixed) < 1
    assert cka_from_grams(gram_matrix(x), gram_matrix(torch.ones(40, 5))) \
        == 0.0
    with pytest.raises(ValueError, match='same samples'):
        linear_cka(x, y[:10])


def _write_log(path, records):
    path.parent.mkdir(parents=True)
    path.write_text('\n'.join(json.dumps(r) for r in records) + '\n')


def test_learning_curve_from_log(tmp_path):
    first = [
        dict(lr=0.1, loss=9.0, loss_l00=2.0, loss_l13=4.0, epoch=1, iter=1),
        dict(lr=0.1, loss=8.0, loss_l00=1.0, loss_l13=2.0, epoch=1, iter=2),
        dict(lr=0.1, loss=7.0, loss_l00=1.0, loss_l13=9.0, epoch=2, iter=3),
        {'accuracy/top1': 50.0, 'step': 1},
    ]
    _write_log(tmp_path / '20240101_000000/vis_data/scalars.json', first)
    # a resumed run logs iteration 3 again: the later record wins
    resumed = [
        dict(lr=0.1, loss=6.0, loss_l00=1.0, loss_l13=1.0, epoch=2, iter=3),
    ]
    _write_log(tmp_path / '20240102_000000/vis_data/scalars.json', resumed)
    curve = read_learning_curve(str(tmp_path), name='run')
    assert curve['key'] == 'loss_l13'
    assert curve['epochs'] == [1, 2] and curve['loss'] == [3.0, 1.0]
    assert read_learning_curve(str(tmp_path), key='loss')['loss'] == [
        8.5, 6.0
    ]
    assert output_loss_key([dict(loss=1, loss_cls=1)]) == 'loss_cls'
    assert output_loss_key([dict(loss=1, loss_l9=1, loss_l102=1)]) == \
        'loss_l102'
    with pytest.raises(InputError, match="no 'loss_x'"):
        read_learning_curve(str(tmp_path), key='loss_x')
    with pytest.raises(InputFileNotFoundError, match='no training log'):
        read_learning_curve(str(tmp_path / '20240101_000000'))


def test_learning_curve_points_per_epoch(tmp_path):
    records = [
        dict(loss=1.0, loss_cls=float(v), epoch=1 + i // 5, iter=i + 1)
        for i, v in enumerate([8, 6, 4, 2, 2, 1, 1, 1, 3, 3])
    ]
    _write_log(tmp_path / '20240101_000000/vis_data/scalars.json', records)
    curve = read_learning_curve(str(tmp_path), points_per_epoch=2)
    # 5 logged iterations an epoch: parts of 2 and 3 (rounded bounds)
    assert curve['epochs'] == [0.25, 0.75, 1.25, 1.75]
    assert curve['loss'] == [7.0, 8 / 3, 1.0, 7 / 3]
    # more parts than logged iterations: one point per iteration
    assert len(read_learning_curve(
        str(tmp_path), points_per_epoch=9)['loss']) == 10
    assert read_learning_curve(str(tmp_path))['loss'] == [4.4, 1.8]
    with pytest.raises(InputError, match='--points-per-epoch must be'):
        read_learning_curve(str(tmp_path), points_per_epoch=0)


def _train(config, work_dir, data_root):
    """Two epochs of a paper config on tiny CIFAR-10 files, in process."""
    from mmengine.runner import Runner
    cfg = Config.fromfile(osp.join(ROOT, 'configs', config))
    options = {
        'work_dir': str(work_dir),
        'train_cfg.max_epochs': 2,
        'param_scheduler.0.T_max': 2,
        'param_scheduler.0.end': 2,
        'default_hooks.logger.interval': 1,
        'default_hooks.checkpoint.save_optimizer': False,
        'randomness': dict(seed=0),
        # a Visualizer is a named singleton: one per run, or the second
        # run would log into the first one's work dir
        'visualizer.name': f'visualizer_{osp.basename(str(work_dir))}',
    }
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        options.update({
            f'{loader}.batch_size': 8,
            f'{loader}.num_workers': 0,
            f'{loader}.persistent_workers': False,
            f'{loader}.pin_memory': False,
            f'{loader}.dataset.data_root': data_root,
        })
    cfg.merge_from_dict(options)
    Runner.from_cfg(cfg).train()


@pytest.fixture(scope='module')
def work_dirs(tmp_path_factory):
    """Two tiny work dirs: AugLocal and BP on CIFAR-10 ResNet-32."""
    root = tmp_path_factory.mktemp('figures')
    data = str(root / 'cifar10')
    write_cifar10(data, num_train=16, num_test=8)
    dirs = {}
    for name, config in (('auglocal', 'auglocal/auglocal-d2_r32_400e_'
                          'cifar10.py'), ('bp', 'bp/bp_r32_400e_cifar10.py')):
        dirs[name] = root / name
        _train(config, dirs[name], data)
    return dirs


def _run_tool(name, *args):
    """Run a tool script as ``python tools/analysis_tools/<name> args``."""
    path = osp.join(ROOT, 'tools', 'analysis_tools', name)
    argv = sys.argv
    sys.argv = [path, *map(str, args)]
    try:
        runpy.run_path(path, run_name='__main__')
    finally:
        sys.argv = argv


def test_learning_curves_tool(work_dirs, tmp_path):
    out = tmp_path / 'curves.png'
    _run_tool('plot_learning_curves.py', work_dirs['auglocal'],
              work_dirs['bp'], '--out', out, '--names', 'AugLocal', 'BP')
    assert out.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    numbers = json.loads(out.with_suffix('.json').read_text())
    local, bp = numbers['curves']
    assert (local['name'], local['key']) == ('AugLocal', 'loss_l13')
    assert (bp['name'], bp['key']) == ('BP', 'loss_cls')
    assert local['epochs'] == bp['epochs'] == [1, 2]
    assert all(v > 0 for v in local['loss'] + bp['loss'])


def test_representation_similarity_tool(work_dirs, tmp_path):
    out = tmp_path / 'cka.png'
    _run_tool('representation_similarity.py', work_dirs['auglocal'], '--bp',
              work_dirs['bp'], '--out', out, '--num-images', 8,
              '--batch-size', 3)
    assert out.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    numbers = json.loads(out.with_suffix('.json').read_text())
    assert numbers['num_images'] == 8
    assert numbers['layer_names'][:2] == ['stem', 'layer1.0']
    values = numbers['cka']['auglocal']
    assert len(values) == 16 and all(0 <= v <= 1 for v in values)
    assert numbers['models']['auglocal']['checkpoint'].endswith(
        'epoch_2.pth')
    # the same model against itself: CKA 1 at every layer
    again = tmp_path / 'self.png'
    _run_tool('representation_similarity.py', work_dirs['bp'], '--bp',
              work_dirs['bp'], '--out', again, '--num-images', 8)
    same = json.loads(again.with_suffix('.json').read_text())['cka']['bp']
    assert same == pytest.approx([1.0] * 16)


def test_tools_report_bad_input_in_one_line(work_dirs, tmp_path, capsys):
    with pytest.raises(SystemExit):
        _run_tool('plot_learning_curves.py', tmp_path / 'missing')
    err = capsys.readouterr().err
    assert err.startswith('error: work dir') and 'does not exist' in err
    with pytest.raises(SystemExit):
        _run_tool('representation_similarity.py', work_dirs['auglocal'],
                  '--bp', tmp_path, '--out', tmp_path / 'x.png')
    assert 'has no config' in capsys.readouterr().err


def test_similarity_tool_reads_the_dumped_config_as_data(
        work_dirs, tmp_path, capsys):
    """A dumped config is text a run wrote: code in it is refused, never
    run."""
    import shutil
    copy = tmp_path / 'bp_copy'
    shutil.copytree(work_dirs['bp'], copy)
    dumped, = copy.glob('*.py')
    marker = tmp_path / 'marker'
    dumped.write_text(
        dumped.read_text() +
        f'\nimport os\nos.system("touch {marker}")\n')
    with pytest.raises(SystemExit):
        _run_tool('representation_similarity.py', copy, '--bp',
                  work_dirs['bp'], '--out', tmp_path / 'x.png',
                  '--num-images', 4)
    err = capsys.readouterr().err
    assert err.startswith('error: ') and str(dumped) in err
    assert 'cannot be read as data' in err
    assert not marker.exists()
