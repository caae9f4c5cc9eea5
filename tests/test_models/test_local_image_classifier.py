"""Tests of LocalImageClassifier: local training equals its reference.

The network is a CIFAR ResNet-20 with 8 base channels on 16x16 images
(K = 10 local layers), small enough for many train steps on a CPU.
"""
import copy
import warnings
import weakref
from collections import OrderedDict
from typing import Dict, List
from unittest import mock

import pytest
import torch
from common_utils import (
    IMAGE_SIZE,
    NUM_CLASSES,
    assert_same_state,
    build_cached,
    make_batch,
    sgd,
)
from mmengine.optim import OptimWrapper

import auglocal_det  # noqa: F401  (registers the components)
from auglocal_det.engine.optim_wrappers import (
    AmpLocalOptimWrapper,
    LocalOptimWrapper,
)
from auglocal_det.models.classifiers import LocalImageClassifier
from auglocal_det.registry import MODELS
from auglocal_det.structures import ClsDataSample

#: Auxiliary head config of every rule (None: end-to-end back-propagation).
RULES = OrderedDict(
    auglocal_d2=dict(type='AugLocalAuxHead', depth=2),
    auglocal_pyramid=dict(
        type='AugLocalAuxHead', depth=3, pyramid=True, tau=0.5),
    dgl=dict(type='DGLAuxHead'),
    infopro=dict(type='InfoProAuxHead'),
    predsim=dict(type='PredSimAuxHead'),
    bp=None,
)


def model_cfg(aux_head, **kwargs) -> dict:
    cfg = dict(
        type='LocalImageClassifier',
        backbone=dict(type='LocalCifarResNet', depth=20, base_channels=8),
        aux_head=aux_head,
        num_classes=NUM_CLASSES,
        image_size=IMAGE_SIZE,
        rule='local' if aux_head is not None else 'bp')
    cfg.update(kwargs)
    return cfg



def build(rule: str, **kwargs) -> LocalImageClassifier:
    """A fresh copy of the (cached) model of ``rule``, in train mode."""
    return build_cached(model_cfg(RULES[rule], **kwargs))


def reference_backward(model: LocalImageClassifier, data: dict,
                       factor: float = 1.) -> None:
    """The reference definition: summed losses, one backward."""
    data = model.data_preprocessor(data, True)
    losses = model(**data, mode='loss')
    loss, _ = model.parse_losses(losses)
    (loss / factor).backward()


# ---------------------------------------------------------------- structure
def test_build_and_structure():
    model = build('auglocal_d2')
    assert model.num_modules == 10 and model.num_aux == 9
    names = [name for name, _ in model.named_parameters()]
    assert 'head.fc.weight' in names and 'head.fc.bias' in names
    assert any(name.startswith('aux_heads.8.') for name in names)
    assert not any(name.startswith('backbone.aux') for name in names)
    # trained from scratch: BN statistics update unless the config says so
    assert not model.backbone.norm_eval
    pre = model.data_preprocessor
    assert type(pre).__name__ == 'ImgDataPreprocessor'
    assert not pre._channel_conversion
    torch.testing.assert_close(
        pre.mean.flatten(), torch.tensor([123.675, 116.28, 103.53]))

    # every trainable parameter belongs to exactly one local module
    seen: List[int] = []
    for j, module in enumerate(model.local_modules()):
        seen += [id(p) for p in model.module_parameters(j, module)]
    assert sorted(seen) == sorted(id(p) for p in model.parameters())

    with pytest.raises(ValueError, match="rule='bp'"):
        MODELS.build(model_cfg(RULES['dgl'], rule='bp'))
    with pytest.raises(ValueError, match='aux_head'):
        MODELS.build(model_cfg(None, rule='local'))


def test_init_weights_reaches_every_aux_head():
    model = build('dgl')
    model.init_weights()
    assert all(getattr(head, 'is_init', False) for head in model.aux_heads)


def test_split_points():
    model = build('dgl', split_points=[0, 3, 6])
    assert model.module_ranges == [(0, 0), (1, 3), (4, 6), (7, 9)]
    assert [h.layer_index for h in model.aux_heads] == [0, 3, 6]
    losses = model(**model.data_preprocessor(make_batch(0), True),
                   mode='loss')
    assert [k for k in losses if k.startswith('loss')] == [
        'loss_l00', 'loss_l01', 'loss_l02', 'loss_l03'
    ]
    with pytest.raises(ValueError, match='split_points'):
        MODELS.build(model_cfg(RULES['dgl'], split_points=[3, 2]))


