"""Export the trained backbone when training ends.

The conversion itself is :mod:`auglocal_det.export`, which
``tools/model_converters/export_backbone.py`` also calls.
"""
import logging
import os.path as osp
from typing import Any, Dict, Optional

from mmengine.dist import (
    broadcast_object_list,
    get_world_size,
    is_main_process,
)
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper

from auglocal_det.errors import InputError
from auglocal_det.export import (
    check_export_target,
    clean_interrupted_exports,
    describe_model,
    export_backbone,
    read_export,
)
from auglocal_det.fileio import sha256_file
from auglocal_det.registry import HOOKS

__all__ = ['ExportBackboneHook']


@HOOKS.register_module()
class ExportBackboneHook(Hook):
    """Export the trained backbone when training ends.

    After the last epoch (and its validation), writes ``backbone.pth``,
    ``torchvision.pth`` and ``backbone.json``
    (:func:`auglocal_det.export.export_backbone`) into ``out_dir`` on the
    main process. The sidecar records the last
    validation top-1 and, when the checkpoint of the final epoch/iteration
    exists (``CheckpointHook`` with ``save_last=True``, the default), its
    path and SHA-256; the exported weights are the model's at the end of
    training, which are that checkpoint's.

    An export already in ``out_dir`` is replaced only by the run that
    wrote it, resumed (its ``backbone.json`` names this work dir), or with
    ``overwrite``; any other run stops in ``before_train``, before it
    trains, instead of replacing it at the end.

    Args:
        out_dir (str, optional): Output folder. Defaults to
            ``<work_dir>/export``.
        torchvision (bool): Also write ``torchvision.pth``. Defaults to
            True.
        metric_key (str): Validation metric recorded as ``val_top1``.
            Defaults to 'accuracy/top1'.
        overwrite (bool): Replace an export of another run
            (``tools/train.py --overwrite`` sets it). Defaults to False.
    """

    priority = 'VERY_LOW'  # after CheckpointHook has saved the last epoch

    def __init__(self,
                 out_dir: Optional[str] = None,
                 torchvision: bool = True,
                 metric_key: str = 'accuracy/top1',
                 overwrite: bool = False) -> None:
        self.out_dir = out_dir
        self.torchvision = torchvision
        self.metric_key = metric_key
        self.overwrite = overwrite
        self.last_metrics: Dict[str, float] = {}
        self.last_val_epoch: Optional[int] = None
        self.exported: Optional[Dict[str, Any]] = None
        self._replace = overwrite

    def before_train(self, runner) -> None:
        """Stop a run whose export would replace another run's export.

        The main process decides; under data parallelism every process
        raises alike.
        """
        error = None
        if is_main_process():
            error = self._target_error(runner)
        if get_world_size() > 1:
            verdict = [error]
            broadcast_object_list(verdict)
            error = verdict[0]
        if error is not None:
            raise InputError(error)

    def _target_error(self, runner) -> Optional[str]:
        """Why this run must not export into ``out_dir`` (None if it may)."""
        out_dir = self._out_dir(runner)
        for path in clean_interrupted_exports(out_dir):
            print_log(
                f'Cleaned up {path!r}, left by an export that was '
                'interrupted', logger='current', level=logging.WARNING)
        existing = read_export(out_dir)
        work_dir = osp.abspath(runner.work_dir)
        resumed = bool(getattr(runner, '_resume', False))
        if existing and resumed and _written_by_run(existing, work_dir):
            self._replace = True  # the same run, continued
        advice = ('Move the export away, give this run another --work-dir '
                  '(or ExportBackboneHook another out_dir), or pass '
                  '--overwrite to tools/train.py to replace it')
        try:
            check_export_target(
                out_dir,
                None,
                self._replace,
                advice,
                replacement='the export of this run, when it ends')
        except InputError as exc:
            return str(exc)
        return None

    def _out_dir(self, runner) -> str:
        return self.out_dir or osp.join(runner.work_dir, 'export')

    def after_val_epoch(self,
                        runner,
                        metrics: Optional[Dict[str, float]] = None) -> None:
        """Remember the latest validation results."""
        if metrics:
            self.last_metrics = dict(metrics)
            self.last_val_epoch = runner.epoch

    def after_train(self, runner) -> None:
        """Write the export (main process only)."""
        if not is_main_process():
            return
        self.exported = self.export(runner)

    def export(self, runner) -> Dict[str, Any]:
        """Export the runner's model now.

        Args:
            runner (Runner): The runner.

        Returns:
            dict: The sidecar content.
        """
        model = runner.model.module if is_model_wrapper(
            runner.model) else runner.model
        state_dict = model.state_dict()
        model_cfg = runner.cfg.get('model') if runner.cfg else None
        info = describe_model(model_cfg, state_dict)
        ckpt = self._final_checkpoint(runner)
        top1 = self.last_metrics.get(self.metric_key)
        top5 = self.last_metrics.get(self.metric_key.replace('top1', 'top5'))
        info.update(
            epoch=runner.epoch,
            iter=runner.iter,
            max_epochs=runner.max_epochs,
            val_top1=top1,
            val_top5=top5,
            val_epoch=self.last_val_epoch if top1 is not None else None,
            source_checkpoint=ckpt,
            source_sha256=sha256_file(ckpt) if ckpt else None,
            work_dir=osp.abspath(runner.work_dir),
            config=getattr(runner.cfg, 'filename', None),
            exported_by='ExportBackboneHook')
        if ckpt is None:
            info['source_note'] = ('no checkpoint of the final iteration in '
                                   'the work dir; exported the in-memory '
                                   'model')
        out_dir = self._out_dir(runner)
        meta = export_backbone(
            state_dict,
            out_dir,
            info,
            torchvision=self.torchvision,
            source='the trained model',
            overwrite=self._replace)
        written = ', '.join(sorted(meta['files']))
        top = f'{top1:.2f}' if top1 is not None else 'n/a'
        print_log(
            f'Exported the backbone to {osp.abspath(out_dir)} ({written}, '
            f'backbone.json); val top-1 {top}', logger='current')
        return meta

    @staticmethod
    def _final_checkpoint(runner) -> Optional[str]:
        """The checkpoint saved at the final epoch/iteration, if any."""
        pointer = osp.join(runner.work_dir, 'last_checkpoint')
        if not osp.isfile(pointer):
            return None
        with open(pointer) as f:
            path = f.read().strip()
        if not path or not osp.isfile(path):
            return None
        final = {f'epoch_{runner.epoch}.pth', f'iter_{runner.iter}.pth'}
        return osp.abspath(path) if osp.basename(path) in final else None


def _written_by_run(sidecar: Dict[str, Any], work_dir: str) -> bool:
    """Whether an export's sidecar names ``work_dir`` as its run's."""
    if sidecar.get('work_dir') == work_dir:
        return True
    source = sidecar.get('source_checkpoint')
    return bool(source) and osp.dirname(source) == work_dir
