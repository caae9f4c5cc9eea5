"""Checkpoints are read safely, and image files are bounded.

Every checkpoint the package reads goes through the weights-only
unpickler with the allowlist of this package's checkpoint types: a file
that needs anything else is refused with one line naming the type, a
planted payload never runs (its marker file never appears), and
``--trust-checkpoint`` opts in for the file the user names. A real full
checkpoint of a tiny ``tools/train.py`` run loads through every path.
Images whose header announces too many pixels are refused before they are
decoded.
"""
import os
import os.path as osp
import pickle
import shutil
import struct
import subprocess
import sys
import zlib

import pytest
import torch
from common_utils import load_tool, tiny_auglocal_model
from mmengine.config import Config
from reliability_utils import ROOT, run_train, toy_runner, train_env

from auglocal_det.analysis.representation_similarity import (
    load_work_dir_model,
)
from auglocal_det.datasets.transforms import LoadImageTensor
from auglocal_det.engine.runner import (
    UnsafeCheckpointError,
    checkpoint_problem,
    disallowed_globals,
    load_local_checkpoint,
    resolve_resume_checkpoint,
    trusted_checkpoints,
)
from auglocal_det.errors import InputError, InputFileNotFoundError
from auglocal_det.export import export_checkpoint
from auglocal_det.models.backbones.pretrained import check_backbone_checkpoint
from auglocal_det.registry import MODELS

TINY_MODEL = tiny_auglocal_model()


