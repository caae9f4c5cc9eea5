"""Tests of MLAAN: heads, gradient routing, EMA twins, equivalence, DDP.

Most tests train a CIFAR ResNet-32 with 8 base channels on 16x16 images
(K = 15 one-block modules, the authors' leap-layer table), small enough for
several train steps on a CPU. The ResNet-34 parameter counts are taken on
the ``meta`` device.
"""
import copy
import io
import os.path as osp
import weakref
from collections import Counter, OrderedDict
from typing import Dict, List, Set
from unittest import mock

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from common_utils import (
    IMAGE_SIZE,
    NUM_CLASSES,
    ROOT,
    ReductionLog,
    assert_same_state,
    build_cached,
    build_ddp_model,
    make_batch,
    run_gloo_processes,
    sgd,
    wrap_local_ddp,
)
from mmengine.config import Config
from mmengine.optim import OptimWrapper

import auglocal_det  # noqa: F401  (registers the components)
from auglocal_det.engine.optim_wrappers import (
    LayerwiseLocalOptimWrapper,
    LocalOptimWrapper,
)
from auglocal_det.export import export_backbone
from auglocal_det.models.aux_heads.mlaan import (
    MLAAN_LEAP_LAYERS,
    LeapAugmentedModule,
    mlaan_leap_layers,
)
from auglocal_det.models.classifiers import MLAANImageClassifier
from auglocal_det.registry import MODELS
from auglocal_det.structures import ClsDataSample
from auglocal_det.utils.flops import count_forward_flops

INDEPENDENT_HEADS = dict(
    mlaan=None,
    dgl=dict(type='DGLAuxHead'),
    infopro=dict(type='InfoProAuxHead'),
)


def model_cfg(span: int = 2, independent: str = 'mlaan', **kwargs) -> dict:
    aux_head = dict(type='MLAANAuxHead')
    if INDEPENDENT_HEADS[independent] is not None:
        aux_head['independent_head'] = INDEPENDENT_HEADS[independent]
    aux_head.update(kwargs.pop('aux', {}))
    cfg = dict(
        type='MLAANImageClassifier',
        backbone=dict(type='LocalCifarResNet', depth=32, base_channels=8),
        aux_head=aux_head,
        num_classes=NUM_CLASSES,
        image_size=IMAGE_SIZE,
        span=span)
    cfg.update(kwargs)
    return cfg


def build(span: int = 2, independent: str = 'mlaan',
          **kwargs) -> MLAANImageClassifier:
    """A fresh copy of the (cached) model, in train mode."""
    return build_cached(model_cfg(span, independent, **kwargs))


def lams(model: MLAANImageClassifier) -> List[LeapAugmentedModule]:
    return [aux.lam for aux in model.aux_heads if aux.lam is not None]


def num_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def num_ema(lam: LeapAugmentedModule) -> int:
    return sum(t.numel() for t in lam.ema_state().values())


# ---------------------------------------------------------------- structure
def test_structure_and_ema_storage():
    model = build(span=2)
    assert model.num_modules == 15 and model.num_aux == 14
    # the stem joins the first block's module
    assert model.module_ranges[:3] == [(0, 1), (2, 2), (3, 3)]
    assert model.last_step == list(range(1, 15)) + [14]
    assert not model.aux_heads[0].has_loss
    assert list(model.aux_heads[0].parameters()) == []
    assert model.aux_heads[0].lam is None
    table = MLAAN_LEAP_LAYERS['resnet32']
    backbone = model.backbone
    for i, aux in enumerate(model.aux_heads[1:], start=1):
        assert aux.has_loss and aux.lam.layer_names == table[i]
        # leap blocks are shaped like their primary layers, but fresh
        for name, block in zip(table[i], aux.lam.blocks):
            primary = backbone.get_submodule(name)
            assert (block.inplanes, block.planes, block.stride) == (
                primary.inplanes, primary.planes, primary.stride)
            assert (block.downsample is None) == (primary.downsample is None)
        assert aux.lam.ema_source == table[i][0]
        primary = backbone.get_submodule(table[i][0])
        assert not torch.equal(aux.lam.ema.conv1.weight,
                               primary.conv1.weight)

    # EMA twins: no parameters (so no gradient, no optimizer state) but
    # saved in the state dict
    state = model.state_dict()
    param_ids = {id(p) for p in model.parameters()}
    for j, lam in enumerate(lams(model), start=1):
        assert list(lam.ema.parameters()) == []
        for name, tensor in lam.ema_state().items():
            assert not tensor.requires_grad and id(tensor) not in param_ids
            assert f'aux_heads.{j}.lam.ema.{name}' in state
    optimizer = sgd(model)
    optimized = {id(p) for g in optimizer.param_groups for p in g['params']}
    assert not optimized & {
        id(t) for lam in lams(model) for t in lam.ema_state().values()
    }