def test_forward_modes_and_predict():
    model = build('auglocal_d2').eval()
    data = model.data_preprocessor(make_batch(1), False)
    logits = model(data['inputs'], mode='tensor')
    assert logits.shape == (4, NUM_CLASSES)
    feats = model.extract_feat(data['inputs'], all_modules=True)
    assert len(feats) == model.num_modules
    assert feats[-1].shape == (4, 32, 4, 4)
    results = model.val_step(make_batch(1))
    assert len(results) == 4
    for sample in results:
        assert sample.pred_score.shape == (NUM_CLASSES, )
        torch.testing.assert_close(sample.pred_score.sum(), torch.tensor(1.))
        assert sample.pred_label.item() == sample.pred_score.argmax()
        assert sample.aux_pred_labels.shape == (model.num_aux, )
        assert sample.aux_pred_labels.dtype == torch.long
        assert 'gt_label' in sample
    with pytest.raises(RuntimeError, match='Invalid mode'):
        model(data['inputs'], mode='foo')


def test_unnormalize_recovers_images():
    model = build('infopro')
    batch = make_batch(2)
    data = model.data_preprocessor(batch, True)
    images = model.unnormalize(data['inputs'])
    expected = torch.stack(batch['inputs']).float() / 255.
    torch.testing.assert_close(images, expected, rtol=0, atol=1e-5)
    seen = {}
    head = model.aux_heads[0]
    original = head.loss

    def spy(feat, aux_batch):
        seen['batch'] = aux_batch
        return original(feat, aux_batch)

    with mock.patch.object(head, 'loss', side_effect=spy):
        model(**data, mode='loss')
    torch.testing.assert_close(seen['batch'].images, expected, rtol=0,
                               atol=1e-5)
    assert seen['batch'].labels.tolist() == [
        s.gt_label.item() for s in batch['data_samples']
    ]


@pytest.mark.parametrize('rule,calls', [('auglocal_d2', 0), ('infopro', 1)])
def test_images_made_only_for_heads_that_read_them(rule, calls):
    """The [0, 1] copy of the batch is made once for InfoPro and never for
    the rules that do not read it."""
    model = build(rule)
    data = model.data_preprocessor(make_batch(2), True)
    with mock.patch.object(
            model, 'unnormalize', wraps=model.unnormalize) as unnormalize:
        model(**data, mode='loss')
    assert unnormalize.call_count == calls


# ------------------------------------------------------- gradient isolation
@pytest.mark.parametrize('rule', ['auglocal_d2', 'infopro', 'predsim'])
def test_gradient_isolation_reference_graph(rule):
    """Each local loss reaches exactly its own module and head."""
    model = build(rule)
    data = model.data_preprocessor(make_batch(3), True)
    losses = model(**data, mode='loss')
    loss_names = [k for k in losses if k.startswith('loss')]
    params = OrderedDict(model.named_parameters())
    modules = model.local_modules()
    for j, name in enumerate(loss_names):
        grads = torch.autograd.grad(
            losses[name], list(params.values()), retain_graph=True,
            allow_unused=True)
        own = {id(p) for p in model.module_parameters(j, modules[j])}
        reached = {
            pname
            for (pname, p), g in zip(params.items(), grads) if g is not None
        }
        expected = {pname for pname, p in params.items() if id(p) in own}
        assert reached <= expected, f'{name} leaks into {reached - expected}'
        # the module's own conv weights do learn from its loss
        assert any('conv' in n or 'fc' in n for n in reached)


class ScaledLossWrapper(LocalOptimWrapper):
    """Multiplies the loss of one local module by ``factor``."""

    def __init__(self, *args, module_index: int, factor: float, **kwargs):
        super().__init__(*args, **kwargs)
        self.module_index = module_index
        self.factor = factor
        self.calls = 0  # backward calls of the iteration so far

    def backward(self, loss, **kwargs):
        if self.calls == self.module_index:
            loss = loss * self.factor
        self.calls += 1
        super().backward(loss, **kwargs)

    def finish_iteration(self, *args, **kwargs):
        self.calls = 0
        return super().finish_iteration(*args, **kwargs)


