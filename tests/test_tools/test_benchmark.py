"""Tests of tools/analysis_tools/benchmark.py on a tiny setting.

The repository's ResNet-34 configs shrunk by ``--cfg-options`` to a
ResNet-18 with 8 base channels on 32x32 images, batch 2, one warm-up and
one timed iteration. Nothing here asserts a speed: the figures of a shared
machine are noise; only their presence and consistency are checked.
"""
import json
import os.path as osp

import pytest
import torch
from common_utils import load_tool

from auglocal_det.errors import InputError, InputFileNotFoundError
from auglocal_det.utils.benchmark import parse_rule, rule_configs

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIGS = osp.join(ROOT, 'configs')
TINY = [
    '--image-size', '32', '--batch-size', '2', '--iters', '1', '--warmup',
    '1', '--num-threads', '1', '--num-classes', '10', '--in-process',
    '--cfg-options', 'model.backbone.depth=18',
    'model.backbone.base_channels=8'
]


benchmark = load_tool('tools/analysis_tools/benchmark.py', 'benchmark_tool')


@pytest.fixture(autouse=True)
def keep_threads():
    num_threads = torch.get_num_threads()
    yield
    torch.set_num_threads(num_threads)


def test_parse_rule():
    spec = parse_rule('auglocal-d4-pyr+lw+cp', CONFIGS, tau=0.25)
    assert spec.config == osp.join(CONFIGS, 'auglocal_r34_imagenet.py')
    assert spec.overrides == {
        'model.aux_head.depth': 4,
        'model.aux_head.pyramid': True,
        'model.aux_head.tau': 0.25
    }
    assert spec.options == ('cp', 'lw')  # in the order they apply
    assert parse_rule('bp', CONFIGS).is_reference
    assert not parse_rule('bp+cp', CONFIGS).is_reference
    mlaan = osp.join(CONFIGS, 'mlaan_r34_imagenet.py')
    assert parse_rule('mlaan', CONFIGS).config == mlaan
    assert parse_rule(mlaan + '+plain', CONFIGS).base == 'config'
    with pytest.raises(InputError, match='unknown rule'):
        parse_rule('backprop', CONFIGS)
    with pytest.raises(InputError, match='unknown option'):
        parse_rule('dgl+fast', CONFIGS)
    with pytest.raises(InputFileNotFoundError):
        parse_rule('configs/missing.py', CONFIGS)


def test_rule_configs_follow_the_config_files():
    # the config's own memory options, then the rule's options on top
    model, wrapper = rule_configs(
        parse_rule('auglocal-d3', CONFIGS), image_size=32, num_classes=10)
    assert model['backbone']['stem_chunk_size'] == 16
    assert model['backbone']['with_cp']
    assert list(model['backbone']['cp_stages']) == [0]
    assert model['aux_head']['cp_max_downsample'] == 8
    assert model['aux_head']['depth'] == 3
    assert model['image_size'] == 32 and model['num_classes'] == 10
    assert wrapper['type'] == 'LayerwiseLocalOptimWrapper'
    assert wrapper['optimizer']['lr'] == 0.4  # the recipe's
    model, wrapper = rule_configs(
        parse_rule('auglocal-d3+plain', CONFIGS), 32)
    assert model['backbone']['stem_chunk_size'] is None
    assert not model['backbone']['with_cp']
    assert not model['aux_head'].get('with_cp')
    assert wrapper['type'] == 'LocalOptimWrapper'
    model, wrapper = rule_configs(
        parse_rule('auglocal-d3+plain+cp+lw', CONFIGS), 32)
    assert model['backbone']['with_cp'] and model['aux_head']['with_cp']
    # +cp checkpoints every block of every head
    assert 'cp_stages' not in model['backbone']
    assert 'cp_max_downsample' not in model['aux_head']
    assert wrapper['type'] == 'LayerwiseLocalOptimWrapper'
    # BP is the plain baseline
    model, wrapper = rule_configs(
        parse_rule('bp', CONFIGS), 32,
        cfg_options={'optim_wrapper.optimizer.lr': 0.5})
    assert model['rule'] == 'bp' and model['aux_head'] is None
    assert model['backbone']['stem_chunk_size'] is None
    assert not model['backbone']['with_cp']
    assert wrapper['optimizer']['lr'] == 0.5


def test_cfg_options_checked_as_in_train():
    """--cfg-options keeps spaces in values and refuses a key that would
    change nothing, naming it, as tools/train.py does."""
    args = benchmark.parse_args([
        '--cfg-options', "model.backbone.init_cfg.checkpoint='my data/b.pth'",
        'optim_wrapper.optimizer.lr=0.5'
    ])
    assert args.cfg_options == {
        'model.backbone.init_cfg.checkpoint': 'my data/b.pth',
        'optim_wrapper.optimizer.lr': 0.5
    }
    with pytest.raises(InputError, match='model.backbone.dpeth'):
        rule_configs(parse_rule('bp', CONFIGS), 32,
                     cfg_options={'model.backbone.dpeth': 18})
    with pytest.raises(InputError, match='train_cfg.max_epochs'):
        rule_configs(parse_rule('bp', CONFIGS), 32,
                     cfg_options={'train_cfg.max_epochs': 1})


