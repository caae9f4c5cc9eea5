"""Every config builds; the ImageNet recipe; tools/train.py end to end."""
import glob
import json
import os.path as osp
import subprocess
import sys

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope

from auglocal_det.registry import DATASETS, MODELS

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIGS = sorted(
    osp.relpath(p, ROOT)
    for p in glob.glob(osp.join(ROOT, 'configs', '**', '*.py'),
                       recursive=True)
    if '_base_' not in p.split(osp.sep))


def _is_ours(model_type):
    """True if the root registry (auglocal_det) has the model type."""
    return MODELS.get(model_type) is not None


@pytest.mark.parametrize('config', CONFIGS)
def test_config_builds(config):
    cfg = Config.fromfile(osp.join(ROOT, config))
    model_type = cfg.model['type']
    if _is_ours(model_type):
        # on the meta device: the real constructors, no memory or init
        with torch.device('meta'):
            model = MODELS.build(cfg.model)
        num_layers = len(model.backbone.local_layer_specs())
        # the modules cover every local layer once, in order
        ranges = model.module_ranges
        assert ranges[0][0] == 0 and ranges[-1][1] == num_layers - 1
        assert all(b[0] == a[1] + 1 for a, b in zip(ranges, ranges[1:]))
        expected_aux = 0 if model.rule == 'bp' else model.num_modules - 1
        assert model.num_aux == expected_aux
        # the network's own classifier predicts the config's classes
        last_fc = [m for m in model.head.modules()
                   if isinstance(m, torch.nn.Linear)][-1]
        assert last_fc.out_features == cfg.model.get('num_classes', 1000)
        return
    pytest.importorskip('mmdet')
    scope = cfg.get('default_scope', 'mmdet')
    with DefaultScope.overwrite_default_scope(scope):
        model = MODELS.build(cfg.model)
    # the detector holds the config's ResNet and predicts the data's classes
    backbone = cfg.model.backbone
    assert type(model.backbone).__name__ == backbone.type.split('.')[-1]
    assert model.backbone.depth == backbone.depth
    classes = cfg.train_dataloader.dataset.get('metainfo', {}).get('classes')
    num_classes = len(classes) if classes else 80  # COCO's
    assert model.roi_head.bbox_head.num_classes == num_classes
    assert model.roi_head.mask_head.num_classes == num_classes


def _imagenet_cfg(name):
    return Config.fromfile(osp.join(ROOT, 'configs', name))


def test_auglocal_r34_paper_recipe():
    cfg = _imagenet_cfg('auglocal_r34_imagenet.py')
    with torch.device('meta'):
        model = MODELS.build(cfg.model)
    assert model.rule == 'local' and model.num_modules == 17
    # the network of the paper, with the exact memory options on and the
    # official code's initialisation (no zero-initialised residuals)
    assert cfg.model.backbone == dict(
        type='LocalResNet', depth=34, stem_chunk_size=16, with_cp=True,
        cp_stages=(0, ), zero_init_residual=False)
    assert cfg.model.aux_head.depth == 4 and not cfg.model.aux_head.pyramid
    assert (cfg.model.aux_head.with_cp,
            cfg.model.aux_head.cp_max_downsample) == (1, 8)
    optim = cfg.optim_wrapper
    assert optim.type == 'LayerwiseLocalOptimWrapper'  # exact, less memory
    assert optim.optimizer == dict(
        type='SGD', lr=0.4, momentum=0.9, nesterov=True, weight_decay=1e-4)
    assert cfg.train_dataloader.batch_size * 8 == 1024
    assert cfg.auto_scale_lr == dict(enable=False, base_batch_size=1024)
    assert cfg.train_cfg.max_epochs == 200
    # the official schedule: cosine set once per epoch, from epoch 0
    assert [s.type for s in cfg.param_scheduler] == ['EpochCosineLR']
    schedule = cfg.param_scheduler[0]
    assert schedule.T_max == schedule.end == 200
    assert schedule.first_epoch == 0 and not schedule.get('warmup_epochs')
    assert cfg.model_wrapper_cfg.type == 'LocalDistributedDataParallel'
    assert {'ExportBackboneHook', 'LayerwiseAccuracyPlotHook'} <= {
        h.type for h in cfg.custom_hooks}
    train = cfg.train_dataloader
    assert train.dataset.data_root == 'data/imagenet/'
    assert [t.type for t in train.dataset.pipeline] == [
        'LoadImageTensor', 'RandomResizedCropTensor', 'RandomFlipTensor',
        'PackClsInputs'
    ]
    assert train.dataset.pipeline[1].size == 224
    test = cfg.val_dataloader.dataset.pipeline
    assert test[1].scale == 256 and test[2].size == 224
    assert train.num_workers == 8 and train.persistent_workers
    assert cfg.model.data_preprocessor.mean == [123.675, 116.28, 103.53]


