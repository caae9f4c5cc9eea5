"""The Fashion-MNIST configs: one recipe for every rule, the rules of the
CIFAR ResNet-32 configs, and tools/train.py end to end on tiny IDX files."""
import glob
import os.path as osp

import pytest
import torch
from common_utils import loader_options, one_error_line, run_train_tool
from mmengine.config import Config

from auglocal_det.registry import MODELS
from auglocal_det.testing import write_fashion_mnist

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
#: rule -> (config under configs/, the CIFAR-10 config of the same rule)
CONFIGS = {
    'bp': 'bp/bp_r32_{}_fashionmnist.py',
    'predsim': 'predsim/predsim_r32_{}_fashionmnist.py',
    'infopro': 'infopro/infopro_r32_{}_fashionmnist.py',
    'dgl': 'dgl/dgl_r32_{}_fashionmnist.py',
    'auglocal-d2': 'auglocal/auglocal-d2_r32_{}_fashionmnist.py',
    'auglocal-d4': 'auglocal/auglocal-d4_r32_{}_fashionmnist.py',
    'mlaan': 'mlaan/mlaan_r32_{}_fashionmnist.py',
}


def _path(rule):
    found = glob.glob(
        osp.join(ROOT, 'configs', CONFIGS[rule].format('*e')))
    assert len(found) == 1, found
    return found[0]


def _cifar(rule):
    name = osp.basename(_path(rule))
    epochs = name.split('_')[-2]
    return _path(rule).replace(f'_{epochs}_fashionmnist', '_400e_cifar10')


def test_every_rule_has_one_config():
    found = sorted(
        glob.glob(osp.join(ROOT, 'configs', '*', '*_fashionmnist.py')))
    assert found == sorted(_path(rule) for rule in CONFIGS)


def test_one_recipe_for_every_rule():
    """Nothing but the model differs between the rules' configs."""
    keys = ('optim_wrapper', 'param_scheduler', 'train_cfg',
            'train_dataloader', 'val_dataloader', 'test_dataloader',
            'data_preprocessor', 'randomness', 'auto_scale_lr')
    recipes = {}
    for rule in CONFIGS:
        cfg = Config.fromfile(_path(rule))
        recipe = {key: cfg.get(key) for key in keys}
        # the optimizer wrapper type is the rule's (one backward or K)
        recipe['optim_wrapper'] = {
            k: v for k, v in recipe['optim_wrapper'].items() if k != 'type'}
        recipes[rule] = recipe
        assert cfg.train_dataloader.dataset.type == 'FashionMNIST'
        assert cfg.train_dataloader.dataset.get('num_per_class') is None
        assert cfg.val_dataloader.dataset.get('num_per_class') is None
        assert cfg.val_dataloader.dataset.split == 'test'
        assert cfg.model.image_size == 28
        assert cfg.model.backbone.in_channels == 1
    first = recipes.pop('bp')
    for rule, recipe in recipes.items():
        assert recipe == first, rule


@pytest.mark.parametrize('rule', sorted(CONFIGS))
def test_rule_as_in_the_cifar_config(rule):
    """The same head, split and loss weights as the CIFAR-10 config."""
    ours = Config.fromfile(_path(rule)).model
    cifar = Config.fromfile(_cifar(rule)).model
    for key in ('type', 'rule', 'aux_head', 'split_points', 'span',
                'loss_weights'):
        assert ours.get(key) == cifar.get(key), key
    assert ours.backbone == dict(cifar.backbone, in_channels=1)


@pytest.mark.parametrize('rule', sorted(CONFIGS))
def test_builds_and_takes_grey_28px_images(rule):
    cfg = Config.fromfile(_path(rule))
    model = dict(cfg.model, data_preprocessor=cfg.data_preprocessor)
    torch.manual_seed(0)
    net = MODELS.build(model)
    images = [torch.randint(0, 256, (1, 28, 28), dtype=torch.uint8)] * 2
    data = net.data_preprocessor(dict(inputs=images), False)
    net.eval()
    with torch.no_grad():
        logits = net(data['inputs'], mode='tensor')
    assert logits.shape == (2, 10)


@pytest.mark.parametrize('compressed', [True, False])
def test_train_tool_on_generated_idx_files(tmp_path, compressed):
    """A few iterations and one validation through tools/train.py."""
    data = str(tmp_path / 'data')
    write_fashion_mnist(
        data, num_train=40, num_test=8, compressed=compressed)
    work_dir = tmp_path / 'work'
    options = [
        'train_cfg.max_epochs=1', 'default_hooks.logger.interval=1',
        'train_dataloader.dataset.num_per_class=2',
        'default_hooks.checkpoint.save_optimizer=False'
    ] + loader_options(data)
    rule = 'auglocal-d2' if compressed else 'bp'
    done = run_train_tool(_path(rule), work_dir, *options)
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-4000:]
    # 2 images of each of the 10 classes, batch 8: 3 iterations
    assert 'Epoch(train) [1][3/3]' in log
    assert 'Epoch(val) [1][1/1]' in log and 'accuracy/top1' in log
    assert (work_dir / 'epoch_1.pth').is_file()
    if compressed:
        assert 'aux_top1/l00' in log


def test_train_tool_truncated_file_is_one_line(tmp_path):
    data = tmp_path / 'data'
    write_fashion_mnist(str(data), num_train=20, num_test=4)
    images = data / 'train-images-idx3-ubyte.gz'
    images.write_bytes(images.read_bytes()[:200])
    done = run_train_tool(
        _path('bp'), tmp_path / 'work',
        f'train_dataloader.dataset.data_root={data}',
        'train_dataloader.num_workers=0',
        'train_dataloader.persistent_workers=False')
    error = one_error_line(done)
    assert error.startswith('error: FashionMNIST: cannot read')
    assert str(images) in error
    assert 'apt-get install dataset-fashion-mnist' in error