def _train_step_grads(model, wrapper, data) -> Dict[str, torch.Tensor]:
    grads = {}

    def grab():
        for name, p in model.named_parameters():
            if p.grad is not None:
                grads[name] = p.grad.clone()

    with wrapper.pre_step_hook(grab):
        model.train_step(data, wrapper)
    return grads


def test_gradient_isolation_train_step():
    """Scaling module k's loss scales module k's gradients only (by a power
    of two, so exactly) and leaves every other gradient bit-identical."""
    data = make_batch(4)
    base = build('auglocal_d2')
    base_grads = _train_step_grads(base, LocalOptimWrapper(sgd(base)), data)
    assert len(base_grads) == len(list(base.parameters()))
    for k in (0, 5):
        model = build('auglocal_d2')
        own = {
            id(p)
            for p in model.module_parameters(k, model.local_modules()[k])
        }
        wrapper = ScaledLossWrapper(
            sgd(model), module_index=k, factor=4.)
        grads = _train_step_grads(model, wrapper, data)
        for name, p in model.named_parameters():
            if id(p) in own:
                torch.testing.assert_close(
                    grads[name], 4 * base_grads[name], rtol=1e-6,
                    atol=0)
            else:
                assert torch.equal(grads[name], base_grads[name]), name


# ------------------------------------------------- equivalence to reference
@pytest.mark.parametrize('rule', list(RULES))
@pytest.mark.parametrize('accumulative_counts', [1, 2])
def test_train_step_equals_reference(rule, accumulative_counts):
    """One update through LocalOptimWrapper (K backward passes) gives the
    weights and BN statistics of the reference (summed losses, one
    backward) followed by one SGD step."""
    model = build(rule)
    ref = copy.deepcopy(model)
    wrapper = LocalOptimWrapper(
        sgd(model), accumulative_counts=accumulative_counts)
    ref_opt = sgd(ref)
    for it in range(accumulative_counts):
        data = make_batch(10 + it)
        log_vars = model.train_step(data, wrapper)
        reference_backward(ref, data, factor=accumulative_counts)
    ref_opt.step()
    assert wrapper.inner_count == accumulative_counts
    assert all(p.grad is None for p in model.parameters())
    assert_same_state(model, ref)

    loss_keys = [k for k in log_vars if k.startswith('loss_')]
    assert len(loss_keys) == model.num_modules
    torch.testing.assert_close(
        log_vars['loss'], sum(log_vars[k] for k in loss_keys))
    if rule != 'bp':
        assert 'acc_l00' in log_vars and 'loss_l09' in log_vars


def test_plain_optim_wrapper():
    model = build('dgl')
    with pytest.raises(TypeError, match="type='LocalOptimWrapper'"):
        model.train_step(make_batch(0), OptimWrapper(sgd(model)))
    # end-to-end training accepts MMEngine's wrapper and agrees with ours
    bp, bp_local = build('bp'), build('bp')
    bp.train_step(make_batch(0), OptimWrapper(sgd(bp)))
    bp_local.train_step(make_batch(0), LocalOptimWrapper(sgd(bp_local)))
    assert_same_state(bp, bp_local)


# ----------------------------------------------------------- graph freeing
class SavedTensorWatch:
    """Tags every tensor autograd saves with the local module that saved it
    and checks, when a module starts, which earlier ones are still held."""

    def __init__(self, model: LocalImageClassifier) -> None:
        self.current = -1
        self.saved: List[tuple] = []  # (module index, weakref to holder)
        self.held_at_start: Dict[int, set] = {}
        layers = [model.backbone.conv1] + [
            block for name in model.backbone.res_layers
            for block in getattr(model.backbone, name)
        ]
        self.handles = [
            layer.register_forward_pre_hook(self._enter(j))
            for j, layer in enumerate(layers)
        ]

    def _enter(self, index: int):

        def hook(module, args):
            self.current = index
            self.held_at_start[index] = {
                j for j, ref in self.saved if ref() is not None
            }

        return hook

    def pack(self, tensor):
        packed = _Packed(tensor)  # alive exactly as long as the graph
        self.saved.append((self.current, weakref.ref(packed)))
        return packed

    @staticmethod
    def unpack(packed):
        return packed.tensor

    def remove(self):
        for handle in self.handles:
            handle.remove()


class _Packed:
    __slots__ = ('tensor', '__weakref__')

    def __init__(self, tensor):
        self.tensor = tensor


