"""ExportBackboneHook and tools/model_converters/export_backbone.py."""
import json
import os.path as osp
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch
import torchvision
from mmengine.config import Config

from auglocal_det.engine.hooks import ExportBackboneHook
from auglocal_det.errors import InputError
from auglocal_det.export import (
    NotAClassifierCheckpointError,
    export_checkpoint,
)
from auglocal_det.registry import HOOKS, MODELS

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
NUM_CLASSES = 5


def _model_cfg(rule):
    cfg = dict(
        type='LocalImageClassifier',
        backbone=dict(type='LocalResNet', depth=34),
        num_classes=NUM_CLASSES,
        image_size=32,
        rule=rule)
    if rule == 'local':
        cfg['aux_head'] = dict(type='PredSimAuxHead')
    return cfg


def _randomize(model):
    """Distinct values everywhere (incl. BN statistics) to catch mix-ups."""
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for key, tensor in model.state_dict().items():
            if tensor.is_floating_point():
                tensor.add_(0.05 * torch.randn(tensor.shape, generator=gen))
                if key.endswith('running_var'):
                    tensor.abs_().add_(0.5)
    return model


@pytest.fixture(scope='module')
def bp_model():
    return _randomize(MODELS.build(_model_cfg('bp')))


@pytest.fixture(scope='module')
def local_model():
    return _randomize(MODELS.build(_model_cfg('local')))


def _runner(model, work_dir, rule, epoch=3):
    cfg = Config(dict(model=_model_cfg(rule)))
    return SimpleNamespace(
        model=model, cfg=cfg, work_dir=str(work_dir), epoch=epoch,
        iter=epoch * 10, max_epochs=epoch)


def _export_with_hook(model, tmp_path, rule):
    work_dir = tmp_path / 'work'
    work_dir.mkdir()
    ckpt = work_dir / 'epoch_3.pth'
    ckpt.write_bytes(b'stand-in for the final checkpoint')
    (work_dir / 'last_checkpoint').write_text(str(ckpt))
    hook = HOOKS.build(dict(type='ExportBackboneHook'))
    runner = _runner(model, work_dir, rule)
    hook.after_val_epoch(runner, {'accuracy/top1': 61.5,
                                  'accuracy/top5': 90.})
    hook.after_train(runner)
    return work_dir / 'export', hook


def _backbone_tensors(model):
    return {
        k[len('backbone.'):]: v
        for k, v in model.state_dict().items() if k.startswith('backbone.')
    }


def test_hook_writes_loadable_files(bp_model, tmp_path):
    out, hook = _export_with_hook(bp_model, tmp_path, 'bp')
    assert sorted(p.name for p in out.iterdir()) == [
        'backbone.json', 'backbone.pth', 'torchvision.pth'
    ]
    expected = _backbone_tensors(bp_model)

    # backbone.pth: safe to load, keys exactly LocalResNet's
    ckpt = torch.load(out / 'backbone.pth', weights_only=True)
    assert set(ckpt) == {'state_dict', 'meta'}
    backbone = MODELS.build(dict(type='LocalResNet', depth=34))
    backbone.load_state_dict(ckpt['state_dict'], strict=True)
    for key, value in backbone.state_dict().items():
        assert torch.equal(value, expected[key]), key

    # torchvision.pth: strict into resnet34, fc from head.fc
    tv = torchvision.models.resnet34(num_classes=NUM_CLASSES)
    tv.load_state_dict(
        torch.load(out / 'torchvision.pth', weights_only=True), strict=True)
    assert torch.equal(tv.fc.weight, bp_model.head.fc.weight)
    assert torch.equal(tv.layer4[2].bn2.running_var,
                       expected['layer4.2.bn2.running_var'])
    # same function: identical logits in eval mode
    bp_model.eval()
    tv.eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(tv(x), bp_model(x, mode='tensor'))

    meta = json.loads((out / 'backbone.json').read_text())
    assert meta['rule'] == 'bp' and meta['num_local_modules'] == 1
    assert meta['val_top1'] == 61.5 and meta['epoch'] == 3
    assert meta['source_checkpoint'].endswith('epoch_3.pth')
    assert len(meta['source_sha256']) == 64
    assert meta['torchvision'] == 'resnet34'
    assert ckpt['meta']['val_top1'] == 61.5
    assert hook.exported['files']['backbone.pth']['sha256'] == \
        meta['files']['backbone.pth']['sha256']


def test_hook_local_rule_drops_aux_heads(local_model, tmp_path):
    out, _ = _export_with_hook(local_model, tmp_path, 'local')
    ckpt = torch.load(out / 'backbone.pth', weights_only=True)
    assert set(ckpt['state_dict']) == set(_backbone_tensors(local_model))
    meta = json.loads((out / 'backbone.json').read_text())
    assert meta['rule'] == 'local' and meta['num_local_modules'] == 17
    assert meta['aux_head'] == 'PredSimAuxHead'


