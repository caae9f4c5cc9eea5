"""tools/misc/check_images.py: finds the images training could not decode."""
import os.path as osp
import sys

import pytest
from common_utils import load_tool
from mmengine.config import Config

from auglocal_det.testing import generate_imagenet_shapes

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIG = osp.join(ROOT, 'configs/demo/auglocal_r34_synthetic.py')


@pytest.fixture(scope='module')
def tool():
    # importable by name, so that worker processes can unpickle its
    # functions
    yield load_tool('tools/misc/check_images.py', 'check_images',
                    register=True)
    del sys.modules['check_images']


@pytest.fixture
def data(tmp_path):
    """The demo's 8 classes, 2 train and 1 val image each."""
    root = str(tmp_path / 'shapes')
    generate_imagenet_shapes(
        root,
        num_train_per_class=2,
        num_val_per_class=1,
        image_size=16,
        progress=False)
    return root


def test_clean_data_passes(tool, data, capsys):
    assert tool.main([CONFIG, '--data-root', data, '--workers', '1']) == 0
    out = capsys.readouterr().out
    assert 'train: 16 images decoded' in out
    assert 'val: 8 images decoded' in out
    assert out.count(', 0 failed') == 2


def test_corrupt_and_truncated_images_are_listed(tool, data, capsys):
    broken = osp.join(data, 'val', 'square', 'square_00000.JPEG')
    with open(broken, 'wb') as f:
        f.write(b'\xff\xd8\xff\xe0 not a JPEG')
    truncated = osp.join(data, 'train', 'circle', 'circle_00001.JPEG')
    with open(truncated, 'rb') as f:
        head = f.read()[:100]
    with open(truncated, 'wb') as f:
        f.write(head)

    assert tool.main([CONFIG, '--data-root', data, '--workers', '1']) == 1
    out = capsys.readouterr().out
    assert f'  {truncated}: cannot decode image' in out
    assert f'  {broken}: cannot decode image' in out
    assert out.count(', 1 failed') == 2

    # the same answer from several processes, several chunks each
    cfg = Config.fromfile(CONFIG)
    paths = (tool.image_paths(cfg, 'train', data) +
             tool.image_paths(cfg, 'val', data))
    assert len(paths) == 24
    bad = tool.check_paths(paths, workers=2, chunk=5)
    assert sorted(p for p, _ in bad) == sorted([truncated, broken])


def test_missing_data_root_names_it(tool, tmp_path):
    missing = str(tmp_path / 'nothere')
    with pytest.raises(FileNotFoundError, match='nothere'):
        tool.main([CONFIG, '--data-root', missing])


def test_16_bit_images_are_listed_not_failed(tool, data, capsys):
    png = osp.join(data, 'train', 'circle', 'circle_00000.png')
    _write_16_bit_png(png)
    assert tool.main([CONFIG, '--data-root', data, '--workers', '1']) == 0
    out = capsys.readouterr().out
    assert 'train: 1 images have 16 bits per channel (training scales ' \
        'them to 8 bits):' in out
    assert f'  {png}' in out


def _write_16_bit_png(path: str) -> None:
    """A 16-bit RGB PNG (65535 * 0.6 in every channel)."""
    import cv2
    import numpy as np
    assert cv2.imwrite(path, np.full((16, 16, 3), 39321, dtype=np.uint16))