def test_r34_leap_modules_and_param_counts():
    """ALGORITHMS.md section 6(b): MLAAN K=16 after layer1.2 (module 2)."""
    with torch.device('meta'):
        model = MODELS.build(
            dict(
                type='MLAANImageClassifier',
                backbone=dict(type='LocalResNet', depth=34),
                aux_head=dict(type='MLAANAuxHead'),
                span=3))
    assert model.num_modules == 16
    assert model.module_ranges[0] == (0, 1)  # stem + layer1.0
    assert num_params(model.backbone) + num_params(model.head) == 21797672
    table = MLAAN_LEAP_LAYERS['resnet34']
    assert table[13] == ['layer4.1', 'layer4.1', 'layer4.2']
    # modules 0 and 1 have no loss: nothing is built for them
    assert [num_params(aux) for aux in model.aux_heads[:2]] == [0, 0]
    for i in range(2, 15):
        assert model.aux_heads[i].lam.layer_names == table[i]
    aux = model.aux_heads[2]
    assert aux.lam.layer_names == [
        'layer2.0', 'layer2.1', 'layer3.0', 'layer4.0', 'layer4.2'
    ]
    assert num_params(aux.lam.blocks) == 9838336
    assert num_params(aux.lam.fc) == 513000
    assert num_params(aux.independent) == 81768
    assert num_ema(aux.lam) == 230144
    # the independent head by width (64, 128: two 1x1 convs; 256, 512: FC)
    widths = {3: 195304, 7: 257000, 14: 513000}
    for i, count in widths.items():
        assert num_params(model.aux_heads[i].independent) == count
    assert sum(num_params(a) for a in model.aux_heads) == 139420688
    assert sum(num_ema(lam) for lam in lams(model)) == 17937152


def test_cifar_r32_param_counts():
    """ALGORITHMS.md section 6(a): MLAAN R32 K=15, module 1 (span 2)."""
    with torch.device('meta'):
        model = MODELS.build(
            dict(
                type='MLAANImageClassifier',
                backbone=dict(type='LocalCifarResNet', depth=32),
                num_classes=10,
                image_size=32,
                span=2))
    aux = model.aux_heads[1]
    assert num_params(aux.lam) == 220874  # blocks + FC 64 -> 10
    assert num_params(aux.independent) == 170  # AP + FC 16 -> 10
    assert num_ema(aux.lam) == 14528  # twin of layer2.0


@pytest.mark.parametrize('depth,backbone,span', [(110, 'LocalCifarResNet', 2),
                                                 (101, 'LocalResNet', 3)])
def test_other_tables_build(depth, backbone, span):
    with torch.device('meta'):
        model = MODELS.build(
            dict(
                type='MLAANImageClassifier',
                backbone=dict(type=backbone, depth=depth),
                num_classes=10,
                span=span))
    table = MLAAN_LEAP_LAYERS[f'resnet{depth}']
    assert model.num_aux == len(table)
    assert len(lams(model)) == model.num_aux - span + 1
    for aux in model.aux_heads[span - 1:]:
        assert aux.lam.layer_names == table[aux.module_index]


