"""What the user did not mean must not train: resumes that cannot continue
the run, checkpoints that do not fit the model, ``--cfg-options`` keys
that change nothing, schedules that train nothing, diverged detection
runs and COCO files that train the wrong thing."""
import json
import os.path as osp
import runpy

import pytest
import torch
import torch.nn as nn
from mmengine.config import Config
from reliability_utils import ROOT, ToyModel, run_train, toy_runner

from auglocal_det.engine.hooks import NonFiniteLossHook
from auglocal_det.engine.runner.checkpoint_checks import (
    check_model_fit,
    check_resume_state,
    schedule_end_message,
)
from auglocal_det.errors import InputError, TrainingDivergedError
from auglocal_det.registry import MODELS
from auglocal_det.utils.config_errors import (
    check_cfg_options,
    check_config_values,
    variable_uses,
)


def _first_line(result) -> str:
    assert result.returncode == 1, result.stderr[-3000:]
    line = result.stderr.strip().splitlines()[0]
    print(line)
    return line


# ------------------------------------------------- resume without state
def _train_toy(work_dir, max_epochs=2, **hook_args):
    runner = toy_runner(str(work_dir), max_epochs, **hook_args)
    runner.train()
    return osp.join(str(work_dir), f'epoch_{max_epochs}.pth')


def test_resume_without_optimizer_state_is_refused(tmp_path):
    """Before: the run went on with a fresh optimizer and a learning rate
    computed from the wrong starting value, without a word."""
    path = _train_toy(tmp_path / 'run', save_optimizer=False)
    runner = toy_runner(
        str(tmp_path / 'run'), 3, runner_args=dict(resume=True,
                                                   load_from=path))
    with pytest.raises(InputError) as info:
        runner.train()
    print(info.value)
    text = str(info.value)
    assert text.startswith(f"--resume: the checkpoint '{path}' holds no "
                           'optimizer state (it was saved with '
                           'default_hooks.checkpoint.save_optimizer=False)')
    assert f'--cfg-options load_from={path} without --resume' in text


def test_resume_without_scheduler_state_is_refused():
    checkpoint = dict(optimizer={}, meta=dict(epoch=2))
    with pytest.raises(InputError, match='no learning-rate scheduler state'):
        check_resume_state(checkpoint, 'ckpt.pth', param_schedulers=[object()])
    # without schedulers in the config there is nothing to resume
    check_resume_state(checkpoint, 'ckpt.pth', param_schedulers=None)


def test_extending_a_finished_run_says_the_rate_stays_flat(tmp_path):
    schedule = [dict(type='CosineAnnealingLR', T_max=2, by_epoch=True,
                     begin=0, end=2, eta_min=0.01)]
    runner = toy_runner(str(tmp_path / 'run'), 2,
                        runner_args=dict(param_scheduler=schedule))
    runner.train()
    path = osp.join(str(tmp_path / 'run'), 'epoch_2.pth')
    resumed = toy_runner(
        str(tmp_path / 'run'), 4,
        runner_args=dict(param_scheduler=schedule, resume=True,
                         load_from=path))
    warnings = []
    resumed.logger.warning = warnings.append
    resumed.train()
    messages = [w for w in warnings if 'learning-rate schedule' in w]
    assert len(messages) == 1, warnings
    print(messages[0])
    assert messages[0].startswith(
        f"--resume: the learning-rate schedule restored from '{path}' ends "
        'at iteration 4 (epoch 2), before the 8 iterations of '
        'train_cfg.max_epochs=4: from there on the learning rate stays at')
    # what the message says: the extra epochs trained at one flat rate
    assert resumed.optim_wrapper.get_lr()['lr'] == \
        runner.optim_wrapper.get_lr()['lr']
    assert schedule_end_message(None, resumed.train_loop,
                                resumed.optim_wrapper, path) is None


# ------------------------------------------ checkpoints that do not fit
def _classifier(depth=20, aux_depth=2, aux=True):
    return MODELS.build(
        dict(
            type='LocalImageClassifier',
            backbone=dict(type='LocalCifarResNet', depth=depth,
                          base_channels=4),
            aux_head=dict(type='AugLocalAuxHead', depth=aux_depth)
            if aux else None,
            rule='local' if aux else 'bp',
            num_classes=4,
            image_size=16))


