"""tools/analysis_tools/count_params_flops.py on two paper configs."""
import os.path as osp
import runpy
import sys

import pytest

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
TOOL = osp.join(ROOT, 'tools', 'analysis_tools', 'count_params_flops.py')

pytestmark = pytest.mark.usefixtures('single_thread')


def test_table_rows(capsys):
    configs = [
        osp.join(ROOT, 'configs', 'auglocal',
                 'auglocal-d2_r32_400e_cifar10.py'),
        osp.join(ROOT, 'configs', 'bp', 'bp_r32_400e_cifar10.py'),
    ]
    argv = sys.argv
    sys.argv = [TOOL, *configs]
    try:
        runpy.run_path(TOOL, run_name='__main__')
    finally:
        sys.argv = argv
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith('| Config | K | Aux nets |')
    # the official code's ResNet-32 AugLocal d = 2: 1,341,058 auxiliary
    # parameters, 0.174 GMACs with the backbone (0.069)
    assert lines[2] == ('| auglocal-d2_r32_400e_cifar10.py | 14 | 13 | '
                        '0.467 | 1.341 | 0.069 | 0.174 |')
    assert lines[3] == ('| bp_r32_400e_cifar10.py | 1 | 0 | 0.467 | 0.000 | '
                        '0.069 | 0.069 |')
