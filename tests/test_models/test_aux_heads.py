import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from auglocal_det.models.aux_heads import (
    AugLocalAuxHead,
    AuxBatch,
    BaseAuxHead,
    DGLAuxHead,
    InfoProAuxHead,
    PredSimAuxHead,
    auglocal_depth_list,
    auglocal_sample_layers,
    auglocal_strides,
    build_aux_heads,
    interpolate_loss_weight,
    predsim_pool_size,
    similarity_matrix,
    supervised_contrastive_loss,
)
from auglocal_det.models.backbones import (
    LocalCifarResNet,
    LocalResNet,
    num_local_layers,
    resnet_archs,
)
from auglocal_det.registry import MODELS

# Official AugLocal ImageNet ResNet-34 (K=17) per-head parameter counts.
R34_AUGLOCAL_COUNTS = {
    1: [3203048] * 4 + [3530728] * 4 + [4186088] * 6 + [5233640] * 2,
    2: [4941288] * 4 + [5105128] * 4 + [5366760] * 3 + [8906728] * 3 +
    [9954280, 5233640],
    3: [5335272] * 4 + [6285800] * 4 + [6547432] + [10087400] * 4 +
    [13627368, 9954280, 5233640],
    4: [6515944] * 4 + [6581224, 7466472, 11006440, 11006440] +
    [11268072] * 3 + [14808040] * 2 + [13627368, 9954280, 5233640],
    5: [6589928, 6811368, 7696616, 7696616, 11301864, 11301864, 12187112,
        12187112, 12448744, 12448744, 15988712, 15988712, 14808040,
        13627368, 9954280, 5233640],
    6: [7770600, 11532008, 11532008, 11532008, 12482536, 12482536,
        13367784, 13367784, 13629416, 17169384, 17169384, 15988712,
        14808040, 13627368, 9954280, 5233640],
    7: [11605992, 11605992, 12712680, 12712680, 12777960, 13663208,
        13663208, 14548456, 18350056, 18350056, 17169384, 15988712,
        14808040, 13627368, 9954280, 5233640],
    8: [12786664, 12786664, 13008104, 13893352, 13958632, 14843880,
        18383848, 19269096, 19530728, 18350056, 17169384, 15988712,
        14808040, 13627368, 9954280, 5233640],
    9: [13082088, 13967336, 14188776, 14188776, 15139304, 18679272,
        19564520, 20449768, 19530728, 18350056, 17169384, 15988712,
        14808040, 13627368, 9954280, 5233640],
}
R34_AUGLOCAL_TOTALS = {
    1: 62518912, 2: 98194048, 3: 122196608, 4: 154359936, 5: 176270720,
    6: 201647488, 7: 216771712, 8: 233592448, 9: 243922048
}
R34_PYRAMID = {
    (4, 0.5): ([4] * 6 + [3] * 9 + [2], 128395392),
    (4, 1.0): ([4] * 3 + [3] * 5 + [2] * 5 + [1] * 3, 98593408),
    (6, 0.5): ([6] * 4 + [5] * 5 + [4] * 7, 182760832),
    (6, 1.0): ([6, 6, 5, 5, 5, 4, 4, 4, 3, 3, 3, 2, 2, 2, 1, 1], 139386752),
}
R34_D4_SAMPLES = [
    [4, 8, 12, 16], [5, 8, 12, 16], [6, 9, 12, 16], [6, 10, 13, 16],
    [7, 10, 13, 16], [8, 10, 13, 16], [8, 11, 14, 16], [9, 12, 14, 16],
    [10, 12, 14, 16], [11, 12, 14, 16], [12, 13, 14, 16], [12, 14, 15, 16],
    [13, 14, 15, 16], [14, 15, 16], [15, 16], [16]
]
R34_D4_INPUTS = [(64, 56)] * 4 + [(128, 28)] * 4 + [(256, 14)] * 6 + [
    (512, 7)
] * 2


def _num_params(module):
    return sum(p.numel() for p in module.parameters())


@pytest.fixture(scope='module')
def r34_specs():
    with torch.device('meta'):
        return LocalResNet(34).local_layer_specs()