def test_hook_without_final_checkpoint(bp_model, tmp_path):
    runner = _runner(bp_model, tmp_path, 'bp')
    ExportBackboneHook(out_dir=str(tmp_path / 'elsewhere')).after_train(
        runner)
    meta = json.loads((tmp_path / 'elsewhere' / 'backbone.json').read_text())
    assert meta['source_checkpoint'] is None and meta['val_top1'] is None
    assert 'in-memory' in meta['source_note']


def test_mmdet_resnet_loads_backbone(bp_model, tmp_path):
    pytest.importorskip('mmdet')
    from mmdet.models.backbones import ResNet
    out, _ = _export_with_hook(bp_model, tmp_path, 'bp')
    path = str(out / 'backbone.pth')
    resnet = ResNet(
        depth=34, init_cfg=dict(type='Pretrained', checkpoint=path))
    resnet.init_weights()
    expected = _backbone_tensors(bp_model)
    loaded = resnet.state_dict()
    assert set(loaded) == set(expected)  # no missing / unexpected keys
    for key, value in loaded.items():
        assert torch.equal(value, expected[key]), key


def _training_checkpoint(model, path, rule):
    cfg = Config(dict(model=_model_cfg(rule), train_cfg=dict(max_epochs=7)))
    torch.save(
        dict(
            meta=dict(cfg=cfg.pretty_text, epoch=7, iter=70),
            state_dict=model.state_dict()), path)


def test_converter_function_and_cli(local_model, tmp_path):
    ckpt = tmp_path / 'epoch_7.pth'
    _training_checkpoint(local_model, ckpt, 'local')
    meta = export_checkpoint(str(ckpt))
    out = tmp_path / 'export'
    assert (out / 'backbone.pth').is_file()
    assert meta['epoch'] == 7 and meta['max_epochs'] == 7
    assert meta['aux_head'] == 'PredSimAuxHead'
    assert meta['num_local_modules'] == 17
    tv = torchvision.models.resnet34(num_classes=NUM_CLASSES)
    tv.load_state_dict(torch.load(out / 'torchvision.pth'), strict=True)

    cli = [sys.executable,
           osp.join(ROOT, 'tools', 'model_converters', 'export_backbone.py')]
    done = subprocess.run(
        cli + [str(ckpt), '--out-dir', str(tmp_path / 'cli')],
        capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert 'backbone.pth' in done.stdout
    assert (tmp_path / 'cli' / 'torchvision.pth').is_file()

    # not a classifier checkpoint: clear error naming the file
    tv_file = tmp_path / 'resnet34.pth'
    torch.save(tv.state_dict(), tv_file)
    with pytest.raises(NotAClassifierCheckpointError,
                       match='resnet34.pth.*not a checkpoint'):
        export_checkpoint(str(tv_file))
    done = subprocess.run(
        cli + [str(tv_file)], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 1
    assert 'resnet34.pth' in done.stderr and 'LocalImageClassifier' in \
        done.stderr
    with pytest.raises(FileNotFoundError, match='missing.pth'):
        export_checkpoint(str(tmp_path / 'missing.pth'))


def test_subclasses_of_the_classifier_are_exportable():
    from auglocal_det.export import _is_local_classifier, describe_model
    assert _is_local_classifier('LocalImageClassifier')
    assert _is_local_classifier('MLAANImageClassifier')
    assert not _is_local_classifier('MaskRCNN')
    # MLAAN's first heads have no parameters: K comes from the last head
    weights = {f'aux_heads.{j}.fc.weight': torch.zeros(1) for j in (2, 14)}
    info = describe_model(dict(type='MLAANImageClassifier'), weights)
    assert info['num_local_modules'] == 16


def test_converter_refuses_non_finite_weights(local_model, tmp_path):
    """A corrupted checkpoint with NaN weights: the converter names the
    tensor, writes nothing and exits with status 1."""
    ckpt = tmp_path / 'epoch_7.pth'
    _training_checkpoint(local_model, ckpt, 'local')
    saved = torch.load(ckpt, weights_only=False)
    saved['state_dict']['backbone.layer2.1.conv1.weight'].view(-1)[:3] = \
        float('nan')
    torch.save(saved, ckpt)
    with pytest.raises(InputError) as info:
        export_checkpoint(str(ckpt))
    print(f'InputError: {info.value}')
    assert "tensor 'backbone.layer2.1.conv1.weight' holds 3 non-finite " \
        'values' in str(info.value)
    assert not (tmp_path / 'export').exists()

    cli = [sys.executable,
           osp.join(ROOT, 'tools', 'model_converters', 'export_backbone.py')]
    done = subprocess.run(
        cli + [str(ckpt), '--out-dir', str(tmp_path / 'cli')],
        capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 1
    assert 'non-finite' in done.stderr.splitlines()[0]
    assert not (tmp_path / 'cli').exists()