def test_errors():
    with pytest.raises(TypeError, match='independent_head'):
        MODELS.build(model_cfg(aux_head=dict(type='DGLAuxHead')))
    with pytest.raises(ValueError, match='rule'):
        MODELS.build(model_cfg(rule='bp'))
    with pytest.raises(KeyError, match='leap_layers'):
        MODELS.build(
            model_cfg(backbone=dict(type='LocalCifarResNet', depth=20)))
    specs = build().layer_specs
    with pytest.raises(KeyError, match='split_points'):
        mlaan_leap_layers(specs, num_aux=15)
    with pytest.raises(ValueError, match='last_loss_weights'):
        MODELS.build(model_cfg(last_loss_weights=(1., )))
    bad = [['layer3.1']] * 14  # 64-channel block after 8-channel features
    with pytest.raises(ValueError, match='channels'):
        MODELS.build(model_cfg(aux=dict(leap_layers=bad)))
    with pytest.raises(TypeError, match='LocalOptimWrapper'):
        model = build()
        model.train_step(make_batch(0), OptimWrapper(sgd(model)))


# ------------------------------------------------------- gradient routing
def _module_names(model: MLAANImageClassifier) -> List[Set[str]]:
    names = {id(p): n for n, p in model.named_parameters()}
    return [{names[id(p)] for p in module.parameters()}
            for module in model.local_modules()]


@pytest.mark.parametrize('span', [2, 3])
def test_gradient_routing(span):
    """Each stream's loss reaches exactly the parameters ALGORITHMS.md
    section 5 says, and every parameter is reported as final once,
    after the last loss that reaches it."""
    model = build(span=span)
    data = model.data_preprocessor(make_batch(3), True)
    batch = model.aux_batch(data['inputs'], data['data_samples'])
    steps = list(model.local_steps(data['inputs'], batch))
    num_modules = model.num_modules
    assert [s.index for s in steps] == list(range(span - 1, num_modules))

    params = OrderedDict(model.named_parameters())
    names = {id(p): n for n, p in params.items()}
    modules = _module_names(model)
    head = {n for n in params if n.startswith('head.')}
    last_reach: Dict[str, int] = {}
    for step in steps:
        i = step.index
        first = max(0, i - span + 1)
        cascade = set().union(*modules[first:i + 1])
        if i < num_modules - 1:
            aux = f'aux_heads.{i}.'
            expected = dict(
                loss_x_ce=modules[i] | {
                    n for n in params if n.startswith(aux + 'independent.')
                },
                loss_y_ce=cascade | {
                    n for n in params if n.startswith(aux + 'lam.')
                })
        else:
            expected = dict(
                loss_x_ce=modules[i] | head, loss_y_ce=cascade | head)
        assert set(step.losses) == set(expected)
        for part, value in step.losses.items():
            grads = torch.autograd.grad(
                value, list(params.values()), retain_graph=True,
                allow_unused=True)
            reached = {n for n, g in zip(params, grads) if g is not None}
            assert reached == expected[part], (i, part)
            for name in reached:
                last_reach[name] = i
        # the stem learns only through the first cascade
        assert ('backbone.conv1.weight' in expected['loss_y_ce']) == (
            i == span - 1)

    reported = Counter(names[id(p)] for s in steps for p in s.params)
    assert set(reported) == set(params) and set(reported.values()) == {1}
    for step in steps:
        for p in step.params:
            assert last_reach[names[id(p)]] == step.index