@pytest.fixture(scope='module')
def r32_specs():
    with torch.device('meta'):
        return LocalCifarResNet(32).local_layer_specs()


def _r34_heads(specs, **kwargs):
    """All 16 heads of ResNet-34, on the meta device (no memory)."""
    with torch.device('meta'):
        return [
            AugLocalAuxHead(
                layer_index=i, layer_specs=specs, module_index=i,
                num_aux=16, num_classes=1000, image_size=224, **kwargs)
            for i in range(16)
        ]


def _cifar_kwargs(specs, layer_index, num_aux=15, **kwargs):
    return dict(
        layer_index=layer_index, layer_specs=specs,
        module_index=layer_index, num_aux=num_aux, num_classes=10,
        image_size=32, **kwargs)


# ---------------------------------------------------------------- AugLocal
@pytest.mark.parametrize('depth', range(1, 10))
def test_auglocal_r34_counts_and_shapes(r34_specs, depth):
    heads = _r34_heads(r34_specs, depth=depth)
    counts = [_num_params(h) for h in heads]
    assert counts == R34_AUGLOCAL_COUNTS[depth]
    assert sum(counts) == R34_AUGLOCAL_TOTALS[depth]
    # A block halves the resolution at most once, and halvings left over
    # after the last block are never spent: shallow heads on early layers
    # end above 7x7 (as in the official code); from d = 3 on, every head
    # ends at 512x7x7 like the backbone.
    sizes = [7] * 16
    if depth == 1:
        sizes = [28] * 4 + [14] * 4 + [7] * 8
    elif depth == 2:
        sizes = [14] * 4 + [7] * 12
    for head, size in zip(heads, sizes):
        assert head.norm is None  # no BN1d on ImageNet
        assert head.fc.in_features == 512
        assert head.in_size[0] == size * math.prod(head.block_strides)
        if depth in (1, 2, 4):  # a shape-only forward on the meta device
            x = torch.empty(2, head.in_channels, *head.in_size,
                            device='meta')
            assert tuple(head.forward_features(x).shape) == (2, 512, size,
                                                             size)
            assert tuple(head(x).shape) == (2, 1000)


@pytest.mark.parametrize('key', list(R34_PYRAMID))
def test_auglocal_r34_pyramid(r34_specs, key):
    depth, tau = key
    depths, total = R34_PYRAMID[key]
    assert auglocal_depth_list(depth, 16, pyramid=True, tau=tau) == depths
    heads = _r34_heads(r34_specs, depth=depth, pyramid=True, tau=tau)
    assert [h.depth for h in heads] == depths
    assert sum(_num_params(h) for h in heads) == total


def test_auglocal_r34_d4_table(r34_specs):
    heads = _r34_heads(r34_specs, depth=4)
    assert [h.sampled_layers for h in heads] == R34_D4_SAMPLES
    assert [(h.in_channels, h.in_size[0]) for h in heads] == R34_D4_INPUTS
    # Module after layer1.0: 64->128 s2, 128->256 s2, 256->256, 256->512 s2.
    head = heads[1]
    assert head.block_strides == [2, 2, 1, 2]
    assert [(b.inplanes, b.planes) for b in head.blocks] == [(64, 128),
                                                             (128, 256),
                                                             (256, 256),
                                                             (256, 512)]
    assert head.blocks[2].downsample is None


def test_auglocal_helpers():
    assert auglocal_sample_layers(0, 4, 17) == [4, 8, 12, 16]
    assert auglocal_sample_layers(1, 4, 17) == [5, 8, 12, 16]  # 8.5 -> 8
    assert auglocal_sample_layers(14, 4, 17) == [15, 16]
    assert auglocal_sample_layers(0, 3, 16) == [5, 10, 15]
    assert auglocal_sample_layers(1, 3, 16) == [6, 10, 15]
    assert auglocal_sample_layers(11, 2, 16) == [13, 15]
    widths = [16] * 6 + [32] * 5 + [64] * 5
    # A 4x width jump halves once and carries the second halving.
    assert auglocal_strides(widths, 1, [15]) == [2]
    assert auglocal_strides(widths, 1, [15, 15]) == [2, 2]
    assert auglocal_strides(widths, 1, [6, 10, 15]) == [2, 1, 2]


