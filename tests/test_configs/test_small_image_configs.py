"""The small-image configs: one per paper row, the paper's recipe, the
auxiliary networks of appendix A.3, and tools/train.py end to end on tiny
CIFAR-10 / SVHN / STL-10 files in their on-disk formats."""
import os.path as osp

import pytest
import torch
from common_utils import loader_options, one_error_line, run_train_tool
from mmengine.config import Config

from auglocal_det.models.aux_heads import auglocal_depth_list
from auglocal_det.registry import MODELS
from auglocal_det.testing import write_small_image_set

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
DATASETS = ('cifar10', 'svhn', 'stl10')
ARCHS = {'r32': 16, 'r110': 55}
#: The standard head of each rule on the CIFAR ResNets; InfoPro's weights
#: are the published ones (ResNet-32 K=16; ResNet-110 K=55, the head's
#: defaults).
STANDARD_HEADS = {
    'predsim': dict(type='PredSimAuxHead'),
    'dgl': dict(type='DGLAuxHead'),
    'infopro': {
        'r32': dict(type='InfoProAuxHead', lambda_x=(5.0, 0.2),
                    lambda_y=(0.05, 0.5)),
        'r110': dict(type='InfoProAuxHead'),
    },
}


def _cfg(name):
    return Config.fromfile(osp.join(ROOT, 'configs', name))


def _build(cfg, device='meta'):
    model = dict(cfg.model)
    # the Runner merges the data set's normalisation into the model
    model.setdefault('data_preprocessor', cfg.get('data_preprocessor'))
    with torch.device(device):
        return MODELS.build(model)


def _table1(rule, arch, data, depth=None):
    if rule == 'auglocal':
        return f'auglocal/auglocal-d{depth}_{arch}_400e_{data}.py'
    return f'{rule}/{rule}_{arch}_400e_{data}.py'


def _schedule_name(data):
    return ('stl10_bs128_sgd_cos_400e'
            if data == 'stl10' else 'cifar_bs1024_sgd_cos_400e')


def _num_params(module):
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize('data', DATASETS)
def test_recipe(data):
    cfg = _cfg(_table1('auglocal', 'r32', data, 2))
    batch, lr = (128, 0.1) if data == 'stl10' else (1024, 0.8)
    assert cfg.train_dataloader.batch_size == batch
    assert cfg.optim_wrapper.optimizer == dict(
        type='SGD', lr=lr, momentum=0.9, nesterov=True, weight_decay=1e-4)
    assert cfg.train_cfg.max_epochs == 400
    # the official schedule: set once per epoch, 10 warm-up epochs blended
    # from 0.01, cosine over all 400 epochs numbered from 1
    schedule, = cfg.param_scheduler
    assert schedule.type == 'EpochCosineLR' and schedule.by_epoch
    assert (schedule.T_max, schedule.end, schedule.first_epoch,
            schedule.warmup_epochs) == (400, 400, 1, 10)
    assert schedule.start_factor * lr == 0.01
    assert not schedule.get('convert_to_iter_based', False)
    smooth = _cfg(f'_base_/schedules/{_schedule_name(data)}_smooth.py')
    assert [s.type for s in smooth.param_scheduler] == [
        'LinearLR', 'CosineAnnealingLR'
    ]
    assert smooth.optim_wrapper == cfg.optim_wrapper
    assert cfg.auto_scale_lr.base_batch_size == batch
    pipeline = [
        (t.type, t.get('padding'), t.get('padding_mode', 'constant'))
        for t in cfg.train_dataloader.dataset.pipeline
    ]
    expected = {
        'cifar10': [('RandomCropTensor', 4, 'reflect'),
                    ('RandomFlipTensor', None, 'constant')],
        'svhn': [('RandomCropTensor', 2, 'constant')],  # digits: no flip
        'stl10': [('RandomCropTensor', 4, 'constant'),
                  ('RandomFlipTensor', None, 'constant')],
    }[data] + [('PackClsInputs', None, 'constant')]
    assert pipeline == expected
    assert [t.type for t in cfg.val_dataloader.dataset.pipeline] == [
        'PackClsInputs'
    ]
    mean = [125.3, 123.0, 113.9] if data == 'cifar10' else [127.5] * 3
    assert cfg.data_preprocessor.mean == mean
    assert cfg.model.get('image_size', 32) == (96 if data == 'stl10' else 32)


