"""Exports are results too: never replaced by the export of another
checkpoint without --overwrite, and written as a whole (a kill at any
moment leaves the previous export, and what it leaves is cleaned up)."""
import hashlib
import json
import os
import os.path as osp
import signal
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch
from common_utils import load_tool, tiny_auglocal_model
from reliability_utils import ROOT, run_train, train_env

from auglocal_det.engine.hooks import ExportBackboneHook
from auglocal_det.errors import InputError
from auglocal_det.export import clean_interrupted_exports, export_checkpoint
from auglocal_det.registry import MODELS

TINY_MODEL = tiny_auglocal_model()


@pytest.fixture
def work_dir(tmp_path) -> str:
    """epoch_1.pth and epoch_2.pth of a classifier, different weights."""
    folder = tmp_path / 'run'
    folder.mkdir()
    torch.manual_seed(0)
    for epoch in (1, 2):
        model = MODELS.build(TINY_MODEL)
        torch.save(
            dict(
                state_dict=model.state_dict(),
                meta=dict(epoch=epoch, cfg=f'model = {TINY_MODEL!r}\n')),
            str(folder / f'epoch_{epoch}.pth'))
    return str(folder)


def _sha(path: str) -> str:
    with open(path, 'rb') as f:
        return hashlib.sha256(f.read()).hexdigest()


def _snapshot(folder: str) -> dict:
    return {name: _sha(osp.join(folder, name)) for name in os.listdir(folder)}


def _sidecar(folder: str) -> dict:
    with open(osp.join(folder, 'backbone.json')) as f:
        return json.load(f)


def _assert_whole(folder: str, checkpoint: str) -> None:
    """Every file of the export comes from ``checkpoint``."""
    sidecar = _sidecar(folder)
    assert sidecar['source_checkpoint'] == checkpoint
    for name, entry in sidecar['files'].items():
        assert _sha(osp.join(folder, name)) == entry['sha256'], name


def _hidden(work_dir: str) -> list:
    return sorted(n for n in os.listdir(work_dir) if n.startswith('.'))


def test_converter_keeps_an_export_of_another_checkpoint(work_dir):
    first, second = (osp.join(work_dir, f'epoch_{e}.pth') for e in (1, 2))
    out = osp.join(work_dir, 'export')
    export_checkpoint(second)  # the default folder: export/ beside it
    before = _snapshot(out)
    with pytest.raises(InputError) as info:
        export_checkpoint(first)
    message = str(info.value)
    print(message)
    assert message.startswith(
        f'export folder {out!r} already holds the backbone exported from '
        f'{second!r} (tools/model_converters/export_backbone.py, ')
    assert message.endswith(
        'refusing to replace it by the export of another checkpoint. Export '
        'elsewhere with --out-dir DIR, or pass --overwrite to replace it')
    assert _snapshot(out) == before
    export_checkpoint(second)  # the same checkpoint again is fine
    _assert_whole(out, second)
    export_checkpoint(first, overwrite=True)
    _assert_whole(out, first)

    result = subprocess.run(
        [sys.executable, 'tools/model_converters/export_backbone.py', second],
        cwd=ROOT, env=train_env(), capture_output=True, text=True,
        timeout=120)
    assert result.returncode == 1
    assert result.stderr.startswith(f'error: export folder {out!r} already '
                                    'holds the backbone exported from')
    _assert_whole(out, first)


def test_export_folder_with_other_files_is_refused(work_dir):
    with pytest.raises(InputError, match='holds files that are not part of '
                       r'an export \(epoch_1.pth, epoch_2.pth\)'):
        export_checkpoint(osp.join(work_dir, 'epoch_1.pth'), work_dir)
    assert sorted(os.listdir(work_dir)) == ['epoch_1.pth', 'epoch_2.pth']


def _runner(work_dir: str, resume: bool) -> SimpleNamespace:
    return SimpleNamespace(work_dir=work_dir, _resume=resume)


def test_hook_refuses_before_training_to_replace_a_kept_export(work_dir):
    """A new run in a work dir whose checkpoints were removed but whose
    export was kept stops before it trains; the run that wrote the export,
    resumed, and --overwrite may replace it."""
    export_checkpoint(osp.join(work_dir, 'epoch_2.pth'))
    for epoch in (1, 2):
        os.remove(osp.join(work_dir, f'epoch_{epoch}.pth'))
    out = osp.join(work_dir, 'export')
    with pytest.raises(InputError) as info:
        ExportBackboneHook().before_train(_runner(work_dir, resume=False))
    print(info.value)
    assert str(info.value).startswith(f'export folder {out!r} already holds')
    assert 'replace it by the export of this run, when it ends' in str(
        info.value)
    assert '--overwrite to tools/train.py' in str(info.value)
    hook = ExportBackboneHook()
    hook.before_train(_runner(work_dir, resume=True))
    assert hook._replace  # the same run, continued
    ExportBackboneHook(overwrite=True).before_train(
        _runner(work_dir, resume=False))
    # a resumed run of another work dir does not own the export
    with pytest.raises(InputError):
        ExportBackboneHook(out_dir=out).before_train(
            _runner(osp.join(work_dir, 'elsewhere'), resume=True))


