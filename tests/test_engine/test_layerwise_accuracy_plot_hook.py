"""LayerwiseAccuracyPlotHook: records per-layer accuracy, writes a PNG."""
import json
from types import SimpleNamespace

from mmengine.logging import MessageHub
from PIL import Image

from auglocal_det.registry import HOOKS


def _runner(tmp_path, epoch):
    dataset = SimpleNamespace(metainfo=dict(classes=tuple('abcd')))
    return SimpleNamespace(
        model=SimpleNamespace(),  # no layer names: ticks are indices
        work_dir=str(tmp_path),
        epoch=epoch,
        iter=epoch * 10,
        val_dataloader=SimpleNamespace(dataset=dataset))


def test_plot_hook(tmp_path):
    hook = HOOKS.build(
        dict(type='LayerwiseAccuracyPlotHook', plot_every_val=False))
    for epoch in (1, 2):
        metrics = {f'aux_top1/l{j:02d}': 10. * j + epoch for j in range(4)}
        metrics['accuracy/top1'] = 55. + epoch
        metrics['accuracy/top5'] = 90.
        hook.after_val_epoch(_runner(tmp_path, epoch), metrics)
    assert not (tmp_path / 'layerwise_accuracy.png').exists()
    hook.after_train(_runner(tmp_path, 2))
    with Image.open(tmp_path / 'layerwise_accuracy.png') as img:
        assert img.format == 'PNG' and img.size[0] > 400
    data = json.loads((tmp_path / 'layerwise_accuracy.json').read_text())
    assert data['chance'] == 25.
    assert data['history'][-1] == dict(
        epoch=2, iter=20, top1=[2., 12., 22., 32., 57.])


def test_plot_hook_bp_model_and_no_metrics(tmp_path):
    hook = HOOKS.build(dict(type='LayerwiseAccuracyPlotHook'))
    hook.after_val_epoch(_runner(tmp_path, 1), {})
    hook.after_train(_runner(tmp_path, 1))
    assert not (tmp_path / 'layerwise_accuracy.png').exists()
    hook.after_val_epoch(_runner(tmp_path, 1), {'accuracy/top1': 40.})
    assert (tmp_path / 'layerwise_accuracy.png').is_file()


def test_history_continues_after_resume(tmp_path):
    """The history travels in the message hub, i.e. in the checkpoint: a
    resumed run's json and figure still hold the validations before it."""
    def metrics(epoch):
        return {'aux_top1/l00': 10. + epoch, 'accuracy/top1': 50. + epoch}

    first = _runner(tmp_path, 1)
    first.message_hub = MessageHub('layerwise_before_resume')
    hook = HOOKS.build(dict(type='LayerwiseAccuracyPlotHook'))
    hook.before_train(first)
    for epoch in (1, 2):
        first.epoch, first.iter = epoch, epoch * 10
        hook.after_val_epoch(first, metrics(epoch))
    saved = first.message_hub.state_dict()  # what a checkpoint holds

    resumed = _runner(tmp_path, 3)
    resumed.message_hub = MessageHub('layerwise_after_resume')
    resumed.message_hub.load_state_dict(saved)  # what --resume restores
    hook = HOOKS.build(dict(type='LayerwiseAccuracyPlotHook'))
    hook.before_train(resumed)
    hook.after_val_epoch(resumed, metrics(3))
    hook.after_train(resumed)
    data = json.loads((tmp_path / 'layerwise_accuracy.json').read_text())
    assert [e['epoch'] for e in data['history']] == [1, 2, 3]
    assert data['history'][0]['top1'] == [11., 51.]