def test_checkpoint_of_another_depth_is_refused():
    checkpoint = dict(state_dict=_classifier(depth=32).state_dict())
    with pytest.raises(InputError) as info:
        check_model_fit(checkpoint, _classifier(depth=20), 'r32.pth',
                        resuming=True)
    text = str(info.value)
    print(text)
    assert text.startswith("--resume: the checkpoint 'r32.pth' does not fit "
                           'the model of the config: ')
    assert 'weights are not in the model (backbone.layer1.3.' in text
    assert 'The file holds a ' in text and 'stages (5, 5, 5)' in text


def test_checkpoint_with_other_aux_heads_is_refused():
    checkpoint = dict(state_dict=_classifier(aux_depth=3).state_dict())
    with pytest.raises(InputError,
                       match='Only the auxiliary heads differ') as info:
        check_model_fit(checkpoint, _classifier(aux_depth=2), 'd3.pth')
    print(info.value)


def test_exported_backbone_as_load_from_points_to_init_cfg():
    model = _classifier(aux=False)
    exported = dict(state_dict=model.backbone.state_dict(), meta={})
    with pytest.raises(InputError) as info:
        check_model_fit(exported, model, 'export/backbone.pth')
    text = str(info.value)
    print(text)
    assert 'It holds the weights of a backbone alone (an exported ' \
        'backbone)' in text
    assert "model.backbone.init_cfg=dict(type='Pretrained', " \
        "checkpoint='export/backbone.pth')" in text


def test_a_fitting_checkpoint_is_accepted():
    model = _classifier()
    state = {f'module.{k}': v for k, v in model.state_dict().items()}
    check_model_fit(dict(state_dict=state), _classifier(), 'same.pth')


class WideToyModel(ToyModel):

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 5)


def test_runner_refuses_load_from_and_resume_of_another_model(tmp_path):
    """Before: 'size mismatch' log lines, then training (load_from) or the
    optimizer's ValueError traceback (--resume)."""
    path = _train_toy(tmp_path / 'run', max_epochs=1)
    runner = toy_runner(
        str(tmp_path / 'other'), 1,
        runner_args=dict(model=WideToyModel(), load_from=path))
    with pytest.raises(InputError, match="fc.weight \\(2, 3\\) in the file, "
                       '\\(5, 3\\) in the model'):
        runner.load_or_resume()  # what runner.test() and train() do
    resumed = toy_runner(
        str(tmp_path / 'run'), 2,
        runner_args=dict(model=WideToyModel(), resume=True, load_from=path))
    with pytest.raises(InputError, match='^--resume: the checkpoint'):
        resumed.train()


def test_optimizer_state_of_other_parameter_groups_is_refused():
    model = ToyModel()
    optimizer = torch.optim.SGD(
        [dict(params=[model.fc.weight]),
         dict(params=[model.fc.bias], lr=0.1)], lr=0.1)

    class Wrapper:

        def state_dict(self):
            return torch.optim.SGD(model.parameters(), lr=0.1).state_dict()

    checkpoint = dict(optimizer=optimizer.state_dict(),
                      param_schedulers=[], meta=dict(epoch=1))
    with pytest.raises(InputError) as info:
        check_resume_state(checkpoint, 'c.pth', Wrapper())
    print(info.value)
    assert 'the file has 2 parameter group(s) of 1, 1 parameters, the ' \
        "config's optimizer 1 parameter group(s) of 2 parameters" in \
        str(info.value)


# ------------------------------------------------ --cfg-options keys
def test_cfg_options_keys_that_change_nothing_are_refused(tiny_config):
    cfg = Config.fromfile(tiny_config)
    for key, expected in [
        ('tarin_cfg.max_epochs', "no top-level key 'tarin_cfg'"
         '.*did you mean train_cfg'),
        ('train_cfg.max_epoch', 'did you mean max_epochs'),
        ('max_epochs', "'max_epochs' is a variable of the config file.*Set "
         'train_cfg.max_epochs, param_scheduler.1.T_max, '
         'param_scheduler.1.end instead'),
        ('param_scheduler.2.end', 'is a list of 2 entries'),
        ('model.aux_haed.depth', 'did you mean aux_head'),
        ('default_hooks.checkpoint.intervall', 'did you mean interval'),
    ]:
        with pytest.raises(InputError, match=expected) as info:
            check_cfg_options(cfg, {key: 1}, 'mmengine')
        print(info.value)