@pytest.mark.parametrize('arch', sorted(ARCHS))
@pytest.mark.parametrize('data', DATASETS)
def test_table1_rows(arch, data):
    num_layers = ARCHS[arch]
    for rule in ('bp', 'predsim', 'infopro', 'dgl'):
        model = _build(_cfg(_table1(rule, arch, data)))
        if rule == 'bp':
            assert (model.rule, model.num_modules) == ('bp', 1)
        else:
            assert model.num_modules == num_layers
            # the standard setting of the rule: head type, size, weights
            standard = STANDARD_HEADS[rule]
            standard = standard.get(arch, standard)
            for index in (0, model.num_aux - 1):
                head = model.aux_heads[index]
                with torch.device('meta'):
                    ref = MODELS.build(
                        dict(standard, **_head_args(model, index)))
                assert type(head) is type(ref)
                assert _num_params(head) == _num_params(ref)
                assert (head.lambda_x, head.lambda_y) == (ref.lambda_x,
                                                          ref.lambda_y)
    for depth in (2, 3, 4, 6):
        cfg = _cfg(_table1('auglocal', arch, data, depth))
        model = _build(cfg)
        # the official CIFAR script: heads on the first K - d - 1 layers,
        # the last d + 1 layers trained end to end with the output layer
        assert list(cfg.model.split_points) == list(
            range(num_layers - depth - 1)) + [num_layers - 1]
        assert model.num_aux == num_layers - depth - 1
        assert [h.depth for h in model.aux_heads] == auglocal_depth_list(
            depth, model.num_aux, pyramid=True, tau=0.5)
        assert all((h.norm is not None) == (h.depth <= 1)
                   for h in model.aux_heads)


def _head_args(model, index):
    first, last = model.module_ranges[index]
    return dict(
        layer_index=last,
        layer_specs=model.layer_specs,
        module_index=index,
        num_aux=model.num_aux,
        num_classes=model.num_classes,
        image_size=model.image_size)


#: Appendix A.3 auxiliary networks on CIFAR ResNets, parameters per input
#: width 16 / 32 / 64, counted on the official AugLocal code's modules
#: (docs/algorithms.md, section 6).
A3_PARAMS = {
    'dgl': {16: 9962, 32: 37834, 64: 147338},
    'infopro': {16: 10186 + 2091, 32: 28170 + 3819, 64: 46602 + 7275},
    'predsim': {16: 5130 + 2304, 32: 5130 + 9216, 64: 5130 + 36864},
}


@pytest.mark.parametrize('rule', sorted(A3_PARAMS))
@pytest.mark.parametrize('arch', sorted(ARCHS))
def test_appendix_a3_heads_one_by_one(rule, arch):
    """Every auxiliary network of the Table 1 configs, head by head."""
    model = _build(_cfg(_table1(rule, arch, 'cifar10')))
    assert len(model.aux_heads) == ARCHS[arch] - 1
    for index, head in enumerate(model.aux_heads):
        width = model.layer_specs[model.module_ranges[index][1]].out_channels
        assert _num_params(head) == A3_PARAMS[rule][width], (index, width)


def test_stl10_heads_follow_the_feature_size():
    model = _build(_cfg(_table1('dgl', 'r32', 'stl10')), device='cpu')
    # 96 x 96 input: features 96 / 48 / 24 pixels, pooled to a quarter
    sizes = {h.in_channels: h.pre_pool.output_size for h in model.aux_heads}
    assert sizes == {16: (24, 24), 32: (12, 12), 64: (6, 6)}
    assert {_num_params(h) for h in model.aux_heads} == {9962, 37834, 147338}
    logits = model(torch.zeros(2, 3, 96, 96))
    assert logits.shape == (2, 10)


def test_pyramid_and_uniform_variants():
    for depth in (2, 3, 4, 5, 6):
        for suffix, pyramid, tau in (('', True, 0.5), ('-uniform', False, 0.5),
                                     ('-tau1.0', True, 1.0)):
            cfg = _cfg(f'auglocal/auglocal-d{depth}{suffix}_r110_400e_'
                       'cifar10.py')
            head = cfg.model.aux_head
            assert (head.depth, head.pyramid, head.tau) == (depth, pyramid,
                                                            tau)
            assert cfg.model.split_points[-1] == 54
    for arch in ARCHS:
        plain = _cfg(f'bp/bp_{arch}_400e_cifar10.py')
        checkpointed = _cfg(f'bp/bp-cp_{arch}_400e_cifar10.py')
        assert checkpointed.model.backbone.with_cp
        assert not plain.model.backbone.get('with_cp', False)
        model = _build(checkpointed)
        assert all(b.with_cp for b in model.backbone.layer1)