def test_graph_freed_after_each_step():
    """When step i back-propagates, nothing saved by an earlier step is
    alive: each step's graph is freed by its own backward."""
    model = build(span=3)
    held: List[tuple] = []  # (step, weakref to a saved tensor holder)
    current = [0]
    violations = []

    class Holder:
        __slots__ = ('tensor', '__weakref__')

        def __init__(self, tensor):
            self.tensor = tensor

    def pack(tensor):
        holder = Holder(tensor)
        held.append((current[0], weakref.ref(holder)))
        return holder

    class Watch(LocalOptimWrapper):

        def backward(self, loss, **kwargs):
            alive = {s for s, ref in held if ref() is not None}
            if alive - {current[0]}:
                violations.append((current[0], alive))
            super().backward(loss, **kwargs)
            current[0] += 1

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda h: h.tensor):
        model.train_step(make_batch(5), Watch(sgd(model)))
    assert current[0] == model.num_modules - 2
    assert not violations


@pytest.mark.parametrize('span', [2, 3])
def test_stem_runs_once_per_iteration(span):
    """Both streams share one stem forward, as in the authors' code: the
    stem's BatchNorm statistics after one train_step are those of one
    plain forward in training mode (one momentum step)."""
    model = build(span=span)
    plain = copy.deepcopy(model)
    stem = model.backbone
    calls = Counter()
    for name in ('conv1', 'bn1'):
        getattr(stem, name).register_forward_hook(
            lambda *_, n=name: calls.update([n]))
    model.train_step(make_batch(7), LocalOptimWrapper(sgd(model)))
    assert calls == Counter(conv1=1, bn1=1)

    with torch.no_grad():
        plain.backbone(plain.data_preprocessor(make_batch(7), True)['inputs'])
    for name in ('running_mean', 'running_var', 'num_batches_tracked'):
        assert torch.equal(
            getattr(stem.bn1, name), getattr(plain.backbone.bn1, name)), name
    assert int(stem.bn1.num_batches_tracked) == 1
    # every block runs once per stream that passes through it (layer1.0:
    # the independent stream and the first cascade)
    assert int(stem.layer1[0].bn1.num_batches_tracked) == 2


@pytest.mark.parametrize('name', [
    'mlaan_r32_400e_cifar10.py', 'mlaan-dgl_r32_400e_cifar10.py',
    'mlaan-infopro_r32_400e_cifar10.py'
])
def test_cifar_config_leap_blocks_start_like_backbone(name):
    """The CIFAR configs give the leap blocks and EMA twins the norm
    weights of the backbone's blocks (1: no zero-initialised residual),
    as the authors' CIFAR code, which copies the initialised blocks."""
    cfg = Config.fromfile(osp.join(ROOT, 'configs', 'mlaan', name))
    model = MODELS.build(cfg.model)
    model.init_weights()
    backbone = model.backbone

    def norm_weights(block):
        return {
            n: m.weight
            for n, m in block.named_modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm)
        }

    checked = 0
    for lam in lams(model):
        pairs = list(zip(lam.blocks, lam.layer_names))
        pairs.append((lam.ema, lam.ema_source))
        for block, primary_name in pairs:
            ours = norm_weights(block)
            primary = norm_weights(backbone.get_submodule(primary_name))
            assert list(ours) == list(primary)
            for key, weight in primary.items():
                assert torch.equal(ours[key], weight), (primary_name, key)
                checked += 1
    assert checked > 0
    assert cfg.model.last_loss_weights == (0., 1.)


