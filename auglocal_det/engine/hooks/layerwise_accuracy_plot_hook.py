"""Plot validation top-1 against the local layer index (layer-wise figure).
"""
import os.path as osp
from typing import Any, Dict, List, Optional

from mmengine.dist import is_main_process
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper

from auglocal_det.errors import InputError
from auglocal_det.evaluation import parse_layerwise_metrics
from auglocal_det.fileio import save_json_atomic
from auglocal_det.models.classifiers import LocalImageClassifier
from auglocal_det.plot_style import new_figure, save_figure
from auglocal_det.registry import HOOKS

__all__ = ['LayerwiseAccuracyPlotHook', 'plot_layerwise_accuracy']

#: Message-hub key of the recorded history (saved in every checkpoint, so
#: that ``--resume`` continues it).
HISTORY_KEY = 'layerwise_accuracy_history'


def plot_layerwise_accuracy(history: List[Dict[str, Any]],
                            path: str,
                            layer_names: Optional[List[str]] = None,
                            chance: Optional[float] = None,
                            title: str = 'Layer-wise validation accuracy'
                            ) -> None:
    """Draw top-1 vs. local module index for each validation; save a PNG.

    Args:
        history (list[dict]): One entry per validation with ``epoch`` and
            ``top1`` (a list: the auxiliary heads in order, then the
            network's own output).
        path (str): Output PNG (written atomically).
        layer_names (list[str], optional): Tick labels, one per point.
        chance (float, optional): Chance level in percent, drawn dashed.
        title (str): Figure title.
    """
    fig, ax = new_figure()
    count = len(history)
    for i, entry in enumerate(history):
        ys = entry['top1']
        xs = list(range(len(ys)))
        last = i == count - 1
        shade = 0.25 + 0.55 * (i + 1) / count
        ax.plot(
            xs,
            ys,
            marker='o' if last else None,
            markersize=4,
            linewidth=2.2 if last else 1.0,
            color='tab:blue' if last else (shade, shade, 0.9 * shade + 0.1),
            alpha=1.0 if last else 0.6,
            label=f'epoch {entry["epoch"]}' if last or i == 0 else None)
        if last and ys:
            ax.annotate(
                f'{ys[-1]:.1f}', (xs[-1], ys[-1]),
                textcoords='offset points',
                xytext=(0, 6),
                ha='center',
                fontsize=8)
    if chance is not None:
        ax.axhline(
            chance, color='gray', linestyle='--', linewidth=1,
            label=f'chance ({chance:.1f}%)')
    npoints = max((len(e['top1']) for e in history), default=0)
    if layer_names and len(layer_names) == npoints:
        ax.set_xticks(range(npoints))
        ax.set_xticklabels(layer_names, rotation=60, ha='right', fontsize=7)
    ax.set_xlabel('local module (last point: the network\'s own output)')
    ax.set_ylabel('val top-1 (%)')
    ax.set_ylim(0, 100)
    ax.grid(True, alpha=0.3)
    ax.set_title(title)
    ax.legend(loc='best', fontsize=8)
    save_figure(fig, path)