def test_cfg_options_keys_of_the_config_are_accepted(tiny_config):
    cfg = Config.fromfile(tiny_config)
    check_cfg_options(
        cfg, {
            'param_scheduler.0.end': 1,
            'param_scheduler.1.T_max': 1,
            'train_dataloader.dataset.pipeline.1.size': 12,
            'train_dataloader.pin_memory': False,
            'default_hooks.checkpoint.save_optimizer': False,
            'default_hooks.checkpoint.by_epoch': True,
            'model.aux_head_offload.host': 'file',
            'model.aux_head.type': 'DGLAuxHead',
            'model.aux_head.num_convs': 2,
            'optim_wrapper.optimizer.lr': 0.1,
            'val_cfg': None,
            'work_dir': 'elsewhere',
            'custom_hooks.0.type': 'EMAHook',
        }, 'mmengine')


def test_variable_uses_follow_other_variables(tmp_path):
    path = tmp_path / 'cfg.py'
    path.write_text('root = "data/"\nsub = root + "train/"\n'
                    'train_dataloader = dict(dataset=dict(data_root=sub, '
                    'pipeline=[dict(type="A", p=root)]))\n')
    assert variable_uses(str(path), 'root') == [
        'train_dataloader.dataset.pipeline.0.p',
        'train_dataloader.dataset.data_root'
    ]


def test_train_py_refuses_a_top_level_variable(tiny_config, tmp_path):
    """Before: max_epochs=1 was accepted, the run trained its 4 epochs and
    the dumped config showed max_epochs = 1."""
    line = _first_line(
        run_train(tiny_config, str(tmp_path / 'run'), '--cfg-options',
                  'max_epochs=1', timeout=120))
    assert line.startswith(
        "error: --cfg-options max_epochs: 'max_epochs' is a variable of the "
        'config file')
    assert not osp.exists(str(tmp_path / 'run' / 'epoch_1.pth'))


# ------------------------------------------------- schedules of nothing
def test_schedule_that_trains_nothing_is_refused(tiny_config):
    for key in ('max_epochs', 'max_iters'):
        cfg = Config.fromfile(tiny_config)
        cfg.train_cfg[key] = 0
        with pytest.raises(InputError, match=f'train_cfg.{key}=0: a '
                           'schedule of no'):
            check_config_values(cfg)