def test_last_module_loss_weights():
    """The last module's weights: ``(0, 1)`` back-propagates the cascaded
    stream alone (the authors' CIFAR code); the default mix gives the last
    block and the classifier the same gradient and the block before it
    0.999 times the cascade's."""
    mixed = build(span=2)
    alone = build(span=2, last_loss_weights=(0., 1.))
    alone.load_state_dict(mixed.state_dict())
    assert mixed.last_loss_weights == mixed.loss_weights == (0.001, 0.999)
    data = make_batch(9)
    grads = {}
    for key, model in (('mixed', mixed), ('alone', alone)):
        inputs = model.data_preprocessor(data, True)
        batch = model.aux_batch(inputs['inputs'], inputs['data_samples'])
        last = list(model.local_steps(inputs['inputs'], batch))[-1]
        assert last.index == model.num_modules - 1
        modules = model.local_modules()
        groups = dict(
            before=list(modules[-2].parameters()),
            last=list(modules[-1].parameters()),
            head=list(model.head.parameters()))
        grads[key] = {
            group: torch.autograd.grad(last.loss, params, retain_graph=True)
            for group, params in groups.items()
        }
        if key == 'alone':
            assert float(last.losses['loss_x_ce'].detach()) == 0.
            torch.testing.assert_close(
                last.losses['loss_y_ce'],
                F.cross_entropy(last.logits[''], batch.labels))
    for group in ('last', 'head'):
        for mix, one in zip(grads['mixed'][group], grads['alone'][group]):
            torch.testing.assert_close(mix, one, rtol=1e-5, atol=1e-7)
    for mix, one in zip(grads['mixed']['before'], grads['alone']['before']):
        assert torch.count_nonzero(one) > 0
        torch.testing.assert_close(mix, 0.999 * one, rtol=1e-5, atol=1e-7)


# ------------------------------------------------- equivalence to reference
def reference_update(model: MLAANImageClassifier, batches: List[dict]) -> None:
    """The reference: summed losses of every batch, one backward each
    (divided by the number of batches), one SGD step, one EMA update."""
    optimizer = sgd(model)
    for data in batches:
        data = model.data_preprocessor(data, True)
        loss, _ = model.parse_losses(model(**data, mode='loss'))
        (loss / len(batches)).backward()
    optimizer.step()
    model.update_ema()


@pytest.mark.parametrize('span,independent,accumulative_counts,kwargs', [
    (2, 'mlaan', 1, {}),
    (3, 'mlaan', 2, {}),
    (3, 'dgl', 1, {}),
    (2, 'infopro', 1, {}),
    (2, 'mlaan', 1, dict(last_loss_weights=(0., 1.))),
])
def test_train_step_equals_reference(span, independent, accumulative_counts,
                                     kwargs):
    model = build(span, independent, **kwargs)
    ref = copy.deepcopy(model)
    before = {
        k: v.clone()
        for k, v in model.state_dict().items() if '.lam.ema.' in k
    }
    wrapper = LocalOptimWrapper(
        sgd(model), accumulative_counts=accumulative_counts)
    batches = [make_batch(10 + it) for it in range(accumulative_counts)]
    for data in batches:
        log_vars = model.train_step(data, wrapper)
    reference_update(ref, batches)
    assert all(p.grad is None for p in model.parameters())
    assert_same_state(model, ref, check_keys=True)
    # the twins did move
    state = model.state_dict()
    assert not any(torch.equal(state[k], v) for k, v in before.items()
                   if k.endswith('conv1.weight'))

    loss_keys = [k for k in log_vars if k.startswith('loss_')]
    assert len(loss_keys) == model.num_modules - span + 1
    torch.testing.assert_close(
        log_vars['loss'], sum(log_vars[k] for k in loss_keys))
    last = model._tags[-1]
    assert {f'{last}_x_ce', f'{last}_y_ce', f'acc_{last}'} <= set(log_vars)


def test_layerwise_wrapper_matches():
    """A parameter reported too early would be updated before its last
    gradient arrives: per-module updates must give the same weights."""
    model, ref = build(span=3), build(span=3)
    wrapper = LayerwiseLocalOptimWrapper(sgd(model))
    model.train_step(make_batch(20), wrapper)
    assert wrapper._num_checked == 0  # reset at the end
    ref.train_step(make_batch(20), LocalOptimWrapper(sgd(ref)))
    assert_same_state(model, ref, check_keys=True)


# --------------------------------------------------------------------- EMA
class EMASpy:
    """Counts update_ema calls per leap module and records the twin and
    the primary layer just before each update."""

    def __init__(self):
        self.calls: Counter = Counter()
        self.before: Dict[int, Dict[str, torch.Tensor]] = {}
        self.original = LeapAugmentedModule.update_ema

    def __call__(self, lam, source):
        self.calls[id(lam)] += 1
        self.before[id(lam)] = {
            k: v.clone()
            for k, v in lam.ema.state_dict().items()
        }
        return self.original(lam, source)