@HOOKS.register_module()
class LayerwiseAccuracyPlotHook(Hook):
    """Record per-layer validation accuracy and plot it after training.

    After every validation the hook collects the ``LayerwiseAccuracy``
    results (``aux_top1/l00``, ``aux_top1/l01``, ...) and the network's own
    top-1 (``accuracy/top1``); at the end of training it writes
    ``layerwise_accuracy.png`` (top-1 vs. local module, one curve per
    validation, the last one bold: the layer-wise figure of the papers)
    and ``layerwise_accuracy.json`` (the numbers) into the work dir. For a
    model without auxiliary heads the figure has the final point only.
    The history is kept in the message hub, hence in every checkpoint, and
    continues after ``--resume``.

    Args:
        filename (str): PNG name in the work dir. Defaults to
            'layerwise_accuracy.png'.
        aux_prefix (str): Prefix of the per-layer metric. Defaults to
            'aux_top1'.
        final_key (str): Metric of the network's own output. Defaults to
            'accuracy/top1'.
        plot_every_val (bool): Also redraw after every validation, so the
            figure is there during long runs. Defaults to True.
    """

    priority = 'LOW'

    def __init__(self,
                 filename: str = 'layerwise_accuracy.png',
                 aux_prefix: str = 'aux_top1',
                 final_key: str = 'accuracy/top1',
                 plot_every_val: bool = True) -> None:
        if not filename.endswith('.png'):
            raise InputError(f'LayerwiseAccuracyPlotHook: filename must end '
                             f'with .png, got {filename!r}')
        self.filename = filename
        self.aux_prefix = aux_prefix
        self.final_key = final_key
        self.plot_every_val = plot_every_val
        self.history: List[Dict[str, Any]] = []
        self._chance: Optional[float] = None

    def before_train(self, runner) -> None:
        """Take over the history of a resumed run (the message hub is
        restored from the checkpoint before this hook runs)."""
        hub = getattr(runner, 'message_hub', None)
        saved = hub.get_info(HISTORY_KEY) if hub is not None else None
        if saved:
            self.history = [dict(entry) for entry in saved]

    def after_val_epoch(self,
                        runner,
                        metrics: Optional[Dict[str, float]] = None) -> None:
        """Record this validation's per-layer accuracies."""
        if not metrics:
            return
        aux = [acc for _, acc in parse_layerwise_metrics(
            metrics, self.aux_prefix)]
        final = metrics.get(self.final_key)
        if final is None and not aux:
            return
        top1 = aux + ([float(final)] if final is not None else [])
        self.history.append(
            dict(epoch=runner.epoch, iter=runner.iter, top1=top1))
        hub = getattr(runner, 'message_hub', None)
        if hub is not None:
            hub.update_info(HISTORY_KEY, [dict(e) for e in self.history])
        if self._chance is None:
            self._chance = self._chance_level(runner)
        if self.plot_every_val:
            self._write(runner)

    def after_train(self, runner) -> None:
        """Write the figure and the numbers."""
        png = self._write(runner)
        if png:
            print_log(f'Layer-wise accuracy plot: {png}', logger='current')

    def _write(self, runner) -> Optional[str]:
        if not self.history or not is_main_process():
            return None
        png = osp.join(runner.work_dir, self.filename)
        names = self._layer_names(runner, len(self.history[-1]['top1']))
        rule = self._rule(runner)
        title = 'Layer-wise validation top-1' + (f' ({rule})' if rule else '')
        plot_layerwise_accuracy(self.history, png, names, self._chance,
                                title)
        save_json_atomic(
            dict(
                layer_names=names,
                chance=self._chance,
                history=self.history),
            png[:-len('.png')] + '.json')
        return png

    @staticmethod
    def _model(runner):
        model = runner.model
        return model.module if is_model_wrapper(model) else model

    def _rule(self, runner) -> Optional[str]:
        model = self._model(runner)
        if not isinstance(model, LocalImageClassifier):
            return None
        heads = model.aux_heads
        if model.rule == 'local' and len(heads):
            return type(heads[0]).__name__.replace('AuxHead', '')
        return model.rule

    def _layer_names(self, runner, npoints: int) -> Optional[List[str]]:
        """Name of the last local layer of every module (if known)."""
        model = self._model(runner)
        if not isinstance(model, LocalImageClassifier):
            return None
        ranges, specs = model.module_ranges, model.layer_specs
        if not ranges or not specs or len(ranges) != npoints:
            return None
        try:
            return [specs[last].name for _, last in ranges]
        except (AttributeError, IndexError):
            return None

    @staticmethod
    def _chance_level(runner) -> Optional[float]:
        try:
            classes = runner.val_dataloader.dataset.metainfo.get('classes')
        except Exception:
            return None
        return 100. / len(classes) if classes else None