def _runs(values):
    return [(len(list(g)), k) for k, g in itertools.groupby(values)]


def test_auglocal_cifar_pyramid_lists():
    # CIFAR reproduction: K' = K - d modules, so K' - 1 auxiliary heads.
    r32 = {1: [(14, 1)], 2: [(13, 2)], 3: [(6, 3), (6, 2)],
           4: [(4, 4), (6, 3), (1, 2)], 5: [(3, 5), (4, 4), (3, 3)]}
    for d, runs in r32.items():
        assert _runs(auglocal_depth_list(d, 16 - d - 1, True, 0.5)) == runs
    r110 = {3: [(25, 3), (26, 2)], 4: [(17, 4), (32, 3), (1, 2)],
            5: [(12, 5), (25, 4), (12, 3)]}
    for d, runs in r110.items():
        assert _runs(auglocal_depth_list(d, 55 - d - 1, True, 0.5)) == runs


def test_auglocal_cifar_examples(r32_specs):
    # Module after layer1.0 (16x32x32), 10 classes.
    counts = {}
    for d in (1, 2, 3, 5):
        head = AugLocalAuxHead(
            depth=d, bn1d_if_shallow=True, **_cifar_kwargs(r32_specs, 1))
        counts[d] = _num_params(head)
        assert (head.norm is not None) == (d == 1)
    assert counts == {1: 48266, 2: 72906, 3: 91466, 5: 170122}
    head = AugLocalAuxHead(depth=3, **_cifar_kwargs(r32_specs, 1))
    assert head.sampled_layers == [6, 10, 15]
    assert [(b.inplanes, b.planes, b.stride) for b in head.blocks] == [
        (16, 32, 2), (32, 32, 1), (32, 64, 2)
    ]
    # d=1 ends at 16x16: the second halving is never spent.
    head = AugLocalAuxHead(depth=1, **_cifar_kwargs(r32_specs, 1))
    assert head.forward_features(torch.randn(2, 16, 32, 32)).shape == (2, 64,
                                                                       16, 16)
    head = AugLocalAuxHead(depth=2, **_cifar_kwargs(r32_specs, 1))
    assert head.sampled_layers == [8, 15]
    head = AugLocalAuxHead(depth=5, **_cifar_kwargs(r32_specs, 1))
    assert head.sampled_layers == [4, 7, 9, 12, 15]
    # Stem module (j=0), d=3, with tau=0.5 pyramid over 12 heads.
    head = AugLocalAuxHead(
        depth=3, pyramid=True, **_cifar_kwargs(r32_specs, 0, num_aux=12))
    assert head.sampled_layers == [5, 10, 15]
    assert _num_params(head) == 77578
    head = AugLocalAuxHead(
        depth=3, pyramid=True, **_cifar_kwargs(r32_specs, 11, num_aux=12))
    assert head.depth == 2 and head.sampled_layers == [13, 15]


def test_auglocal_bottleneck_and_widen(r34_specs):
    with torch.device('meta'):
        for depth, expected in ((50, 11097576), (101, 12558312)):
            specs = LocalResNet(depth).local_layer_specs()
            head = AugLocalAuxHead(
                depth=4, layer_index=1, layer_specs=specs, module_index=1,
                num_aux=len(specs) - 1)
            assert _num_params(head) == expected
            assert head.blocks[0].inplanes == 256
            assert head.fc.in_features == 2048
        specs = LocalResNet(50).local_layer_specs()
        head = AugLocalAuxHead(depth=2, layer_index=0, layer_specs=specs,
                               num_aux=16)
        assert head.blocks[0].inplanes == 64  # after the stem
        head = AugLocalAuxHead(depth=4, widen_factor=2, layer_index=1,
                               layer_specs=r34_specs, num_aux=16,
                               module_index=1)
        assert [b.planes for b in head.blocks] == [256, 512, 512, 1024]
        assert head.fc.in_features == 1024
        assert head.block_strides == [2, 2, 1, 2]
        x = torch.empty(2, 64, 56, 56)
        assert head(x).shape == (2, 1000)


