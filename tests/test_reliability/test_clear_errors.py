"""Errors that were tracebacks or named no file: one line naming the file,
key or option at fault."""
import argparse
import io
import os.path as osp
import runpy

import pytest
from mmengine.config import Config
from PIL import Image
from reliability_utils import ROOT, run_train

from auglocal_det.datasets.transforms import LoadImageTensor
from auglocal_det.errors import InputError
from auglocal_det.utils.cli import CfgOptionsAction, load_config
from auglocal_det.utils.config_errors import (
    check_cfg_options,
    check_config_values,
)


def _first_line(result) -> str:
    assert result.returncode == 1, result.stderr[-3000:]
    assert 'Traceback' not in result.stderr
    line = result.stderr.strip().splitlines()[0]
    print(line)
    return line


# --------------------------------------------------------------- images
def _animated_gif() -> bytes:
    frames = [Image.new('RGB', (12, 12), (60 * i, 0, 0)) for i in range(3)]
    out = io.BytesIO()
    frames[0].save(out, 'GIF', save_all=True, append_images=frames[1:])
    return out.getvalue()


@pytest.mark.parametrize('content,expected', [
    (b'', "cannot decode image '{path}': the file is empty (0 bytes"),
    (_animated_gif(), "cannot decode image '{path}' ({size} bytes): it is a "
     'GIF of 3 frames (an animation), not a still image'),
])
def test_empty_and_animated_images_are_named(tmp_path, content, expected):
    """Before: ``ValueError: both buffer length (0) ...`` and a
    ``PackClsInputs`` type error, naming no file; the checker crashed on
    the first and passed the second."""
    path = str(tmp_path / 'n0001' / 'img.JPEG')
    (tmp_path / 'n0001').mkdir()
    with open(path, 'wb') as f:
        f.write(content)
    message = expected.format(path=path, size=len(content))
    with pytest.raises(OSError) as info:
        LoadImageTensor()(dict(img_path=path))
    print(info.value)
    assert str(info.value).startswith(message)
    tool = runpy.run_path(osp.join(ROOT, 'tools', 'misc', 'check_images.py'))
    failures = tool['check_chunk']([path])[0]
    assert [p for p, _ in failures] == [path]
    assert failures[0][1].startswith(message)


# --------------------------------------------------------- --cfg-options
def _parse(*items):
    parser = argparse.ArgumentParser()
    parser.add_argument('--cfg-options', nargs='+', action=CfgOptionsAction)
    return parser.parse_args(['--cfg-options', *items]).cfg_options


def test_cfg_options_keep_spaces_in_values():
    """Before (MMEngine's DictAction): 'dé data ü' became 'dédataü'."""
    assert _parse("a='dé data ü'", 'b=dé data ü', 'c=[1, 2]',
                  'd=(x y, z)', 'e=None', 'f=1e-3', 'g=[a,[b, c d]]',
                  'h=True', 'i=x,y') == dict(
                      a='dé data ü',
                      b='dé data ü',
                      c=[1, 2],
                      d=('x y', 'z'),
                      e=None,
                      f=1e-3,
                      g=['a', ['b', 'c d']],
                      h=True,
                      i=['x', 'y'])


def test_path_with_spaces_reaches_the_dataset(tiny_config, tmp_path):
    missing = str(tmp_path / 'dé data ü')
    line = _first_line(
        run_train(tiny_config, str(tmp_path / 'run'), '--cfg-options',
                  f"train_dataloader.dataset.data_root='{missing}'",
                  timeout=120))
    assert line.startswith(f"error: ImageNet: data root '{missing}'")


def test_key_into_none_names_the_delete_form():
    """Before: MMEngine's TypeError traceback ("cannot inherit from base")."""
    cfg = Config(dict(model=dict(type='LocalImageClassifier', aux_head=None)))
    with pytest.raises(InputError) as info:
        check_cfg_options(cfg, {'model.aux_head.depth': 2}, 'mmengine')
    print(info.value)
    assert str(info.value) == (
        '--cfg-options model.aux_head.depth: model.aux_head is None in the '
        "config, not a dict, so it has no key 'depth'. To set "
        'model.aux_head as a whole dict, replace it: --cfg-options '
        'model.aux_head._delete_=True model.aux_head.type=... followed by '
        'its other keys')
    check_cfg_options(
        cfg, {
            'model.aux_head._delete_': True,
            'model.aux_head.type': 'AugLocalAuxHead',
            'model.aux_head.depth': 2
        }, 'mmengine')


# --------------------------------------------------------------- configs
def test_config_syntax_error_names_the_file_and_line(tmp_path):
    """Before: ``File "<unknown>", line 1``."""
    bad = tmp_path / 'bad_base.py'
    bad.write_text('a = 1\nb = dict(x=1\n')
    child = tmp_path / 'child.py'
    child.write_text("_base_ = './bad_base.py'\nc = 3\n")
    with pytest.raises(InputError) as info:
        load_config(str(child))
    print(info.value)
    assert str(info.value).startswith(
        f"config file '{bad}' is not valid Python: '(' was never closed "
        '(line 2')
    assert str(info.value).endswith(f"; it is a _base_ of '{child}'")


@pytest.mark.parametrize('options,expected', [
    ({'train_dataloader.batch_size': 0},
     'train_dataloader.batch_size=0: the batch size must be'),
    ({'val_dataloader.batch_size': -2},
     'val_dataloader.batch_size=-2: the batch size must be'),
    ({'train_dataloader.persistent_workers': True},
     'train_dataloader.persistent_workers=True needs worker processes, but '
     'train_dataloader.num_workers=0'),
    ({'optim_wrapper.optimizer.lr': float('nan')},
     'optim_wrapper.optimizer.lr=nan: the learning rate must be a finite'),
    ({'train_cfg.max_epochs': 0}, 'train_cfg.max_epochs=0: a schedule'),
])
def test_values_that_cannot_train_name_their_key(tiny_config, options,
                                                 expected):
    cfg = Config.fromfile(tiny_config)
    cfg.merge_from_dict(options)
    with pytest.raises(InputError) as info:
        check_config_values(cfg)
    print(info.value)
    assert str(info.value).startswith(expected)


def test_config_values_of_the_tiny_run_are_accepted(tiny_config):
    check_config_values(Config.fromfile(tiny_config))


def test_train_py_prints_one_line_for_a_batch_size_of_0(tiny_config,
                                                        tmp_path):
    """Before: a ValueError traceback from PyTorch's sampler."""
    line = _first_line(
        run_train(tiny_config, str(tmp_path / 'run'), '--cfg-options',
                  'train_dataloader.batch_size=0', timeout=120))
    assert line.startswith('error: train_dataloader.batch_size=0: ')