@pytest.mark.parametrize('ema_buffers', [False, True])
def test_ema_update_formula_once_per_iteration(ema_buffers):
    model = build(span=2, aux=dict(ema_momentum=0.9, ema_buffers=ema_buffers))
    spy = EMASpy()
    wrapper = LocalOptimWrapper(sgd(model), accumulative_counts=2)
    with mock.patch.object(LeapAugmentedModule, 'update_ema', autospec=True,
                           side_effect=spy):
        # accumulating iteration: no update, so no EMA step
        ema = {id(lam): copy.deepcopy(lam.ema.state_dict())
               for lam in lams(model)}
        model.train_step(make_batch(30), wrapper)
        assert not spy.calls
        # updating iteration: every twin exactly once, after the step
        model.train_step(make_batch(31), wrapper)
    assert set(spy.calls) == {id(lam) for lam in lams(model)}
    assert set(spy.calls.values()) == {1}
    for lam in lams(model):
        source = model.backbone.get_submodule(lam.ema_source)
        primary = dict(source.named_parameters())
        if ema_buffers:
            primary.update(source.named_buffers())
        before, after = spy.before[id(lam)], lam.ema.state_dict()
        for name, value in after.items():
            if name in primary and value.is_floating_point():
                expected = 0.9 * before[name] + 0.1 * primary[name].detach()
                torch.testing.assert_close(value, expected)
            elif name in primary:  # num_batches_tracked is copied
                assert torch.equal(value, primary[name])
            else:  # own running statistics (updated by its forward)
                assert name.startswith(('bn', 'downsample.1')) and \
                    not ema_buffers
        # the accumulating iteration left the averaged tensors alone
        for name in lam.ema_param_names:
            assert torch.equal(before[name], ema[id(lam)][name])


def test_resume_restores_ema_exactly():
    """Train 3 iterations, or 2 + save + load into a differently seeded
    model + 1: identical weights, BN statistics and EMA twins."""
    straight = build(span=2)
    wrapper = LocalOptimWrapper(sgd(straight))
    for it in range(3):
        straight.train_step(make_batch(40 + it), wrapper)

    first = build(span=2)
    wrapper = LocalOptimWrapper(sgd(first))
    for it in range(2):
        first.train_step(make_batch(40 + it), wrapper)
    buffer = io.BytesIO()
    torch.save(
        dict(state_dict=first.state_dict(), optimizer=wrapper.state_dict()),
        buffer)

    torch.manual_seed(123)
    resumed = MODELS.build(model_cfg(span=2)).train()
    assert not torch.equal(resumed.aux_heads[1].lam.ema.conv1.weight,
                           first.aux_heads[1].lam.ema.conv1.weight)
    buffer.seek(0)
    checkpoint = torch.load(buffer, weights_only=False)
    resumed.load_state_dict(checkpoint['state_dict'], strict=True)
    wrapper = LocalOptimWrapper(sgd(resumed))
    wrapper.load_state_dict(checkpoint['optimizer'])
    loaded = resumed.state_dict()
    for key, value in first.state_dict().items():
        assert torch.equal(loaded[key], value), key
    resumed.train_step(make_batch(42), wrapper)
    expected = straight.state_dict()
    for key, value in resumed.state_dict().items():
        assert torch.equal(value, expected[key]), key