def test_table8_composed_head():
    cfg = _cfg('auglocal/auglocal-d2-infopro-rec_r32_400e_cifar10.py')
    torch.manual_seed(0)
    model = _build(cfg, device='cpu')
    plain = _build(_cfg(_table1('auglocal', 'r32', 'cifar10', 2)))
    assert model.num_aux == plain.num_aux == 13
    for head, ref in zip(model.aux_heads, plain.aux_heads):
        auglocal, infopro = head.heads
        # the AugLocal head unchanged, plus InfoPro's decoder (no classifier)
        assert _num_params(auglocal) == _num_params(ref)
        assert infopro.head is None
        assert _num_params(head) == _num_params(ref) + _num_params(
            infopro.decoder)
    from auglocal_det.structures import ClsDataSample
    images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    data = model.data_preprocessor(
        dict(inputs=list(images),
             data_samples=[ClsDataSample().set_gt_label(i) for i in range(4)]),
        True)
    losses = model(**data, mode='loss')
    first = model.aux_heads[0]
    assert first.heads[1].lambda_x == pytest.approx(5.0)
    assert model.aux_heads[-1].heads[1].lambda_x == pytest.approx(0.2)
    # each local loss is AugLocal's CE plus the weighted reconstruction
    assert torch.allclose(losses['loss_l00'],
                          losses['l00_ce'] + losses['l00_rec'])
    feat = model.extract_feat(data['inputs'], all_modules=True)[0]
    batch = model.aux_batch(data['inputs'], data['data_samples'])
    ce = first.heads[0].loss(feat, batch)[0]['loss_ce']
    rec = first.heads[1].loss(feat, batch)[0]['loss_rec']
    assert torch.allclose(losses['l00_ce'], ce)
    assert torch.allclose(losses['l00_rec'], rec)


def test_mlaan_cifar_resnet32():
    model = _build(_cfg('mlaan/mlaan_r32_400e_cifar10.py'))
    assert type(model).__name__ == 'MLAANImageClassifier'
    assert model.num_modules == 15 and model.span == 2
    cfg = _cfg('mlaan/mlaan_r32_400e_cifar10.py')
    assert cfg.model.loss_weights == (0.001, 0.999)
    for name, head in (('mlaan-dgl', 'DGLAuxHead'),
                       ('mlaan-infopro', 'InfoProAuxHead')):
        cfg = _cfg(f'mlaan/{name}_r32_400e_cifar10.py')
        assert cfg.model.aux_head.independent_head.type == head
        assert _build(cfg).num_modules == 15


#: (config, dataset type) trained by tools/train.py on generated files.
E2E = [
    ('auglocal/auglocal-d2_r32_400e_cifar10.py', 'CIFAR10'),
    ('infopro/infopro_r32_400e_svhn.py', 'SVHN'),
    ('dgl/dgl_r32_400e_stl10.py', 'STL10'),
]


@pytest.mark.parametrize('config,dataset_type', E2E)
def test_train_tool_on_generated_files(tmp_path, config, dataset_type):
    """A few iterations and one validation of a paper config."""
    data = str(tmp_path / 'data')
    write_small_image_set(dataset_type, data, num_train=16, num_test=8)
    work_dir = tmp_path / 'work'
    options = [
        'train_cfg.max_epochs=1', 'default_hooks.logger.interval=1',
        'default_hooks.checkpoint.save_optimizer=False',
        'param_scheduler.0.T_max=1', 'param_scheduler.0.end=1'
    ] + loader_options(data)
    done = run_train_tool(f'configs/{config}', work_dir, *options)
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-4000:]
    assert 'Epoch(train) [1][2/2]' in log
    assert 'Epoch(val) [1][1/1]' in log and 'accuracy/top1' in log
    assert 'aux_top1/l00' in log
    assert (work_dir / 'epoch_1.pth').is_file()
    assert (work_dir / 'layerwise_accuracy.png').is_file()


def test_train_tool_missing_data_is_one_line(tmp_path):
    missing = tmp_path / 'no_cifar'
    done = run_train_tool(
        'configs/bp/bp_r32_400e_cifar10.py', tmp_path / 'work',
        f'train_dataloader.dataset.data_root={missing}',
        'train_dataloader.num_workers=0',
        'train_dataloader.persistent_workers=False')
    error = one_error_line(done)
    assert error.startswith('error: CIFAR10: data root')
    assert str(missing / 'cifar-10-batches-py' / 'data_batch_1') in error
