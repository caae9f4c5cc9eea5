"""Tests of tools/analysis_tools/benchmark.py on a tiny setting.

A CIFAR ResNet-20 on 16x16 images, batch 2, one warm-up and one timed
iteration. Nothing here asserts a speed: the figures of a shared machine
are noise; only their presence and consistency are checked.
"""
import importlib.util
import json
import os.path as osp

import pytest
import torch

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
TINY = [
    '--arch', 'resnet20', '--image-size', '16', '--batch-size', '2',
    '--iters', '1', '--warmup', '1', '--num-threads', '1'
]


def _load_tool():
    path = osp.join(ROOT, 'tools', 'analysis_tools', 'benchmark.py')
    spec = importlib.util.spec_from_file_location('benchmark_tool', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


benchmark = _load_tool()


@pytest.fixture(autouse=True)
def keep_threads():
    num_threads = torch.get_num_threads()
    yield
    torch.set_num_threads(num_threads)


def test_parse_rule():
    spec = benchmark.parse_rule('auglocal-d4-pyr+lw+cp')
    assert (spec.base, spec.aux_depth, spec.pyramid) == ('auglocal', 4, True)
    assert spec.options == ('lw', 'cp')
    assert benchmark.parse_rule('bp').is_reference
    assert not benchmark.parse_rule('bp+cp').is_reference
    with pytest.raises(ValueError, match='unknown rule'):
        benchmark.parse_rule('backprop')
    with pytest.raises(ValueError, match='unknown option'):
        benchmark.parse_rule('dgl+fast')
    with pytest.raises(FileNotFoundError):
        benchmark.parse_rule('configs/missing.py')


def test_rule_configs():
    args = benchmark.parse_args(TINY)
    model, wrapper = benchmark.build_cfgs(
        benchmark.parse_rule('auglocal-d3-pyr+cp+lw'), args)
    assert model['backbone']['with_cp'] and model['aux_head']['with_cp']
    assert model['aux_head']['pyramid'] and model['aux_head']['depth'] == 3
    assert model['image_size'] == 16 and model['num_classes'] == 10
    assert wrapper['type'] == 'LayerwiseLocalOptimWrapper'
    assert wrapper['optimizer'] == dict(
        type='SGD', lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-4)
    args = benchmark.parse_args(
        TINY + ['--cfg-options', 'optim_wrapper.optimizer.lr=0.5'])
    _, wrapper = benchmark.build_cfgs(benchmark.parse_rule('bp'), args)
    assert wrapper['optimizer']['lr'] == 0.5


def test_main_json_png_and_ratios(tmp_path, capsys):
    out_json = tmp_path / 'bench.json'
    out_png = tmp_path / 'bench.png'
    output = benchmark.main(TINY + [
        '--rules', 'bp', 'auglocal-d2+lw', '--out-json',
        str(out_json), '--out-png',
        str(out_png)
    ])
    assert out_png.stat().st_size > 0
    with open(out_json) as f:
        saved = json.load(f)
    assert saved['reference'] == output['reference'] == 'bp'
    assert saved['meta']['batch_size'] == 2
    assert saved['meta']['num_threads'] == 1
    results = {r['rule']: r for r in saved['results']}
    assert list(results) == ['bp', 'auglocal-d2+lw']
    bp, local = results['bp'], results['auglocal-d2+lw']

    assert bp['num_modules'] == 1 and local['num_modules'] == 10
    assert local['optim_wrapper'] == 'LayerwiseLocalOptimWrapper'
    assert bp['params']['aux'] == 0 and local['params']['aux'] > 0
    assert bp['params']['network'] == local['params']['network']
    for r in (bp, local):
        forward = r['flops']['forward']
        assert forward['total_macs'] == pytest.approx(
            forward['total_flops'] / 2)
        assert forward['total_flops'] == pytest.approx(
            forward['network_flops'] + forward['aux_total_flops'])
        # a training step costs more than its forward pass
        assert r['flops']['train_step'] > forward['total_flops']
        assert r['memory']['peak_bytes'] > r['memory']['baseline_bytes'] > 0
        timing = r['time']
        assert len(timing['samples']) == 1
        assert timing['min'] <= timing['median'] <= timing['max']
    assert local['flops']['forward']['network_flops'] == \
        bp['flops']['forward']['network_flops']

    assert bp['ratios']['memory'] == bp['ratios']['time'] == 1.0
    ratios = local['ratios']
    assert ratios['memory'] == pytest.approx(
        local['memory']['peak_bytes'] / bp['memory']['peak_bytes'])
    assert ratios['time'] == pytest.approx(
        local['time']['median'] / bp['time']['median'])
    assert ratios['train_flops'] == pytest.approx(
        local['flops']['train_step'] / bp['flops']['train_step'])
    assert ratios['forward_flops'] > 1
    assert ratios['time_per_flop'] == pytest.approx(
        ratios['time'] / ratios['train_flops'])

    printed = capsys.readouterr().out
    assert 'auglocal-d2+lw' in printed and 'x BP' in printed


def test_meta_device_counts_what_the_cpu_counts():
    """The memory-only dry run on the meta device gives the CPU's peak of
    live tensor bytes (up to a few bytes of scalars)."""
    rules = ['--rules', 'bp', 'dgl']
    cpu = benchmark.main(TINY + rules)['results']
    meta = benchmark.main(TINY + rules + ['--device', 'meta'])['results']
    for on_cpu, on_meta in zip(cpu, meta):
        assert on_meta['time'] is None
        assert on_meta['ratios']['time'] is None
        assert abs(on_meta['memory']['peak_bytes'] -
                   on_cpu['memory']['peak_bytes']) <= 64
        assert on_meta['flops']['train_step'] == on_cpu['flops'][
            'train_step']