# ----------------------------------------------------- inference and export
def test_predict_flops_and_export(tmp_path):
    model = build(span=3).eval()
    results = model.val_step(make_batch(50))
    labels = results[0].aux_pred_labels
    assert labels.shape == (model.num_aux, )
    assert labels[:2].tolist() == [-1, -1]  # modules without a loss
    assert (labels[2:] >= 0).all()

    report = count_forward_flops(model, IMAGE_SIZE)
    assert report.aux[:2] == [0., 0.] and all(f > 0 for f in report.aux[2:])

    # the export holds the backbone alone: no leap modules, no EMA twins
    meta = export_backbone(
        model.state_dict(), str(tmp_path),
        dict(backbone=dict(type='LocalCifarResNet', depth=32)))
    exported = torch.load(
        tmp_path / 'backbone.pth', weights_only=True)['state_dict']
    plain = MODELS.build(
        dict(type='LocalCifarResNet', depth=32, base_channels=8))
    assert list(exported) == list(plain.state_dict())
    plain.load_state_dict(exported, strict=True)
    assert 'backbone.pth' in meta['files']


def test_r34_train_step_smoke():
    """The ImageNet ResNet-34 layout (span 3, its leap table) at 32x32."""
    torch.manual_seed(0)
    model = MODELS.build(
        dict(
            type='MLAANImageClassifier',
            backbone=dict(type='LocalResNet', depth=34, base_channels=8),
            aux_head=dict(type='MLAANAuxHead'),
            num_classes=NUM_CLASSES,
            image_size=32,
            span=3))
    model.init_weights()
    # the classifier's init_weights reaches the leap blocks and twins
    lam = model.aux_heads[2].lam
    assert torch.count_nonzero(lam.blocks[0].bn2.weight) == 0
    assert torch.count_nonzero(lam.ema.bn2.weight) == 0
    gen = torch.Generator().manual_seed(0)
    data = dict(
        inputs=[
            torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8,
                          generator=gen) for _ in range(4)
        ],
        data_samples=[ClsDataSample().set_gt_label(i) for i in range(4)])
    log_vars = model.train_step(data, LocalOptimWrapper(sgd(model)))
    assert torch.isfinite(log_vars['loss'])
    assert 'loss_l02' in log_vars and 'loss_l01' not in log_vars


# ---------------------------------------------------------------------- DDP
WORLD_SIZE = 2
GLOBAL_BATCH = 4
NUM_ITERS = 2


def ddp_model(seed: int) -> nn.Module:
    """MLAAN (span 2) with frozen, non-trivial BN and an unused parameter.
    """
    return build_ddp_model(model_cfg(span=2), seed)


def ddp_train(model: nn.Module, step_model: nn.Module, rank: int = 0,
              world_size: int = 1) -> List[dict]:
    per_rank = GLOBAL_BATCH // world_size
    wrapper = LocalOptimWrapper(sgd(model))
    reports = []
    log = ReductionLog(step_model)
    for it in range(NUM_ITERS):
        data = make_batch(60 + it)
        data = {k: v[rank * per_rank:(rank + 1) * per_rank]
                for k, v in data.items()}
        step_model.train_step(data, wrapper)
        reports.append(log.report())
    return reports


def _ddp_worker(rank: int) -> dict:
    """One process of the gloo group (see ``run_gloo_processes``)."""
    model = ddp_model(seed=rank)  # rank 1 starts different
    reports = ddp_train(model, wrap_local_ddp(model), rank, WORLD_SIZE)
    return dict(state=model.state_dict(), reports=reports)


def test_ddp_each_parameter_reduced_once(tmp_path):
    results = run_gloo_processes(_ddp_worker, WORLD_SIZE, tmp_path)
    ref = ddp_model(seed=0)
    ddp_train(ref, ref)
    # replicas (EMA twins included) are identical and equal one process
    for name, value in results[0]['state'].items():
        assert torch.equal(value, results[1]['state'][name]), name
        torch.testing.assert_close(
            value, ref.state_dict()[name], rtol=1e-5, atol=1e-6,
            msg=lambda m, n=name: f'{n}: {m}')
    trainable = {n for n, p in ref.named_parameters() if p.requires_grad}
    num_steps = ref.num_modules - ref.span + 1
    for result in results:
        for report in result['reports']:
            assert set(report['counts']) == trainable
            assert set(report['counts'].values()) == {1}
            assert report['late'] == ['unused']
            assert report['num_buckets'] == num_steps + 1