# ---------------------------------------------------------------- weights
def test_interpolate_loss_weight():
    assert interpolate_loss_weight((5, 0.2), 1, 15) == pytest.approx(
        4.657, abs=5e-4)
    assert interpolate_loss_weight((0.05, 0.5), 1, 15) == pytest.approx(
        0.0821, abs=5e-5)
    assert interpolate_loss_weight((5, 0.5), 1, 54) == pytest.approx(
        4.915, abs=5e-4)
    assert interpolate_loss_weight((0, 1), 1, 54) == pytest.approx(
        0.0189, abs=5e-5)
    assert interpolate_loss_weight((5, 0.5), 53, 54) == pytest.approx(0.5)
    assert interpolate_loss_weight((3, 1), 0, 1) == 3
    assert interpolate_loss_weight(0.99, 7, 16) == 0.99
    with pytest.raises(ValueError):
        interpolate_loss_weight((1, 2), 5, 5)


# ---------------------------------------------------------------- DGL
def test_dgl_counts(r32_specs, r34_specs):
    counts = [
        _num_params(DGLAuxHead(**_cifar_kwargs(r32_specs, i)))
        for i in (1, 6, 11)
    ]
    assert counts == [9962, 37834, 147338]
    head = DGLAuxHead(**_cifar_kwargs(r32_specs, 6))
    assert head.pre_pool.output_size == (4, 4)
    kwargs = dict(layer_index=1, layer_specs=r34_specs, module_index=1,
                  num_aux=16)
    head = DGLAuxHead(**kwargs)
    assert _num_params(head) == 401768
    assert head.pre_pool.output_size == (14, 14)
    # Original DGL: 3 hidden FC with bias (the official code also builds an
    # unused BN2d(64), 128 more parameters, which we leave out).
    original = DGLAuxHead(num_hidden_fc=3, hidden_fc_bias=True, **kwargs)
    assert _num_params(original) == 468712 - 128
    # Pool size follows the real input size, not the width.
    head = DGLAuxHead(layer_index=1, layer_specs=r34_specs, image_size=64)
    assert head.pre_pool.output_size == (4, 4)


# ---------------------------------------------------------------- InfoPro
def test_infopro_counts(r32_specs, r34_specs):
    ce = [InfoProAuxHead(**_cifar_kwargs(r32_specs, i)) for i in (1, 6, 11)]
    assert [h.arch for h in ce] == ['cifar'] * 3
    assert [_num_params(h.head) for h in ce] == [10186, 28170, 46602]
    assert [_num_params(h.decoder) for h in ce] == [2091, 3819, 7275]
    con = [
        InfoProAuxHead(loss_mode='contrast', **_cifar_kwargs(r32_specs, i))
        for i in (1, 6, 11)
    ]
    assert [_num_params(h.head) for h in con] == [25408, 43392, 61824]
    head = InfoProAuxHead(
        lambda_x=(5, 0.2), lambda_y=(0.05, 0.5),
        **_cifar_kwargs(r32_specs, 1))
    assert head.lambda_x == pytest.approx(4.657, abs=5e-4)
    assert head.lambda_y == pytest.approx(0.0821, abs=5e-5)
    with torch.device('meta'):
        head = InfoProAuxHead(layer_index=1, layer_specs=r34_specs,
                              module_index=1, num_aux=16)
        assert head.arch == 'imagenet'
        assert _num_params(head.head) == 4586216
        assert _num_params(head.decoder) == 49355


def test_infopro_forward_shapes():
    with torch.device('meta'):
        specs = LocalResNet(18).local_layer_specs()
    head = InfoProAuxHead(layer_index=3, layer_specs=specs, num_aux=8,
                          num_classes=5, image_size=64)
    feat = torch.randn(2, 128, 8, 8)
    assert head.reconstruct(feat, (64, 64)).shape == (2, 3, 64, 64)
    images = torch.rand(2, 3, 64, 64)
    losses, logits = head.loss(
        feat, AuxBatch(labels=torch.tensor([0, 4]), images=images))
    assert set(losses) == {'loss_rec', 'loss_ce'}
    assert logits.shape == (2, 5)