def test_sibling_configs():
    expected = {
        'bp_r34_imagenet.py': ('bp', 1, None),
        'dgl_r34_imagenet.py': ('local', 17, 'DGLAuxHead'),
        'infopro_r34_imagenet.py': ('local', 17, 'InfoProAuxHead'),
        'predsim_r34_imagenet.py': ('local', 17, 'PredSimAuxHead'),
        'auglocal_r101_imagenet.py': ('local', 34, 'AugLocalAuxHead'),
    }
    ref = _imagenet_cfg('auglocal_r34_imagenet.py')
    for name, (rule, num_modules, head) in expected.items():
        cfg = _imagenet_cfg(name)
        with torch.device('meta'):
            model = MODELS.build(cfg.model)
        assert (model.rule, model.num_modules) == (rule, num_modules), name
        assert (cfg.model.aux_head or {}).get('type') == head, name
        assert cfg.optim_wrapper.optimizer == ref.optim_wrapper.optimizer
        # BP, the reference of the memory figures, steps once
        assert cfg.optim_wrapper.type == (
            'LocalOptimWrapper' if rule == 'bp' else
            'LayerwiseLocalOptimWrapper'), name
        assert cfg.train_cfg == ref.train_cfg, name


def test_offload_recipe():
    """The recipe with the heads in host memory: the same network and
    schedule, the per-layer step it needs, the heads resting on the CPU."""
    cfg = _imagenet_cfg('auglocal_r34_offload_imagenet.py')
    ref = _imagenet_cfg('auglocal_r34_imagenet.py')
    assert cfg.model.aux_head_offload == dict(host='cpu')
    assert cfg.optim_wrapper == ref.optim_wrapper
    assert cfg.optim_wrapper.type == 'LayerwiseLocalOptimWrapper'
    del cfg.model['aux_head_offload']
    assert cfg.model == ref.model
    assert cfg.train_cfg == ref.train_cfg
    with torch.device('meta'):
        model = MODELS.build(_imagenet_cfg(
            'auglocal_r34_offload_imagenet.py').model)
    assert model.aux_head_offload.host == torch.device('cpu')
    assert len(model.aux_head_offload.modules) == model.num_aux == 16


def test_file_offload_recipe():
    """The CPU recipe with the heads in memory-mapped files: the recipe of
    auglocal_r34_imagenet.py but for the option."""
    cfg = _imagenet_cfg('auglocal_r34_fileoffload_imagenet.py')
    ref = _imagenet_cfg('auglocal_r34_imagenet.py')
    assert cfg.model.aux_head_offload == dict(host='file')
    del cfg.model['aux_head_offload']
    assert cfg.model == ref.model
    assert cfg.optim_wrapper == ref.optim_wrapper
    assert cfg.train_cfg == ref.train_cfg
    with torch.device('meta'):
        model = MODELS.build(_imagenet_cfg(
            'auglocal_r34_fileoffload_imagenet.py').model)
    assert model.aux_head_offload.in_files
    assert len(model.aux_head_offload.modules) == model.num_aux == 16