class _Payload:
    """Unpickled, it creates the file ``marker`` (stands for any code)."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f'open({self.marker!r}, "w").close()', ))


def _plant(path: str, marker: str, legacy: bool = False) -> str:
    """A checkpoint-looking file that runs a payload when unpickled."""
    torch.save(
        dict(state_dict={'fc.weight': torch.zeros(2, 3)},
             meta=dict(note=_Payload(marker))),
        path,
        _use_new_zipfile_serialization=not legacy)
    return path


@pytest.fixture(params=['zip', 'legacy'])
def legacy(request) -> bool:
    """Both formats torch.save writes."""
    return request.param == 'legacy'


@pytest.fixture(scope='module')
def trained_run(tiny_config, tmp_path_factory) -> str:
    """Work dir of a real 1-epoch tools/train.py run (iter_4, iter_6)."""
    work_dir = str(tmp_path_factory.mktemp('trained') / 'run')
    result = run_train(tiny_config, work_dir, '--cfg-options',
                       'train_cfg.max_epochs=1')
    assert result.returncode == 0, result.stderr[-3000:]
    return work_dir


@pytest.fixture
def toy_run(tmp_path) -> str:
    """A toy work dir with epoch_1.pth and epoch_2.pth (real checkpoints
    of the Runner, written by AtomicCheckpointHook)."""
    work_dir = str(tmp_path / 'run')
    toy_runner(work_dir, max_epochs=2).train()
    for epoch in (1, 2):
        path = osp.join(work_dir, f'epoch_{epoch}.pth')
        os.utime(path, (1_000_000 + epoch, 1_000_000 + epoch))
    return work_dir


def test_the_payload_runs_when_unpickled_in_full(tmp_path, legacy):
    """The control: the planted files of these tests are live."""
    marker = str(tmp_path / 'ran')
    path = _plant(str(tmp_path / 'epoch_1.pth'), marker, legacy)
    torch.load(path, weights_only=False)
    assert osp.exists(marker)


def test_resume_typo_never_unpickles_candidates(toy_run, tmp_path, legacy):
    """A --resume path that does not exist (or an empty last_checkpoint)
    looks for the previous good checkpoint: a planted, newer file is
    neither unpickled nor recommended."""
    marker = str(tmp_path / 'ran')
    planted = _plant(osp.join(toy_run, 'epoch_3.pth'), marker, legacy)
    good = osp.join(toy_run, 'epoch_2.pth')
    typo = osp.join(toy_run, 'epoch_4.ph')
    with pytest.raises(InputFileNotFoundError) as info:
        resolve_resume_checkpoint(toy_run, typo)
    print(info.value)
    assert f'The previous good checkpoint is {good!r}' in str(info.value)
    assert planted not in str(info.value)
    with open(osp.join(toy_run, 'last_checkpoint'), 'w'):
        pass  # empty
    with pytest.raises(InputError) as info:
        resolve_resume_checkpoint(toy_run, 'auto')
    assert f'The previous good checkpoint is {good!r}' in str(info.value)
    assert resolve_resume_checkpoint(toy_run, 'auto', fallback=True) == good
    assert checkpoint_problem(planted, scan=True) is not None
    assert not osp.exists(marker)


def test_resume_from_a_payload_is_refused_by_name(toy_run, tmp_path,
                                                  legacy):
    marker = str(tmp_path / 'ran')
    planted = _plant(str(tmp_path / 'gift.pth'), marker, legacy)
    with pytest.raises(InputError) as info:
        resolve_resume_checkpoint(toy_run, planted)
    message = str(info.value)
    print(message)
    assert message.startswith(f'--resume: the checkpoint {planted!r} given '
                              'to --resume is unusable: ')
    assert "'builtins.exec'" in message
    assert '--trust-checkpoint' in message
    assert not osp.exists(marker)
    # the runner's loader refuses it too, for --resume and load_from
    runner = toy_runner(
        str(tmp_path / 'other'),
        max_epochs=1,
        runner_args=dict(load_from=planted))
    with pytest.raises(UnsafeCheckpointError, match="'builtins.exec'"):
        runner.load_or_resume()
    assert not osp.exists(marker)


def test_trust_applies_to_the_named_file_only(tmp_path):
    marker = str(tmp_path / 'ran')
    planted = _plant(str(tmp_path / 'gift.pth'), marker)
    with trusted_checkpoints([str(tmp_path / 'another.pth')]):
        with pytest.raises(UnsafeCheckpointError):
            load_local_checkpoint(planted)
    assert not osp.exists(marker)
    with trusted_checkpoints([planted]):
        load_local_checkpoint(planted)
    assert osp.exists(marker)  # the user vouched for it
    os.remove(marker)
    with pytest.raises(UnsafeCheckpointError):  # the context is over
        load_local_checkpoint(planted)
    assert not osp.exists(marker)


def test_train_py_prints_one_line(tiny_config, tmp_path):
    marker = str(tmp_path / 'ran')
    planted = _plant(str(tmp_path / 'gift.pth'), marker)
    result = run_train(tiny_config, str(tmp_path / 'wd'), '--resume',
                       planted)
    print(result.stderr)
    assert result.returncode == 1
    assert result.stderr.startswith(
        f'error: --resume: the checkpoint {planted!r} given to --resume is '
        "unusable: unpickling it needs 'builtins.exec'")
    assert 'Traceback' not in result.stderr
    assert not osp.exists(marker)


def test_exporter_reads_the_stored_config_as_data(tmp_path):
    """A file that passes weights_only=True (tensors and strings) with
    code in meta.cfg: the exporter takes the facts it needs from the text
    without running it."""
    marker = str(tmp_path / 'ran')
    text = (f'import os\nopen({marker!r}, "w").close()\n'
            f'model = {TINY_MODEL!r}\ntrain_cfg = dict(max_epochs=7)\n')
    control = str(tmp_path / 'control')
    Config.fromstring(text.replace(marker, control), '.py')
    assert osp.exists(control)  # MMEngine's Config runs the text

    model = MODELS.build(TINY_MODEL)
    path = str(tmp_path / 'epoch_7.pth')
    torch.save(dict(state_dict=model.state_dict(), meta=dict(cfg=text)),
               path)
    torch.load(path, weights_only=True)  # no pickled code in the file
    meta = export_checkpoint(path, str(tmp_path / 'export'))
    assert not osp.exists(marker)
    assert meta['aux_head'] == 'AugLocalAuxHead'
    assert meta['aux_depth'] == 2
    assert meta['max_epochs'] == 7


def test_exporter_refuses_a_payload(tmp_path, legacy):
    marker = str(tmp_path / 'ran')
    planted = _plant(str(tmp_path / 'epoch_1.pth'), marker, legacy)
    with pytest.raises(UnsafeCheckpointError) as info:
        export_checkpoint(planted)
    print(info.value)
    assert str(info.value).startswith(
        f'checkpoint {planted!r} was not loaded: unpickling it needs '
        "'builtins.exec', which no checkpoint of this package holds")
    assert not osp.exists(marker)
    assert not osp.exists(tmp_path / 'export')


def test_converter_tool_prints_one_line(tmp_path):
    marker = str(tmp_path / 'ran')
    planted = _plant(str(tmp_path / 'epoch_1.pth'), marker)
    result = subprocess.run(
        [sys.executable, 'tools/model_converters/export_backbone.py',
         planted],
        cwd=ROOT, env=train_env(), capture_output=True, text=True,
        timeout=120)
    assert result.returncode == 1
    assert result.stderr.startswith(f'error: checkpoint {planted!r} was not '
                                    'loaded')
    assert '--trust-checkpoint' in result.stderr
    assert not osp.exists(marker)


def test_similarity_tool_refuses_what_last_checkpoint_names(
        trained_run, tmp_path):
    marker = str(tmp_path / 'ran')
    work_dir = str(tmp_path / 'wd')
    os.makedirs(work_dir)
    for name in os.listdir(trained_run):
        if name.endswith('.py'):
            shutil.copy(osp.join(trained_run, name), work_dir)
    planted = _plant(osp.join(work_dir, 'epoch_1.pth'), marker)
    with open(osp.join(work_dir, 'last_checkpoint'), 'w') as f:
        f.write(planted)
    with pytest.raises(UnsafeCheckpointError, match="'builtins.exec'"):
        load_work_dir_model(work_dir)
    assert not osp.exists(marker)


def test_pretrained_backbone_message(trained_run, tmp_path):
    """A refused init_cfg.checkpoint: the export is advised only for a
    full checkpoint of this package, never for a file with foreign
    types."""
    backbone = MODELS.build(TINY_MODEL['backbone'])
    marker = str(tmp_path / 'ran')
    planted = _plant(str(tmp_path / 'backbone.pth'), marker)
    with pytest.raises(ValueError) as info:
        check_backbone_checkpoint(planted, backbone)
    print(info.value)
    assert "needs 'builtins.exec'" in str(info.value)
    assert 'export_backbone.py' not in str(info.value)
    assert not osp.exists(marker)

    full = osp.join(trained_run, 'iter_6.pth')
    with pytest.raises(ValueError) as info:
        check_backbone_checkpoint(full, backbone)
    advice = f'python tools/model_converters/export_backbone.py {full}'
    assert advice in str(info.value)
    meta = export_checkpoint(full, str(tmp_path / 'export'))  # as advised
    check_backbone_checkpoint(meta['files']['backbone.pth']['path'],
                              backbone)


def test_real_checkpoint_loads_through_every_path(trained_run, tmp_path):
    path = osp.join(trained_run, 'iter_6.pth')
    with pytest.raises(pickle.UnpicklingError):  # numpy values
        torch.load(path, weights_only=True)
    assert disallowed_globals(path) == []
    safe = load_local_checkpoint(path, map_location='cpu')
    full = torch.load(path, map_location='cpu', weights_only=False)
    assert safe.keys() == full.keys()
    for key, value in full['state_dict'].items():
        assert torch.equal(value, safe['state_dict'][key]), key
    assert safe['optimizer']['param_groups'] == full['optimizer'][
        'param_groups']
    hub, ref = safe['message_hub'], full['message_hub']
    assert hub['runtime_info'].keys() == ref['runtime_info'].keys()
    loss = hub['log_scalars']['train/loss']
    assert loss.current() == ref['log_scalars']['train/loss'].current()
    assert loss.mean() == ref['log_scalars']['train/loss'].mean()
    assert safe['param_schedulers'] == full['param_schedulers']
    assert safe['meta']['cfg'] == full['meta']['cfg']

    # --resume (last_checkpoint names iter_6.pth) and the exporter
    assert checkpoint_problem(path) is None
    assert resolve_resume_checkpoint(trained_run, 'auto') is None
    meta = export_checkpoint(path, str(tmp_path / 'export'))
    assert meta['aux_head'] == 'AugLocalAuxHead'
    assert meta['max_epochs'] == 1 and meta['iter'] == 6
    # the analysis tools
    model, _, loaded = load_work_dir_model(trained_run)
    assert osp.samefile(loaded, path)
    for key, value in model.state_dict().items():
        assert torch.equal(value, full['state_dict'][key]), key
    # tools/test.py (load_from of a test run)
    config = tmp_path / 'with_test.py'
    with open(osp.join(trained_run, 'tiny_auglocal.py')) as f:
        dumped = f.read()
    config.write_text(dumped + 'test_dataloader = val_dataloader\n'
                      'test_evaluator = val_evaluator\n'
                      "test_cfg = dict(type='TestLoop')\n")
    result = subprocess.run(
        [sys.executable, 'tools/test.py', str(config), path, '--work-dir',
         str(tmp_path / 'test'), '--out-metrics',
         str(tmp_path / 'metrics.json')],
        cwd=ROOT, env=train_env(), capture_output=True, text=True,
        timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    assert 'Load checkpoint from' in result.stdout + result.stderr
    assert osp.isfile(tmp_path / 'metrics.json')


# ------------------------------------------------------ decompression bomb
def _png(path: str, width: int, height: int, rows: int) -> str:
    """A grey PNG of ``width`` x ``height`` whose pixels are all zero;
    only the first ``rows`` rows are stored (all of them for a valid
    file)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack('>I', len(data)) + kind + data +
                struct.pack('>I', zlib.crc32(kind + data)))

    packer = zlib.compressobj(9)
    row = bytes(width + 1)  # filter byte + pixels
    data = b''.join(packer.compress(row) for _ in range(rows))
    data += packer.flush()
    with open(path, 'wb') as f:
        f.write(b'\x89PNG\r\n\x1a\n')
        f.write(chunk(b'IHDR', struct.pack('>IIBBBBB', width, height, 8, 0,
                                           0, 0, 0)))
        f.write(chunk(b'IDAT', data))
        f.write(chunk(b'IEND', b''))
    return path