def test_supervised_contrastive_loss():
    torch.manual_seed(0)
    feats = torch.randn(6, 4)
    labels = torch.tensor([0, 1, 0, 2, 1, 0])
    z = F.normalize(feats, dim=1)
    sim = z @ z.t() / 0.07
    per_anchor = []
    for a in range(6):
        others = [k for k in range(6) if k != a]
        log_den = torch.logsumexp(sim[a, others], dim=0)
        pos = [p for p in others if labels[p] == labels[a]]
        if pos:
            per_anchor.append(-torch.stack(
                [sim[a, p] - log_den for p in pos]).mean())
    expected = torch.stack(per_anchor).mean()
    torch.testing.assert_close(
        supervised_contrastive_loss(feats, labels), expected)
    no_pos = supervised_contrastive_loss(feats[:2], labels[:2])
    assert no_pos.item() == 0


# ---------------------------------------------------------------- PredSim
def test_predsim_pooling_and_counts(r32_specs, r34_specs):
    assert predsim_pool_size(16, 32, 32) == ((8, 4), (0, 0))
    assert predsim_pool_size(32, 16, 16) == ((4, 4), (0, 0))
    assert predsim_pool_size(64, 8, 8) == ((4, 2), (0, 0))
    assert predsim_pool_size(64, 56, 56) == ((32, 16), (16, 8))
    sims = []
    for i, shape in zip((1, 6, 11), ((16, 4, 8), (32, 4, 4), (64, 2, 4))):
        head = PredSimAuxHead(**_cifar_kwargs(r32_specs, i))
        x = torch.randn(2, head.in_channels, *head.in_size)
        assert tuple(head.pool(x).shape[1:]) == shape
        assert _num_params(head.fc) == 5130
        sims.append(_num_params(head.sim_conv))
        assert (head.lambda_x, head.lambda_y) == (0.99, 0.01)
    assert sims == [2304, 9216, 36864]
    head = PredSimAuxHead(layer_index=1, layer_specs=r34_specs)
    assert _num_params(head.fc) == 513000
    assert _num_params(head.sim_conv) == 36864
    x = torch.randn(2, 64, 56, 56)
    assert tuple(head.pool(x).shape) == (2, 64, 2, 4)


def test_similarity_matrix():
    labels = torch.tensor([0, 1, 0, 3])
    sim = similarity_matrix(F.one_hot(labels, 4).float())
    same = labels[:, None] == labels[None, :]
    expected = torch.where(same, torch.tensor(1.), torch.tensor(-1 / 3))
    torch.testing.assert_close(sim, expected)
    # Feature maps are reduced to per-channel spatial std first.
    x = torch.randn(3, 8, 4, 4)
    v = x.flatten(2).std(dim=2)
    v = v - v.mean(dim=1, keepdim=True)
    v = v / v.norm(dim=1, keepdim=True)
    torch.testing.assert_close(similarity_matrix(x), v @ v.t())


# ---------------------------------------------------------------- losses
@pytest.mark.parametrize('cfg', [
    dict(type='AugLocalAuxHead', depth=2, bn1d_if_shallow=True),
    dict(type='AugLocalAuxHead', depth=1, bn1d_if_shallow=True),
    dict(type='DGLAuxHead'),
    dict(type='DGLAuxHead', num_hidden_fc=3, hidden_fc_bias=True),
    dict(type='InfoProAuxHead', lambda_x=(5, 0.2), lambda_y=(0.05, 0.5)),
    dict(type='InfoProAuxHead', loss_mode='contrast'),
    dict(type='PredSimAuxHead'),
])
def test_loss_from_config(r32_specs, cfg):
    torch.manual_seed(0)
    head = MODELS.build(dict(cfg, **_cifar_kwargs(r32_specs, 6)))
    assert isinstance(head, BaseAuxHead)
    head.init_weights()
    feat = torch.randn(4, 32, 16, 16, requires_grad=True)
    batch = AuxBatch(
        labels=torch.tensor([0, 3, 3, 9]),
        images=torch.rand(4, 3, 32, 32))
    losses, logits = head.loss(feat, batch)
    assert losses and all(k.startswith('loss') for k in losses)
    total = sum(losses.values())
    assert total.dim() == 0 and torch.isfinite(total)
    total.backward()
    assert feat.grad is not None
    assert all(p.grad is not None for p in head.parameters())
    if cfg.get('loss_mode') == 'contrast':
        assert logits is None and head.predict(feat) is None
    else:
        assert logits.shape == (4, 10)
        assert head.predict(feat).shape == (4, 10)
        assert 'loss_ce' in losses
        expected = head.lambda_y * F.cross_entropy(logits, batch.labels)
        torch.testing.assert_close(losses['loss_ce'], expected)