@pytest.mark.parametrize('rule', ['auglocal_d2', 'infopro'])
def test_graph_freed_before_next_module(rule):
    model = build(rule)
    data = make_batch(5)
    watch = SavedTensorWatch(model)
    try:
        with torch.autograd.graph.saved_tensors_hooks(watch.pack,
                                                      watch.unpack):
            model.train_step(data, LocalOptimWrapper(sgd(model)))
        # when module j starts, nothing saved by modules < j is held
        for j, held in watch.held_at_start.items():
            assert not {i for i in held if i < j}, (j, held)
        assert len(watch.held_at_start) == model.num_modules

        # positive control: the one-graph reference holds everything
        watch.saved.clear()
        watch.held_at_start.clear()
        with torch.autograd.graph.saved_tensors_hooks(watch.pack,
                                                      watch.unpack):
            losses = model(**model.data_preprocessor(data, True),
                           mode='loss')
        assert watch.held_at_start[9] >= set(range(9))
        del losses
    finally:
        watch.remove()


@pytest.mark.parametrize('rule', ['auglocal_d2', 'infopro'])
def test_network_input_freed_after_first_module(rule):
    """train_step lets go of the preprocessed batch once module 0 has
    consumed it (InfoPro's head has made its [0, 1] copy by then); the
    summed-loss path, whose caller holds the batch, is the control."""
    model = build(rule)
    module_1 = model.backbone.local_layers()[model.module_ranges[1][0]]
    refs, alive = [], []
    hooks = [
        model.data_preprocessor.register_forward_hook(
            lambda module, args, out: refs.append(weakref.ref(
                out['inputs']))),
        module_1.register_forward_pre_hook(
            lambda module, args: alive.append(refs[-1]() is not None)),
    ]
    try:
        model.train_step(make_batch(4), LocalOptimWrapper(sgd(model)))
        assert alive == [False]
        data = model.data_preprocessor(make_batch(4), True)
        model(**data, mode='loss')
        assert alive == [False, True]
    finally:
        for hook in hooks:
            hook.remove()


# --------------------------------------------------------------------- AMP
def test_amp_train_step_counts():
    model = build('auglocal_d2')
    target = 'mmengine.optim.optimizer.amp_optimizer_wrapper.' \
        'is_cuda_available'
    with mock.patch(target, return_value=True), warnings.catch_warnings():
        warnings.simplefilter('ignore')  # the CUDA scaler warns on CPU
        wrapper = AmpLocalOptimWrapper(
            optimizer=sgd(model), dtype='bfloat16')
    wrapper.loss_scaler = scaler = torch.amp.GradScaler(
        'cpu', init_scale=64.)
    with mock.patch.object(scaler, 'scale', wraps=scaler.scale) as scale, \
            mock.patch.object(scaler, 'update',
                              wraps=scaler.update) as update, \
            mock.patch.object(wrapper.optimizer, 'step',
                              wraps=wrapper.optimizer.step) as step, \
            mock.patch.object(wrapper.optimizer, 'zero_grad',
                              wraps=wrapper.optimizer.zero_grad) as zero:
        for it in range(2):
            log_vars = model.train_step(make_batch(it), wrapper)
            assert wrapper.inner_count == it + 1
            assert scale.call_count == model.num_modules * (it + 1)
            assert step.call_count == update.call_count == it + 1
            assert zero.call_count == it + 1
    assert torch.isfinite(log_vars['loss'])
    assert all(torch.isfinite(p).all() for p in model.parameters())


# -------------------------------------------------------------- structures
def test_cls_data_sample():
    sample = ClsDataSample().set_gt_label(3)
    assert sample.gt_label.tolist() == [3]
    assert sample.gt_label.dtype == torch.long
    sample.set_pred_score(torch.tensor([0.1, 0.7, 0.2]))
    assert sample.pred_label.tolist() == [1]
    sample.aux_pred_labels = [2, -1]
    assert sample.aux_pred_labels.tolist() == [2, -1]
    assert set(sample.keys()) == {
        'gt_label', 'pred_score', 'pred_label', 'aux_pred_labels'
    }
    assert ClsDataSample(gt_label=torch.tensor(4)).gt_label.tolist() == [4]
    with pytest.raises(TypeError):
        sample.set_gt_label(1.5)
    with pytest.raises(TypeError):
        sample.pred_score = torch.zeros(2, 3)