def test_missing_imagenet_fails_when_the_runner_builds_data(tmp_path):
    from mmengine.runner import Runner
    cfg = _imagenet_cfg('bp_r34_imagenet.py')
    missing = str(tmp_path / 'no_imagenet')
    cfg.train_dataloader.dataset.data_root = missing
    cfg.work_dir = str(tmp_path / 'work')
    with pytest.raises(FileNotFoundError, match='no_imagenet.*does not '
                       'exist'):
        DATASETS.build(cfg.train_dataloader.dataset)
    runner = Runner.from_cfg(cfg)
    with pytest.raises(FileNotFoundError, match='tools/demo.py'):
        runner.train()
    assert not osp.exists(osp.join(cfg.work_dir, 'epoch_1.pth'))


@pytest.mark.slow
def test_train_tool_end_to_end(tmp_path):
    """tools/train.py with the real ImageNet config on synthetic data."""
    from auglocal_det.testing import generate_imagenet_shapes
    classes = ('circle', 'square', 'stripes', 'triangle')
    data = str(tmp_path / 'data')
    generate_imagenet_shapes(data, 8, 2, image_size=36, classes=classes,
                             progress=False)
    work_dir = tmp_path / 'work'
    options = [
        'model.num_classes=4', 'model.image_size=32',
        'default_hooks.logger.interval=1',
        'default_hooks.checkpoint.save_optimizer=False',
        'train_cfg.max_epochs=1',
        'train_dataloader.dataset.pipeline.1.size=32',
        'val_dataloader.dataset.pipeline.1.scale=36',
        'val_dataloader.dataset.pipeline.2.size=32'
    ]
    for loader, batch in (('train_dataloader', 8), ('val_dataloader', 8)):
        options += [
            f'{loader}.batch_size={batch}', f'{loader}.num_workers=0',
            f'{loader}.persistent_workers=False',
            f'{loader}.pin_memory=False',
            f'{loader}.dataset.data_root={data}',
            f'{loader}.dataset.num_classes=4'
        ]
    cmd = [
        sys.executable, 'tools/train.py', 'configs/auglocal_r34_imagenet.py',
        '--work-dir', str(work_dir), '--cfg-options', *options
    ]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    log = done.stdout + done.stderr
    assert 'Epoch(train) [1][4/4]' in log and 'aux_top1/l15' in log

    export = work_dir / 'export'
    meta = json.loads((export / 'backbone.json').read_text())
    assert meta['rule'] == 'local' and meta['num_local_modules'] == 17
    assert meta['aux_depth'] == 4 and meta['epoch'] == 1
    assert meta['val_top1'] is not None
    assert meta['source_checkpoint'].endswith('epoch_1.pth')
    backbone = MODELS.build(dict(type='LocalResNet', depth=34))
    state = torch.load(export / 'backbone.pth', weights_only=True)
    backbone.load_state_dict(state['state_dict'], strict=True)
    assert (work_dir / 'layerwise_accuracy.png').is_file()


def test_auglocal_r34_pipeline_recipe():
    """The pipelined config trains the same updates as the sequential one:
    1024 images per step, in batches of 128, sharded over replicas."""
    cfg = _imagenet_cfg('auglocal_r34_imagenet_pipe.py')
    ref = _imagenet_cfg('auglocal_r34_imagenet.py')
    assert cfg.model == ref.model
    wrapper = cfg.model_wrapper_cfg
    assert wrapper == dict(type='LocalPipelineParallel', num_stages=8,
                           balance='auto')
    assert cfg.train_dataloader.sampler == dict(
        type='PipelineSampler', num_stages=8, shuffle=True)
    assert cfg.train_dataloader.batch_size * \
        cfg.optim_wrapper.accumulative_counts == 1024
    assert cfg.optim_wrapper.type == 'LocalOptimWrapper'
    assert cfg.optim_wrapper.optimizer == ref.optim_wrapper.optimizer
    assert dict(type='LocalPipelineHook') in cfg.custom_hooks