def test_infopro_loss_weights(r32_specs):
    torch.manual_seed(0)
    head = InfoProAuxHead(
        lambda_x=(5, 0.2), lambda_y=(0.05, 0.5),
        **_cifar_kwargs(r32_specs, 1))
    feat = torch.randn(2, 16, 32, 32)
    images = torch.rand(2, 3, 32, 32)
    losses, _ = head.loss(
        feat, AuxBatch(labels=torch.tensor([1, 2]), images=images))
    bce = F.binary_cross_entropy(head.reconstruct(feat, (32, 32)), images)
    torch.testing.assert_close(losses['loss_rec'], head.lambda_x * bce)
    with pytest.raises(ValueError):
        head.loss(feat, AuxBatch(labels=torch.tensor([1, 2])))


def test_predsim_loss_weights(r32_specs):
    torch.manual_seed(0)
    head = PredSimAuxHead(**_cifar_kwargs(r32_specs, 11))
    feat = torch.randn(4, 64, 8, 8)
    labels = torch.tensor([0, 1, 1, 5])
    losses, logits = head.loss(feat, AuxBatch(labels=labels))
    sim = F.mse_loss(
        similarity_matrix(head.sim_conv(feat)),
        similarity_matrix(F.one_hot(labels, 10).float()))
    torch.testing.assert_close(losses['loss_sim'], 0.99 * sim)
    torch.testing.assert_close(losses['loss_ce'],
                               0.01 * F.cross_entropy(logits, labels))


# ---------------------------------------------------------------- builder
@pytest.mark.parametrize('arch,num_layers', [('resnet34', 17),
                                             ('resnet101', 34),
                                             ('resnet32', 16),
                                             ('resnet110', 55)])
def test_standard_networks(arch, num_layers):
    assert num_local_layers(arch) == num_layers
    cls, depth = resnet_archs()[arch]
    with torch.device('meta'):
        backbone = MODELS.build(dict(type=cls.__name__, depth=depth))
        specs = backbone.local_layer_specs()
    assert len(specs) == num_layers
    if arch == 'resnet34':
        with torch.device('meta'):
            heads = build_aux_heads(
                dict(type='AugLocalAuxHead', depth=4, pyramid=True, tau=0.5),
                specs)
        assert len(heads) == 16
        assert [h.depth for h in heads] == R34_PYRAMID[(4, 0.5)][0]
    with pytest.raises(KeyError):
        num_local_layers('resnet33')


def test_cifar_reproduction_split(r32_specs):
    """The official CIFAR script's AugLocal: heads on the first K - d - 1
    layers only, BatchNorm1d before the classifier of shallow heads."""
    heads = build_aux_heads(
        dict(
            type='AugLocalAuxHead',
            depth=3,
            pyramid=True,
            bn1d_if_shallow=True),
        r32_specs,
        list(range(12)) + [15],
        num_classes=10,
        image_size=32)
    assert len(heads) == 12
    assert [h.depth for h in heads] == [3] * 6 + [2] * 6
    assert heads[1].sampled_layers == [6, 10, 15]
    assert _num_params(heads[1]) == 91466
    assert len(build_aux_heads(None, r32_specs)) == 0
    with pytest.raises(ValueError):
        build_aux_heads(dict(type='DGLAuxHead'), r32_specs, [3, 2, 15])