def test_train_py_stops_before_training_and_overwrite_lets_it(
        tiny_config, work_dir, tmp_path, monkeypatch):
    export_checkpoint(osp.join(work_dir, 'epoch_2.pth'))
    run_dir = str(tmp_path / 'new_run')
    os.makedirs(run_dir)
    os.rename(osp.join(work_dir, 'export'), osp.join(run_dir, 'export'))
    before = _snapshot(osp.join(run_dir, 'export'))
    config = tmp_path / 'with_export.py'
    config.write_text(f'_base_ = [{tiny_config!r}]\n'
                      "custom_hooks = [dict(type='ExportBackboneHook')]\n")
    result = run_train(str(config), run_dir)
    print(result.stderr)
    assert result.returncode == 1
    assert result.stderr.startswith('error: export folder ')
    assert not [n for n in os.listdir(run_dir) if n.endswith('.pth')]
    assert _snapshot(osp.join(run_dir, 'export')) == before

    tool = load_tool('tools/train.py', 'train_tool')
    monkeypatch.setattr(sys, 'argv', [
        'train.py', str(config), '--work-dir', run_dir, '--overwrite'])
    cfg = tool.build_config(tool.parse_args())
    assert cfg.custom_hooks[0]['overwrite'] is True


_KILLER = '''
import os, signal, sys
sys.path.insert(0, {root!r})
import auglocal_det.export as export

def die(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)

if sys.argv[1] == 'writing':  # after backbone.pth, before backbone.json
    export.save_json_atomic = die
else:  # between moving the old export aside and the new one in
    rename = os.rename
    def dying_rename(src, dst):
        if src.endswith('.incomplete'):
            die()
        rename(src, dst)
    os.rename = dying_rename
export.export_checkpoint(sys.argv[2], sys.argv[3], overwrite=True)
'''


@pytest.mark.parametrize('moment', ['writing', 'renaming'])
def test_kill_during_export_leaves_a_whole_export(work_dir, tmp_path,
                                                  moment):
    first, second = (osp.join(work_dir, f'epoch_{e}.pth') for e in (1, 2))
    out = osp.join(work_dir, 'export')
    export_checkpoint(second)
    # a temporary file the earlier file-by-file writer left behind
    stale = osp.join(out, '.backbone.pth.abcd1234.tmp')
    with open(stale, 'wb') as f:
        f.write(b'partial')
    script = tmp_path / 'killer.py'
    script.write_text(_KILLER.format(root=ROOT))
    result = subprocess.run(
        [sys.executable, str(script), moment, first, out],
        env=train_env(), capture_output=True, text=True, timeout=120)
    assert result.returncode == -signal.SIGKILL, result.stderr[-2000:]
    if moment == 'writing':
        _assert_whole(out, second)
        assert [n for n in _hidden(work_dir) if n.endswith('.incomplete')]
    else:  # the old export was moved aside, the new one not yet in place
        assert not osp.exists(out)
        assert [n for n in _hidden(work_dir) if n.endswith('.replaced')]
    assert not osp.exists(stale)  # removed when the export started
    assert clean_interrupted_exports(out)
    _assert_whole(out, second)
    assert _hidden(work_dir) == [] and not osp.exists(stale)
    export_checkpoint(first, overwrite=True)
    _assert_whole(out, first)
    assert _hidden(work_dir) == []


def test_failed_export_leaves_the_folder_as_it_was(work_dir, monkeypatch):
    import auglocal_det.export as export
    second = osp.join(work_dir, 'epoch_2.pth')
    out = osp.join(work_dir, 'export')
    export_checkpoint(second)
    before = _snapshot(out)

    def full_disk(*args, **kwargs):
        raise OSError(28, 'No space left on device')

    monkeypatch.setattr(export, 'save_json_atomic', full_disk)
    with pytest.raises(OSError, match='No space left'):
        export_checkpoint(osp.join(work_dir, 'epoch_1.pth'), overwrite=True)
    assert _snapshot(out) == before
    assert _hidden(work_dir) == []
