"""Tests of the pretrained-backbone checker (torch and mmengine only)."""
import pytest
import torch

from auglocal_det.models import LocalResNet
from auglocal_det.models.backbones.pretrained import (
    check_backbone_checkpoint,
    describe_resnet_state_dict,
)

EXPORT = 'work_dirs/auglocal_r34_imagenet/export/backbone.pth'


@pytest.fixture(scope='module')
def r34():
    return LocalResNet(depth=34)


@pytest.fixture(scope='module')
def r34_state(r34):
    return r34.state_dict()


def _save(path, obj):
    torch.save(obj, str(path))
    return str(path)


def test_exported_backbone_is_accepted(tmp_path, r34, r34_state):
    path = _save(tmp_path / 'backbone.pth',
                 dict(state_dict=r34_state, meta=dict(rule='auglocal')))
    state = check_backbone_checkpoint(path, r34)
    assert list(state) == list(r34_state)


def test_torchvision_layout_with_fc_is_accepted(tmp_path, r34, r34_state):
    # plain state dict, classifier head, no BN counters (old torchvision)
    state = {
        k: v
        for k, v in r34_state.items() if not k.endswith('num_batches_tracked')
    }
    state['fc.weight'] = torch.zeros(1000, 512)
    state['fc.bias'] = torch.zeros(1000)
    path = _save(tmp_path / 'torchvision.pth', state)
    assert 'fc.weight' in check_backbone_checkpoint(path, r34)


def test_missing_file_names_run_and_option(tmp_path, monkeypatch, r34):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError) as info:
        check_backbone_checkpoint(EXPORT, r34)
    msg = str(info.value)
    assert EXPORT in msg
    assert 'python tools/train.py configs/auglocal_r34_imagenet.py' in msg
    assert 'export_backbone.py' in msg
    assert '--cfg-options model.backbone.init_cfg.checkpoint=PATH' in msg


def test_missing_file_elsewhere(tmp_path, r34):
    path = str(tmp_path / 'nowhere.pth')
    with pytest.raises(FileNotFoundError, match='--cfg-options'):
        check_backbone_checkpoint(path, r34)


def test_full_training_checkpoint_points_to_converter(tmp_path, r34,
                                                      r34_state):
    state = {f'backbone.{k}': v for k, v in r34_state.items()}
    state['aux_heads.0.fc.weight'] = torch.zeros(10, 64)
    path = _save(
        tmp_path / 'epoch_90.pth',
        dict(
            meta=dict(epoch=90),
            state_dict=state,
            optimizer=dict(state={}),
            message_hub=dict()))
    with pytest.raises(ValueError) as info:
        check_backbone_checkpoint(path, r34)
    msg = str(info.value)
    assert 'full training checkpoint' in msg
    assert f'python tools/model_converters/export_backbone.py {path}' in msg
    assert 'optimizer' in msg and 'aux_heads.*' in msg

    # what the message offers as the alternative works
    loaded = check_backbone_checkpoint(path, r34, prefix='backbone.')
    assert set(loaded) == set(r34_state)


def test_resnet50_file_lists_the_differences(tmp_path, r34):
    r50 = LocalResNet(depth=50).state_dict()
    path = _save(tmp_path / 'r50.pth', dict(state_dict=r50, meta={}))
    with pytest.raises(ValueError) as info:
        check_backbone_checkpoint(path, r34)
    msg = str(info.value)
    assert path in msg
    assert 'ResNet-50 (Bottleneck blocks, stages (3, 4, 6, 3))' in msg
    assert 'ResNet-34 (BasicBlock blocks' in msg
    assert 'Unexpected keys' in msg and 'layer1.0.conv3.weight' in msg
    assert 'Shape mismatches' in msg
    assert 'layer1.0.conv1.weight (64, 64, 1, 1) in the file vs ' \
        '(64, 64, 3, 3) in the model' in msg


def test_truncated_resnet_lists_missing_keys(tmp_path, r34, r34_state):
    state = {k: v for k, v in r34_state.items() if not k.startswith('layer4')}
    path = _save(tmp_path / 'partial.pth', dict(state_dict=state))
    with pytest.raises(ValueError, match=r'Missing keys \(\d+\): layer4\.0'):
        check_backbone_checkpoint(path, r34)


def test_directory_and_unreadable_file(tmp_path, r34, r34_state):
    export = tmp_path / 'export'
    export.mkdir()
    _save(export / 'backbone.pth', dict(state_dict=r34_state))
    with pytest.raises(ValueError, match='backbone.pth'):
        check_backbone_checkpoint(str(export), r34)

    bad = tmp_path / 'bad.pth'
    bad.write_bytes(b'not a checkpoint')
    with pytest.raises(ValueError, match='not a readable checkpoint'):
        check_backbone_checkpoint(str(bad), r34)

    path = _save(tmp_path / 'list.pth', [1, 2])
    with pytest.raises(ValueError, match='not a state dict'):
        check_backbone_checkpoint(path, r34)


def test_prefix_without_matching_keys(tmp_path, r34, r34_state):
    path = _save(tmp_path / 'backbone.pth', dict(state_dict=r34_state))
    with pytest.raises(ValueError, match="no key under prefix 'backbone.'"):
        check_backbone_checkpoint(path, r34, prefix='backbone')


def test_describe_resnet_state_dict(r34_state):
    assert describe_resnet_state_dict(list(r34_state)).startswith(
        'ResNet-34 (BasicBlock')
    assert describe_resnet_state_dict(['conv1.weight']) is None
