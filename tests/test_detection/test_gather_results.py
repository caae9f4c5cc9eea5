"""The model-zoo table (auglocal_det.analysis.model_zoo and its command
line, gather_results.py) on fabricated work dirs (needs mmengine only)."""
import json
import os
import os.path as osp

import pytest
from common_utils import load_tool

CONFIG_TEXT = """
model = dict(
    type='MaskRCNN',
    backbone=dict(
        type='LocalResNet',
        depth=34,
        init_cfg={init_cfg}))
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs={epochs})
"""


@pytest.fixture(scope='module')
def gather():
    return load_tool('tools/analysis_tools/gather_results.py',
                     'gather_results')


def _write_lines(path, entries):
    os.makedirs(osp.dirname(path), exist_ok=True)
    with open(path, 'w') as f:
        for entry in entries:
            f.write(json.dumps(entry) + '\n')


def _work_dir(root, name, init_cfg, epochs=12):
    work_dir = osp.join(root, name)
    os.makedirs(work_dir)
    with open(osp.join(work_dir, f'{name}.py'), 'w') as f:
        f.write(CONFIG_TEXT.format(init_cfg=init_cfg, epochs=epochs))
    return work_dir


def test_collect_prefers_test_results(gather, tmp_path):
    export = tmp_path / 'export'
    export.mkdir()
    # what ExportBackboneHook records for a local rule
    (export / 'backbone.json').write_text(
        json.dumps(dict(rule='local', aux_head='AugLocalAuxHead')))
    init_cfg = repr(dict(type='Pretrained',
                         checkpoint=str(export / 'backbone.pth')))
    # the top-level dump is overwritten by tools/test.py runs, which lack
    # the training overrides; the training run's own copy wins
    work_dir = _work_dir(str(tmp_path), 'mask_rcnn_auglocal_r34_coco',
                         init_cfg, epochs=36)
    stamp = '20240101_000000'
    os.makedirs(osp.join(work_dir, stamp, 'vis_data'))
    with open(osp.join(work_dir, stamp, 'vis_data', 'config.py'), 'w') as f:
        f.write(CONFIG_TEXT.format(init_cfg=init_cfg, epochs=12))
    _write_lines(
        osp.join(work_dir, stamp, 'vis_data', f'{stamp}.json'), [
            dict(lr=2e-4, loss=1.5, memory=3000, epoch=1, iter=50, step=50),
            dict(lr=2e-4, loss=1.2, memory=3600, epoch=1, iter=100,
                 step=100),
            {'coco/bbox_mAP': 0.301, 'coco/segm_mAP': 0.28, 'step': 1},
            dict(lr=2e-4, loss=1.0, memory=3500, epoch=2, iter=150,
                 step=150),
            {'coco/bbox_mAP': 0.355, 'coco/segm_mAP': 0.331, 'step': 2},
        ])
    configs = tmp_path / 'configs'
    configs.mkdir()
    (configs / 'mask_rcnn_auglocal_r34_coco.py').write_text('')

    row = gather.collect(work_dir, str(configs))
    assert row['Backbone'] == 'R-34'
    assert row['Pretrain rule'] == 'AugLocal'
    assert row['Lr schd'] == '1x'
    assert row['Mem (GB)'] == '3.5'  # 3600 MB
    assert (row['box AP'], row['mask AP']) == ('35.5', '33.1')
    assert row['Config'] == '[config](mask_rcnn_auglocal_r34_coco.py)'
    assert row['metrics_source'].endswith(f'vis_data/{stamp}.json')

    # a later tools/test.py run: its log wins over validation
    test_stamp = '20240102_000000'
    _write_lines(
        osp.join(work_dir, test_stamp, f'{test_stamp}.json'),
        [{'coco/bbox_mAP': 0.362, 'coco/segm_mAP': 0.334}])
    row = gather.collect(work_dir, str(configs))
    assert (row['box AP'], row['mask AP']) == ('36.2', '33.4')

    # and a --out-metrics file wins over the logs
    with open(osp.join(work_dir, 'test_metrics.json'), 'w') as f:
        json.dump(dict(config='c.py', checkpoint='epoch_12.pth',
                       metrics={'coco/bbox_mAP': 0.4,
                                'coco/segm_mAP': 0.3}), f)
    row = gather.collect(work_dir, str(configs))
    assert (row['box AP'], row['mask AP']) == ('40.0', '30.0')
    assert row['metrics_source'].endswith('test_metrics.json')


def test_main_writes_table(gather, tmp_path, capsys):
    bp = _work_dir(
        str(tmp_path), 'mask_rcnn_bp_r34_coco',
        repr(dict(type='Pretrained',
                  checkpoint='work_dirs/bp_r34_imagenet/export/backbone.pth')),
        epochs=24)
    scratch = _work_dir(str(tmp_path), 'mask_rcnn_scratch', 'None', epochs=5)
    out = tmp_path / 'zoo' / 'table.md'
    rows = gather.main([
        bp, scratch, '--out',
        str(out), '--json',
        str(tmp_path / 'rows.json'), '--config-root',
        str(tmp_path / 'no_configs')
    ])
    table = out.read_text()
    assert capsys.readouterr().out.startswith(table)
    lines = table.splitlines()
    assert lines[0] == ('| Backbone | Pretrain rule | Lr schd | Mem (GB) '
                        '| box AP | mask AP | Config | Download |')
    assert lines[2] == ('| R-34 | BP | 2x | - | - | - | '
                        'mask_rcnn_bp_r34_coco.py | - |')
    assert lines[3].startswith('| R-34 | none (random init) | 5e |')
    assert [r['work_dir'] for r in rows] == [bp, scratch]
    assert json.loads((tmp_path / 'rows.json').read_text())[0]['Lr schd'] \
        == '2x'


def test_missing_work_dir(gather, tmp_path):
    with pytest.raises(FileNotFoundError, match='not found'):
        gather.collect(str(tmp_path / 'nope'))
    empty = tmp_path / 'empty'
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match='no dumped config'):
        gather.collect(str(empty))


def test_dumped_config_is_read_as_data(gather, tmp_path):
    """A work dir's dumped config is text a run wrote: code in it is
    refused, never run."""
    from auglocal_det.errors import InputError
    work_dir = _work_dir(str(tmp_path), 'run', init_cfg=None)
    marker = tmp_path / 'marker'
    with open(osp.join(work_dir, 'run.py'), 'a') as f:
        f.write(f'\nimport os\nos.system("touch {marker}")\n')
    with pytest.raises(InputError, match='cannot be read as data'):
        gather.collect(work_dir)
    assert not marker.exists()
