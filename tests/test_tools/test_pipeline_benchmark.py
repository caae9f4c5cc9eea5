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
import torch
from common_utils import tiny_auglocal_model

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
TOOL = osp.join(ROOT, 'tools', 'analysis_tools', 'pipeline_benchmark.py')
CONFIG = osp.join(ROOT, 'configs', 'auglocal',
                  'auglocal-d2_r32_400e_cifar10.py')


def run_tool(tmp_path, *args: str):
    """Run the tool on the config at 8 px, batch 2; its process and JSON.
    """
    out = tmp_path / 'pipe.json'
    proc = subprocess.run(
        [
            sys.executable, TOOL, '--config', CONFIG, '--image-size', '8',
            '--batch-size', '2', *args, '--out',
            str(out)
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=580)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc, json.loads(out.read_text())


@pytest.mark.timeout(600)
def test_cases_memory_and_scaling(tmp_path):
    proc, results = run_tool(
        tmp_path, '--warmup', '1', '--iters', '1', '--modes', 'a', 'c', 'd',
        'e', '--balance', 'time', '--rounds', '2', '--scale-image-size', '8',
        '--scale-batch-size', '4')
    for mode in ('a', 'c', 'd', 'e'):
        res = results[mode]
        assert len(res['rounds']) == 2 and min(res['rounds']) > 0
        assert res['images_per_s'] > 0 and res['ratio_to_a'] > 0
    assert results['a']['ratio_to_a'] == 1
    # the local modules of the config, split into two stages by time
    num_modules = len(results['a']['module_seconds'])
    assert num_modules > 2
    # every module's share of the update, by its parameter count
    update = results['a']['update_seconds']
    assert len(update) == num_modules and min(update) > 0
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
    # (e) ran the stages of (c), each on its own, side by side
    assert results['e']['round_sizes'] == results['c']['round_sizes']
    assert all(
        len(t) == 2 and min(t) > 0
        for t in results['e']['round_stage_seconds'])
    rows = results['scaling']['pipeline']
    # P = 2, 4, 8 (16 is more stages than this network has modules)
    assert sorted({row['stages'] for row in rows}) == [2, 4, 8]
    assert all(row['images_per_s'] > 0 for row in rows)
    assert '(c) stages: modules 0..' in proc.stdout


def _profile(step_flops, params):
    return dict(step_flops=list(step_flops), module_flops=list(step_flops),
                head_flops=0., out_bytes=[0] * len(step_flops),
                network_params=params, total_params=2 * params)


def test_scaling_model_update_time():
    """The update does not scale with the batch or the image size; the
    forward and backward do."""
    from auglocal_det.utils.pipeline_model import predict_scaling
    measured = _profile([1., 1., 1., 1.], 10)
    target = _profile([2., 2., 2., 2.], 10)  # a larger image
    compute, update = [1., 1., 1., 1.], [0.5, 0.5, 0.5, 0.5]
    out = predict_scaling(compute, measured, target, 4, 8, [2],
                          [float('inf')], 2, update_seconds=update)
    # each module: 1 s x 2 (FLOPs) x 2 (batch) + 0.5 s of update
    assert out['sequential_images_per_s'] == pytest.approx(8 / 18.)
    row, = out['pipeline']
    assert row['sizes'] == [2, 2]
    assert row['images_per_s'] == pytest.approx(8 / 9.)
    assert row['speedup_vs_sequential'] == pytest.approx(2.)
    # BP: the network's FLOPs (those of the modules here) and the update
    # of half of the parameters, at the same speed per parameter
    assert out['bp_images_per_s'] == pytest.approx(8 / (16. + 1.))
    without = predict_scaling(compute, measured, target, 4, 8, [2],
                              [float('inf')], 2)
    assert without['sequential_images_per_s'] == pytest.approx(8 / 16.)
    with pytest.raises(ValueError, match='3 update times for 4'):
        predict_scaling(compute, measured, target, 4, 8, [2],
                        [float('inf')], 2, update_seconds=update[:3])


@pytest.mark.timeout(600)
def test_memory_only_and_memory_model(tmp_path):
    """Each worker of (c) holds its own stage only, so the workers' live
    tensors add up to about (a)'s; the meta-device count of every stage
    matches what the workers measured."""
    proc, results = run_tool(
        tmp_path, '--modes', 'a', 'c', '--balance', '8', '6', '--memory-only',
        '--memory-model', '--scale-image-size', '16', '--scale-batch-size',
        '4', '--memory-stages', '2', '4')
    assert 'rounds' not in results['a'] or not results['a']['rounds']
    (seq, ) = results['a']['workers']
    workers = results['c']['workers']
    assert results['c']['sizes'] == [8, 6]
    live = [w['peak_live_bytes'] for w in workers]
    assert max(live) < 0.75 * seq['peak_live_bytes']
    assert sum(live) < 1.05 * seq['peak_live_bytes']
    model = results['memory_model']
    for mode, measured in (('a', [seq['peak_live_bytes']]), ('c', live)):
        counted = [s['iteration_bytes'] for s in model['measured_size'][mode]]
        assert counted == pytest.approx(measured, rel=0.02, abs=65536)
    scale = model['scale']
    assert sorted(scale, key=int) == ['1', '2', '4']
    assert scale['1']['fraction_of_sequential'] == 1
    assert 0 < scale['4']['fraction_of_sequential'] < \
        scale['2']['fraction_of_sequential'] < 1
    assert 'model at 16 px, batch 4' in proc.stdout


def test_stage_memory_counts_on_meta_as_on_cpu():
    """The meta-device count is the CPU count, and each stage holds the
    weights, gradients and optimizer state of its own parameters only."""
    import auglocal_det  # noqa: F401
    from auglocal_det.registry import MODELS
    from auglocal_det.utils.pipeline_model import stage_memory
    cfg = tiny_auglocal_model()
    counts = {}
    for device in ('cpu', 'meta'):
        with torch.device(device):
            model = MODELS.build(cfg)
        counts[device] = [
            stage_memory(model, sizes, batch_size=2, max_in_flight=2)
            for sizes in ([10], [6, 4])
        ]
    assert counts['meta'] == counts['cpu']
    (whole, ), (first, last) = counts['cpu']
    assert first['params'] + last['params'] == whole['params']
    # weights and momentum, 8 bytes a parameter, and some gradients
    for stage in (whole, first, last):
        assert stage['state_bytes'] > 8 * stage['params']
    assert max(first['state_bytes'],
               last['state_bytes']) < 0.6 * whole['state_bytes']
    assert whole['send_bytes'] == last['send_bytes'] == 0
    # two outputs of module 5 (8 channels, 8 x 8) in flight, batch 2, fp32
    assert first['send_bytes'] == 2 * 2 * 8 * 8 * 8 * 4
    assert first['total_bytes'] == first['iteration_bytes'] + \
        first['send_bytes']