@pytest.fixture(scope='module')
def bombs(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp('bombs')
    return dict(
        # 100 M pixels (0.3 GB as RGB) in a 100 KB file
        valid=_png(str(folder / 'bomb.png'), 10000, 10000, 10000),
        # 900 M pixels announced (2.7 GB as RGB), one row stored
        huge=_png(str(folder / 'huge.png'), 30000, 30000, 1))


def test_decompression_bomb_is_refused_before_decoding(bombs):
    size = osp.getsize(bombs['valid'])
    assert size < 200_000
    loader = LoadImageTensor()
    with pytest.raises(OSError) as info:
        loader(dict(img_path=bombs['valid']))
    print(info.value)
    assert str(info.value) == (
        f"refusing to decode image {bombs['valid']!r} ({size} bytes): its "
        'header says 10000 x 10000 = 100000000 pixels, more than the '
        '89478485 an image may have (PIL.Image.MAX_IMAGE_PIXELS, or '
        'max_pixels of LoadImageTensor); a decompression bomb, or an image '
        'to downscale before training')
    with pytest.raises(OSError, match='900000000 pixels'):
        loader(dict(img_path=bombs['huge']))
    # a larger bound lets a (real) large image through
    small = _png(osp.join(osp.dirname(bombs['valid']), 'ok.png'), 300, 200,
                 200)
    assert loader(dict(img_path=small))['img'].shape == (3, 200, 300)
    with pytest.raises(OSError, match='more than the 1000 an image'):
        LoadImageTensor(max_pixels=1000)(dict(img_path=small))


def test_check_images_lists_the_bomb(bombs, tmp_path, capsys):
    from auglocal_det.testing import generate_imagenet_shapes
    tool = load_tool('tools/misc/check_images.py', 'check_images_bomb')
    root = str(tmp_path / 'shapes')
    generate_imagenet_shapes(
        root,
        num_train_per_class=1,
        num_val_per_class=1,
        image_size=16,
        progress=False)
    folder = osp.join(root, 'train', sorted(os.listdir(
        osp.join(root, 'train')))[0])
    bomb = shutil.copy(bombs['valid'], osp.join(folder, 'bomb.png'))
    config = osp.join(ROOT, 'configs/demo/auglocal_r34_synthetic.py')
    assert tool.main([config, '--data-root', root, '--workers', '1',
                      '--splits', 'train']) == 1
    out = capsys.readouterr().out
    print(out)
    assert f'  {bomb}: refusing to decode image {bomb!r}' in out
    assert 'decompression bomb' in out
