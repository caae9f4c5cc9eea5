"""Tests of tools/analysis_tools/gpu_benchmark.py that need no GPU.

The options, the one-line refusal where no CUDA device is visible, the
search of the largest batch and the table written from a result.
"""
import json
import os
import os.path as osp
import subprocess
import sys

import pytest
from common_utils import ROOT, load_tool

from auglocal_det.errors import InputError
from auglocal_det.utils.gpu_benchmark import (
    CUDA_TESTS,
    check_options,
    largest_batch,
    markdown_table,
    pytest_command,
    write_report,
)

TOOL = 'tools/analysis_tools/gpu_benchmark.py'
tool = load_tool(TOOL, 'gpu_benchmark_tool')


def _result(rule, base, peak_bytes, seconds):
    return dict(
        rule=rule,
        config=f'configs/{rule}.py',
        base=base,
        options=[],
        memory=dict(cuda_peak_bytes=peak_bytes),
        time=dict(median=seconds))


#: A result as measure_gpu_rules returns it, with made-up figures.
CANNED = dict(
    device='Test GPU 80GB',
    torch='2.0.0',
    cuda='12.1',
    network='ResNet-34',
    image_size=224,
    batch_size=128,
    autocast='bfloat16',
    channels_last=True,
    iters=10,
    rules=dict(
        bp=_result('bp', 'bp', 20_000_000_000, 0.1),
        auglocal=_result('auglocal_r34_imagenet', 'config', 12_000_000_000,
                         0.3),
        offload=_result('auglocal_r34_offload_imagenet', 'config',
                        5_000_000_000, 0.45)),
    bp_max_batch=dict(limit=1024, largest=384),
    tests=dict(command='-m pytest -m cuda tests/test_cuda', returncode=0,
               summary='6 passed in 20.00s', seconds=20.0))


def test_options():
    args = tool.parse_args([])
    assert (args.out_dir, args.iters, args.batch_size) == (
        osp.join('work_dirs', 'gpu_benchmark'), 10, 128)
    assert not args.skip_tests and args.bp_max_batch is None
    args = tool.parse_args(['--bp-max-batch', '--skip-tests'])
    assert args.bp_max_batch == 1024 and args.skip_tests
    args = tool.parse_args(['--bp-max-batch', '512', '--batch-size', '64',
                            '--iters', '3', '--out-dir', 'x'])
    assert (args.bp_max_batch, args.batch_size, args.iters,
            args.out_dir) == (512, 64, 3, 'x')
    check_options(128, 2, 128)
    with pytest.raises(InputError, match='--iters must be at least 2'):
        check_options(128, 1)
    with pytest.raises(InputError, match='--batch-size must be positive'):
        check_options(0, 10)
    with pytest.raises(InputError, match='--bp-max-batch'):
        check_options(128, 10, 64)


def _run_without_gpu(*args):
    env = dict(os.environ, CUDA_VISIBLE_DEVICES='')
    env.pop('AUGLOCAL_DEBUG', None)
    return subprocess.run([sys.executable, TOOL, *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize('args,message', [
    ((), 'no CUDA device is visible'),
    (('--iters', '1'), '--iters must be at least 2'),
])
def test_one_line_refusal(tmp_path, args, message):
    """Without a GPU (or with a bad option) the tool stops at once with
    one ``error:`` line, writes nothing and runs no test."""
    out_dir = tmp_path / 'out'
    done = _run_without_gpu('--out-dir', str(out_dir), *args)
    assert done.returncode == 1
    errors = [ln for ln in done.stderr.splitlines()
              if ln.startswith('error:')]
    assert len(errors) == 1 and message in errors[0], done.stderr
    assert 'Traceback' not in done.stderr
    assert 'passed' not in done.stdout and not out_dir.exists()


def test_pytest_command_selects_the_cuda_tests():
    command = pytest_command(ROOT)
    assert command[:3] == [sys.executable, '-m', 'pytest']
    assert command[command.index('-m', 3) + 1] == 'cuda'
    assert osp.isdir(osp.join(ROOT, CUDA_TESTS))
    assert osp.join(ROOT, CUDA_TESTS) in command


@pytest.mark.parametrize('capacity,start,limit,expected', [
    (1000, 128, 1024, 1000 // 8 * 8),
    (200, 128, 1024, 200),
    (2000, 128, 1024, 1024),
    (130, 128, 1024, 128),
    (100, 128, 1024, 96),
    (4, 128, 1024, None),
    (300, 100, 1000, 296),
])
def test_largest_batch(capacity, start, limit, expected):
    tried = []

    def fits(size):
        tried.append(size)
        return size <= capacity

    found = largest_batch(fits, start, limit)
    if expected is None:
        assert found is None
    else:
        # within one step of the true largest size, never above it
        assert found is not None and found <= capacity
        assert found == expected or capacity - found < 8, (found, tried)
    assert len(tried) == len(set(tried)) and max(tried) <= limit


def test_table_from_a_result(tmp_path):
    table = markdown_table(CANNED)
    lines = table.splitlines()
    header = next(ln for ln in lines if ln.startswith('| Network'))
    assert header == ('| Network | BP GB | AugLocal GB (change vs BP) | '
                      'offload GB | time per iteration |')
    measured, paper = [ln for ln in lines if ln.startswith('| ResNet-34')]
    assert 'Test GPU 80GB' in measured and 'batch 128' in measured
    cells = [c.strip() for c in measured.split('|')[1:-1]]
    assert cells[1] == '20.00'
    assert cells[2] == '12.00 (\u221240.0 %)'
    assert cells[3] == '5.00 (\u221275.0 %)'
    assert cells[4] == ('BP 0.100 s, AugLocal 0.300 s (3.00x BP), '
                        'offload 0.450 s (4.50x BP)')
    cells = [c.strip() for c in paper.split('|')[1:-1]]
    assert "the paper's, on RTX 3090s" in cells[0]
    assert cells[1:3] == ['42.95', '29.04 (\u221232.4 %)']
    assert 'ICLR 2024' in table and 'arXiv 2402.17318' in table
    assert 'Largest BP batch that trains (searched up to 1024): 384.' \
        in table
    assert '6 passed' in table

    # a rule that did not fit, no search, no tests
    report = json.loads(json.dumps(CANNED))
    report['rules']['bp'] = dict(rule='bp', out_of_memory=True,
                                 memory=dict(cuda_peak_bytes=None),
                                 time=None)
    report.update(bp_max_batch=None, tests=None)
    table = markdown_table(report)
    measured = next(ln for ln in table.splitlines()
                    if 'measured here' in ln)
    cells = [c.strip() for c in measured.split('|')[1:-1]]
    assert cells[1:4] == ['out of memory', '12.00', '5.00']
    assert cells[4] == 'AugLocal 0.300 s, offload 0.450 s'
    assert 'Largest BP batch' not in table and 'CUDA tests' not in table

    paths = write_report(CANNED, str(tmp_path / 'out'))
    with open(paths['json']) as f:
        assert json.load(f) == CANNED
    with open(paths['markdown'], encoding='utf-8') as f:
        assert f.read() == markdown_table(CANNED)