def test_rule_wrapper_twins(tmp_path):
    """+plain, +lw and --amp switch the optimizer wrapper to its twins."""
    _, wrapper = rule_configs(
        parse_rule('auglocal-d3', CONFIGS), 32, amp=True)
    assert wrapper['type'] == 'AmpLayerwiseLocalOptimWrapper'
    assert wrapper['dtype'] == 'bfloat16'
    _, wrapper = rule_configs(
        parse_rule('auglocal-d3+plain', CONFIGS), 32, amp=True)
    assert wrapper['type'] == 'AmpLocalOptimWrapper'
    _, wrapper = rule_configs(parse_rule('bp+lw', CONFIGS), 32)
    assert wrapper['type'] == 'LayerwiseLocalOptimWrapper'
    config = tmp_path / 'plain_wrapper.py'
    config.write_text("model = dict(backbone=dict(type='LocalResNet', "
                      "depth=18))\n"
                      "optim_wrapper = dict(type='OptimWrapper')\n")
    _, wrapper = rule_configs(parse_rule(str(config), CONFIGS), 32, amp=True)
    assert wrapper['type'] == 'AmpOptimWrapper'
    with pytest.raises(InputError, match="'OptimWrapper'"):
        rule_configs(parse_rule(f'{config}+lw', CONFIGS), 32)


def test_main_json_png_trace_and_ratios(tmp_path, capsys):
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
    assert not saved['meta']['process_per_rule']
    results = {r['rule']: r for r in saved['results']}
    assert list(results) == ['bp', 'auglocal-d2+lw']
    bp, local = results['bp'], results['auglocal-d2+lw']

    assert bp['num_modules'] == 1 and local['num_modules'] == 9
    assert local['optim_wrapper'] == 'LayerwiseLocalOptimWrapper'
    assert bp['params']['aux'] == 0 and local['params']['aux'] > 0
    assert bp['params']['network'] == local['params']['network']
    for r in (bp, local):
        forward = r['flops']['forward']
        assert forward['total_macs'] == pytest.approx(
            forward['total_flops'] / 2)
        assert r['flops']['train_step'] > forward['total_flops']
        memory = r['memory']
        assert memory['peak_bytes'] > memory['baseline_bytes'] > 0
        assert memory['rss_peak_bytes'] is None  # one process for all
        trace = memory['peak_trace']
        assert trace and trace[0]['bytes'] >= trace[-1]['bytes']
        assert sum(e['bytes'] for e in trace) <= memory['peak_bytes']
        assert len(r['time']['samples']) == 1
        assert {e['kind'] for e in trace} <= {'param', 'grad', 'optim',
                                              'other'}
    # gradients alive at the peak were made by a backward pass
    assert all(e['op'] == 'convolution_backward.default'
               or e['op'].startswith(('mm', 'sum', 'native_batch_norm'))
               for e in bp['memory']['peak_trace'] if e['kind'] == 'grad')

    assert bp['ratios']['memory'] == bp['ratios']['time'] == 1.0
    ratios = local['ratios']
    assert ratios['memory'] == pytest.approx(
        local['memory']['peak_bytes'] / bp['memory']['peak_bytes'])
    assert ratios['train_flops'] == pytest.approx(
        local['flops']['train_step'] / bp['flops']['train_step'])
    assert ratios['time_per_flop'] == pytest.approx(
        ratios['time'] / ratios['train_flops'])

    printed = capsys.readouterr().out
    assert 'auglocal-d2+lw' in printed and 'alive at the peak' in printed


def test_process_per_rule_measures_the_resident_set(tmp_path):
    """Without --in-process every rule runs in its own process, which
    reports its peak resident set over the measured iteration."""
    argv = [a for a in TINY if a != '--in-process']
    output = benchmark.main(argv + ['--rules', 'bp', '--iters', '0'])
    result, = output['results']
    assert output['meta']['process_per_rule']
    memory = result['memory']
    assert memory['rss_peak_bytes'] >= memory['rss_before_bytes'] > 0
    # the resident set holds at least the live tensors
    assert memory['rss_peak_bytes'] > memory['peak_bytes']
    assert result['time'] is None


def test_meta_device_counts_what_the_cpu_counts():
    """The memory-only dry run on the meta device gives the CPU's peak of
    live tensor bytes (up to a few bytes of scalars), with every memory
    option of the AugLocal config on."""
    rules = ['--rules', 'bp', 'auglocal-d2']
    cpu = benchmark.main(TINY + rules)['results']
    meta = benchmark.main(TINY + rules + ['--device', 'meta'])['results']
    for on_cpu, on_meta in zip(cpu, meta):
        assert on_meta['time'] is None
        assert on_meta['ratios']['time'] is None
        assert abs(on_meta['memory']['peak_bytes'] -
                   on_cpu['memory']['peak_bytes']) <= 64
        assert on_meta['flops']['train_step'] == on_cpu['flops'][
            'train_step']


def test_interleaved_timing():
    """--interleave times the rules in alternating rounds, in one
    process."""
    output = benchmark.main(TINY + [
        '--rules', 'bp', 'auglocal-d2+plain', '--iters', '2', '--interleave'
    ])
    assert output['meta']['interleaved']
    for result in output['results']:
        assert len(result['time']['samples']) == 2
        assert result['memory']['peak_bytes'] > 0


def test_loader_benchmark_refuses_misspelt_option():
    """benchmark_loader.py checks --cfg-options as tools/train.py does and
    says what is wrong in one error line, before building anything."""
    import subprocess
    import sys
    root = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
    proc = subprocess.run(
        [
            sys.executable, 'tools/analysis_tools/benchmark_loader.py',
            'configs/auglocal_r34_imagenet.py', '--cfg-options',
            'train_dataloader.batch_sizee=4'
        ],
        cwd=root, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1
    assert 'Traceback' not in proc.stderr
    line = proc.stderr.strip().splitlines()[0]
    assert line.startswith(
        'error: --cfg-options train_dataloader.batch_sizee'), line
    assert 'did you mean batch_size' in line