# ------------------------------------------ diverged detection training
class NaNFromIteration2(ToyModel):
    """A model whose loss is NaN from its second iteration on."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def forward(self, inputs, label=None, mode='tensor'):
        out = super().forward(inputs, label, mode)
        if mode == 'loss':
            self.calls += 1
            if self.calls >= 2:
                out['loss'] = out['loss'] * float('nan')
        return out


def test_non_finite_loss_stops_at_its_iteration(tmp_path):
    """Before: a plain OptimWrapper trained on and saved NaN weights."""
    hooks = dict(
        checkpoint=dict(type='AtomicCheckpointHook', by_epoch=False,
                        interval=2),
        non_finite_loss=dict(type='NonFiniteLossHook'))
    runner = toy_runner(
        str(tmp_path / 'run'), 2,
        runner_args=dict(model=NaNFromIteration2(), default_hooks=hooks))
    with pytest.raises(TrainingDivergedError) as info:
        runner.train()
    print(info.value)
    assert str(info.value).startswith(
        'non-finite loss (NaN or Inf) at iteration 2 (epoch 1, batch 2): '
        'loss=nan')
    assert not osp.exists(str(tmp_path / 'run' / 'iter_2.pth'))


def test_non_finite_weights_are_never_saved():
    hook = NonFiniteLossHook()
    state = dict(w=torch.tensor([1.0, float('inf')]), n=torch.tensor([1]))

    class Runner:
        iter = 7

    with pytest.raises(TrainingDivergedError, match='in 1 tensors \\(w\\)'):
        hook.before_save_checkpoint(Runner(), dict(state_dict=state))


def test_mask_rcnn_configs_stop_at_a_non_finite_loss():
    pytest.importorskip('mmdet')
    for name in ('mask_rcnn_auglocal_r34_coco', 'mask_rcnn_bp_r34_coco',
                 'mask_rcnn_mlaan_r34_coco'):
        cfg = Config.fromfile(osp.join(ROOT, 'configs', f'{name}.py'))
        assert cfg.default_hooks.non_finite_loss.type == 'NonFiniteLossHook'


# ------------------------------------------------------- COCO files
def _coco_file(num_images=20):
    images = [
        dict(id=i + 1, file_name=f'{i:03d}.jpg', width=32, height=32)
        for i in range(num_images)
    ]
    anns = [
        dict(id=i + 1, image_id=i + 1, category_id=1 + i % 2,
             bbox=[2, 2, 10, 10], area=100, iscrowd=0,
             segmentation=[[2, 2, 12, 2, 12, 12, 2, 12]])
        for i in range(num_images)
    ]
    cats = [dict(id=1, name='a'), dict(id=2, name='b')]
    return dict(images=images, annotations=anns, categories=cats)


def test_coco_merged_without_renumbering():
    pytest.importorskip('mmdet')
    from auglocal_det.datasets.checked_coco import check_coco_annotations
    first, second = _coco_file(16), _coco_file(4)
    for ann in second['annotations']:
        ann['id'] += 100
    merged = dict(first, images=first['images'] + second['images'],
                  annotations=first['annotations'] + second['annotations'])
    report = check_coco_annotations(merged, ('a', 'b'), 'merged.json')
    print(report.format())
    assert report.errors[0].startswith(
        "4 image ids appear more than once in 'merged.json': 1, 2, 3, 4 "
        "(e.g. id 1: '000.jpg', '000.jpg'). Were two files merged without "
        'renumbering?')
    second['annotations'][0]['id'] = 1
    merged['annotations'] = first['annotations'] + second['annotations']
    report = check_coco_annotations(merged, ('a', 'b'), 'merged.json')
    assert any(e.startswith('1 annotation ids appear more than once')
               for e in report.errors)


def test_coco_file_of_crowd_annotations_only():
    pytest.importorskip('mmdet')
    from auglocal_det.datasets.checked_coco import check_coco_annotations
    data = _coco_file()
    for ann in data['annotations']:
        ann['iscrowd'] = 1
    report = check_coco_annotations(data, ('a', 'b'), 'crowd.json')
    print(report.format())
    assert report.errors == [
        "every annotation of 'crowd.json' is a crowd region (iscrowd=1, 20 "
        'annotations): mmdet ignores crowd regions in training, so the box '
        'and mask losses would be 0. Set iscrowd=0 on the objects (iscrowd=1 '
        'marks a region of many objects that is not to be learnt)'
    ]
    data = _coco_file()
    for ann in data['annotations']:
        ann['iscrowd'] = int(ann['category_id'] == 2)
    report = check_coco_annotations(data, ('a', 'b'), 'crowd.json')
    assert report.errors[0].startswith(
        "class(es) 'b' (category id 2, 10 crowd annotations) of 'crowd.json' "
        'have only crowd annotations')


def test_coco_images_without_files(tmp_path, capsys):
    pytest.importorskip('mmdet')
    data = _coco_file(4)
    (tmp_path / 'img').mkdir()
    for img in data['images'][:3]:
        (tmp_path / 'img' / img['file_name']).write_bytes(b'x')
    ann = tmp_path / 'ann.json'
    ann.write_text(json.dumps(data))
    tool = runpy.run_path(osp.join(ROOT, 'tools', 'misc', 'check_coco.py'))
    assert tool['main']([str(ann), '--img-dir', str(tmp_path / 'img')]) == 1
    out = capsys.readouterr().out
    print(out)
    assert (f"error: 1 of 4 images listed in '{ann}' have no file in "
            f"'{tmp_path / 'img'}': id 4 '003.jpg'") in out
    assert tool['main']([str(ann)]) == 0  # no folder given: not checked
