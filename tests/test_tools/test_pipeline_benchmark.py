"""Test of tools/analysis_tools/pipeline_benchmark.py on a tiny setting.

AugLocal d = 2 on CIFAR ResNet-32 at 8 x 8 pixels, batch 2, one warm-up and
one timed iteration, run as users run it (a script that starts its own
processes). Nothing here asserts a speed: only that every case ran, that
the pipeline's stages cover the network and that the figures are
consistent.
"""
import json
import os.path as osp
import subprocess
import sys

import pytest

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
TOOL = osp.join(ROOT, 'tools', 'analysis_tools', 'pipeline_benchmark.py')
CONFIG = osp.join(ROOT, 'configs', 'auglocal',
                  'auglocal-d2_r32_400e_cifar10.py')


@pytest.mark.timeout(600)
def test_cases_memory_and_scaling(tmp_path):
    out = tmp_path / 'pipe.json'
    proc = subprocess.run(
        [
            sys.executable, TOOL, '--config', CONFIG, '--image-size', '8',
            '--batch-size', '2', '--warmup', '1', '--iters', '1',
            '--modes', 'a', 'c', 'd', '--balance', 'time', '--rounds', '2',
            '--scale-image-size', '8', '--scale-batch-size', '4', '--out',
            str(out)
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=580)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(out.read_text())
    for mode in ('a', 'c', 'd'):
        res = results[mode]
        assert len(res['rounds']) == 2 and min(res['rounds']) > 0
        assert res['images_per_s'] > 0 and res['ratio_to_a'] > 0
    assert results['a']['ratio_to_a'] == 1
    # the local modules of the config, split into two stages by time
    num_modules = len(results['a']['module_seconds'])
    assert num_modules > 2
    sizes = results['c']['sizes']
    assert len(sizes) == 2 and sum(sizes) == num_modules
    assert min(sizes) >= 1
    assert 0 < results['c']['predicted_efficiency'] <= 1
    # memory per worker: each holds less optimizer state than (a)
    (worker0, worker1), (seq, ) = (results['c']['workers'],
                                   results['a']['workers'])
    for worker in (worker0, worker1):
        assert 0 < worker['peak_live_bytes'] < seq['peak_live_bytes']
        assert worker['peak_rss_bytes'] > 0
    assert 'workers' not in results['d']  # (a)'s memory, twice
    rows = results['scaling']['pipeline']
    # P = 2, 4, 8 (16 is more stages than this network has modules)
    assert sorted({row['stages'] for row in rows}) == [2, 4, 8]
    assert all(row['images_per_s'] > 0 for row in rows)
    assert '(c) stages: modules 0..' in proc.stdout
