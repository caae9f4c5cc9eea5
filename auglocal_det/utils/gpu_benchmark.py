"""Check the CUDA paths and measure BP against AugLocal on one GPU.

The library side of ``tools/analysis_tools/gpu_benchmark.py``. It runs the
CUDA tests of the suite (``pytest -m cuda``), then measures, with
:func:`~.benchmark.measure_rule`, three ResNet-34 rules at 224 px with
bfloat16 autocast and the channels-last format: BP
(``configs/bp_r34_imagenet.py``), AugLocal d = 4 as configured in
``configs/auglocal_r34_imagenet.py`` and its sibling with the auxiliary
heads resting in host memory (``configs/auglocal_r34_offload_imagenet.py``).
Peak memory is ``torch.cuda.max_memory_allocated`` over the timed
iterations (the first iteration warms up and creates the optimizer
state); time is the median of the timed iterations, synchronised.

:func:`markdown_table` writes the result in the form of the AugLocal
paper's GPU-memory table, next to the paper's own ResNet-34 row, quoted
as the paper's.
"""
import gc
import os.path as osp
import subprocess
import sys
import time
from typing import Any, Callable, Dict, List, Optional

import torch

from auglocal_det.errors import InputError
from auglocal_det.fileio import atomic_write, save_json_atomic

from .benchmark import add_ratios, measure_rule, parse_rule

__all__ = [
    'CUDA_TESTS', 'PAPER_ROW', 'RULES', 'check_options', 'require_cuda',
    'pytest_command',
    'run_cuda_tests', 'largest_batch', 'measure_gpu_rules', 'markdown_table',
    'write_report'
]

#: The suite's CUDA tests, relative to the repository's root.
CUDA_TESTS = 'tests/test_cuda'
#: Key and config file (under ``configs/``) of each measured rule.
RULES = dict(
    bp='bp_r34_imagenet.py',
    auglocal='auglocal_r34_imagenet.py',
    offload='auglocal_r34_offload_imagenet.py')
#: The AugLocal paper's ResNet-34 row of its GPU-memory table.
PAPER_ROW = dict(
    network='ResNet-34 (L = 17), ImageNet',
    bp_gb=42.95,
    auglocal_gb=29.04,
    change='\u221232.4 %',
    hardware='RTX 3090s',
    citation='Ma, Wu, Si, Tan, "Scaling Supervised Local Learning with '
    'Augmented Auxiliary Networks", ICLR 2024 (arXiv 2402.17318), '
    'GPU-memory table')
#: Bytes of the tables' GB.
GB = 1e9


def require_cuda() -> None:
    """Refuse to go on without a visible CUDA device.

    Raises:
        InputError: If ``torch.cuda.is_available()`` is False.
    """
    if not torch.cuda.is_available():
        raise InputError(
            'no CUDA device is visible (torch.cuda.is_available() is '
            'False); run this on a machine with a GPU and a CUDA build of '
            'torch')


def check_options(batch_size: int, iters: int,
                  bp_max_batch: Optional[int] = None) -> None:
    """Check the measurement's options.

    Args:
        batch_size (int): Images per iteration, at least 1.
        iters (int): Timed iterations, at least 2.
        bp_max_batch (int, optional): Upper end of the search for BP's
            largest batch, at least ``batch_size``.

    Raises:
        InputError: For a value out of range.
    """
    if batch_size < 1:
        raise InputError(f'--batch-size must be positive, got {batch_size}')
    if iters < 2:
        raise InputError(f'--iters must be at least 2, got {iters}')
    if bp_max_batch is not None and bp_max_batch < batch_size:
        raise InputError(
            f'--bp-max-batch ({bp_max_batch}) must be at least '
            f'--batch-size ({batch_size})')


def pytest_command(root: str) -> List[str]:
    """The command that runs the suite's CUDA tests.

    Args:
        root (str): The repository's root.

    Returns:
        list[str]: The command, run in ``root``.
    """
    return [
        sys.executable, '-m', 'pytest', '-m', 'cuda',
        osp.join(root, CUDA_TESTS), '-q', '-p', 'no:cacheprovider'
    ]


def run_cuda_tests(root: str, timeout: float = 300) -> Dict[str, Any]:
    """Run the CUDA tests in a subprocess; their output goes through.

    Args:
        root (str): The repository's root.
        timeout (float): Seconds before the run is stopped. Defaults to
            300.

    Returns:
        dict: ``command``, ``returncode`` (0: every test passed),
        ``summary`` (pytest's last line) and ``seconds``.
    """
    command = pytest_command(root)
    start = time.perf_counter()
    done = subprocess.run(
        command, cwd=root, capture_output=True, text=True, timeout=timeout)
    sys.stdout.write(done.stdout)
    sys.stderr.write(done.stderr)
    lines = [ln for ln in done.stdout.splitlines() if ln.strip()]
    return dict(
        command=' '.join(command[1:]),
        returncode=done.returncode,
        summary=lines[-1] if lines else '',
        seconds=time.perf_counter() - start)


def largest_batch(fits: Callable[[int], bool], start: int, limit: int,
                  step: int = 8) -> Optional[int]:
    """The largest batch size up to ``limit`` for which ``fits`` holds.

    Doubles from ``start`` until a size does not fit, then bisects down
    to a multiple of ``step``. ``fits`` is assumed to hold for every size
    below one that fits.

    Args:
        fits (callable): Whether one batch size fits in memory.
        start (int): The first size tried.
        limit (int): The largest size tried.
        step (int): Granularity of the bisection. Defaults to 8.

    Returns:
        int | None: The size, or None if not even ``min(start, step)``
        fits.
    """
    good, bad = 0, None
    size = min(start, limit)
    while size <= limit:
        if not fits(size):
            bad = size
            break
        good = size
        if size == limit:
            break
        size = min(size * 2, limit)
    if bad is None:
        return good
    if good == 0:
        low = min(step, bad - 1)
        if low < 1 or not fits(low):
            return None
        good = low
    while bad - good > step:
        mid = (good + bad) // 2 // step * step
        if mid <= good:
            break
        if fits(mid):
            good = mid
        else:
            bad = mid
    return good


def _measure(spec: Any, batch_size: int, iters: int) -> Dict[str, Any]:
    """One rule on the GPU; an out-of-memory error becomes a result."""
    try:
        return measure_rule(
            spec, torch.device('cuda'), batch_size, 224, iters=iters,
            warmup=1, amp=True, channels_last=True, measure_rss=False,
            measure_live=False)
    except torch.cuda.OutOfMemoryError:
        return dict(rule=spec.name, config=spec.config, base=spec.base,
                    options=list(spec.options), out_of_memory=True,
                    memory=dict(cuda_peak_bytes=None), time=None)
    finally:
        gc.collect()  # what a failed build left behind
        torch.cuda.empty_cache()


def measure_gpu_rules(config_dir: str,
                      batch_size: int = 128,
                      iters: int = 10,
                      bp_max_batch: Optional[int] = None,
                      log: Callable[[str], None] = print) -> Dict[str, Any]:
    """Measure BP, AugLocal and its offload sibling on the GPU.

    Args:
        config_dir (str): The repository's ``configs/``.
        batch_size (int): Images per iteration. Defaults to 128.
        iters (int): Timed iterations, at least 2. Defaults to 10.
        bp_max_batch (int, optional): Also search the largest batch, up to
            this size, with which BP trains. Defaults to None.
        log (callable): Progress messages. Defaults to ``print``.

    Raises:
        InputError: For an option out of range, or without a GPU.

    Returns:
        dict: ``device``, ``torch``, ``cuda``, the setting, ``rules``
        (key -> the result of :func:`~.benchmark.measure_rule`, with
        ``ratios`` to BP) and ``bp_max_batch``.
    """
    check_options(batch_size, iters, bp_max_batch)
    require_cuda()
    results = {}
    for key, config in RULES.items():
        spec = parse_rule(
            'bp' if key == 'bp' else osp.join(config_dir, config),
            config_dir)
        log(f'measuring {key} ({config}), batch {batch_size} ...')
        results[key] = _measure(spec, batch_size, iters)
    add_ratios([r for r in results.values() if r.get('memory')
                and not r.get('out_of_memory')])
    largest = None
    if bp_max_batch:
        spec = parse_rule('bp', config_dir)

        def fits(size: int) -> bool:
            log(f'BP at batch {size} ...')
            return not _measure(spec, size, 2).get('out_of_memory')

        largest = largest_batch(fits, batch_size, bp_max_batch)
    return dict(
        device=torch.cuda.get_device_name(),
        torch=torch.__version__,
        cuda=torch.version.cuda,
        network='ResNet-34',
        image_size=224,
        batch_size=batch_size,
        autocast='bfloat16',
        channels_last=True,
        iters=iters,
        rules=results,
        bp_max_batch=dict(limit=bp_max_batch, largest=largest)
        if bp_max_batch else None)


def _peak_gb(result: Optional[Dict[str, Any]]) -> Optional[float]:
    if not result or result.get('out_of_memory'):
        return None
    peak = (result.get('memory') or {}).get('cuda_peak_bytes')
    return None if peak is None else peak / GB


def _seconds(result: Optional[Dict[str, Any]]) -> Optional[float]:
    timing = (result or {}).get('time') or {}
    return timing.get('median')


def _change(value: Optional[float], ref: Optional[float]) -> str:
    if value is None or not ref:
        return ''
    return f' ({(value / ref - 1) * 100:+.1f} %)'.replace('-', '\u2212')


def _gb(value: Optional[float]) -> str:
    return 'out of memory' if value is None else f'{value:.2f}'


def markdown_table(report: Dict[str, Any]) -> str:
    """The result as the paper's GPU-memory table, with its row.

    Args:
        report (dict): What :func:`measure_gpu_rules` returns (``tests``
            added by the tool, optional).

    Returns:
        str: Markdown: a heading, the table and its notes.
    """
    rules = report['rules']
    bp, augl, off = (rules.get(k) for k in ('bp', 'auglocal', 'offload'))
    gbs = [_peak_gb(r) for r in (bp, augl, off)]
    secs = [_seconds(r) for r in (bp, augl, off)]
    times = ', '.join(
        f'{name} {s:.3f} s' + ('' if i == 0 or not secs[0] else
                               f' ({s / secs[0]:.2f}x BP)')
        for i, (name, s) in enumerate(zip(('BP', 'AugLocal', 'offload'),
                                          secs)) if s is not None)
    network = (f"{report['network']}, {report['image_size']} px, batch "
               f"{report['batch_size']} (measured here, "
               f"{report['device']})")
    paper = PAPER_ROW
    lines = [
        f"## GPU memory: {report['network']} on {report['device']}", '',
        '| Network | BP GB | AugLocal GB (change vs BP) | offload GB | '
        'time per iteration |', '|---|---|---|---|---|',
        f'| {network} | {_gb(gbs[0])} | {_gb(gbs[1])}'
        f'{_change(gbs[1], gbs[0])} | {_gb(gbs[2])}'
        f'{_change(gbs[2], gbs[0])} | {times or "not measured"} |',
        f"| {paper['network']} (the paper's, on {paper['hardware']}) | "
        f"{paper['bp_gb']:.2f} | {paper['auglocal_gb']:.2f} "
        f"({paper['change']}) | | |", '',
        f"Measured: `torch.cuda.max_memory_allocated` over the "
        f"{report['iters']} timed iterations after one warm-up iteration "
        f"(GB = 10^9 bytes), median seconds per iteration, synchronised; "
        f"{report['autocast']} autocast, channels-last, torch "
        f"{report['torch']}, CUDA {report['cuda']}. AugLocal is "
        f"`configs/{RULES['auglocal']}` (d = 4 and its memory options), "
        f"offload `configs/{RULES['offload']}`, BP "
        f"`configs/{RULES['bp']}`.",
        f"The paper's row is quoted from {paper['citation']}; the authors "
        f"measured it on {paper['hardware']}, with their own code and "
        'setting.'
    ]
    largest = (report.get('bp_max_batch') or {})
    if largest:
        found = largest.get('largest')
        lines.append(
            f"Largest BP batch that trains (searched up to "
            f"{largest['limit']}): "
            + ('none' if found is None else str(found)) + '.')
    tests = report.get('tests')
    if tests:
        lines.append(f"CUDA tests (`{tests['command']}`): "
                     f"{tests['summary'] or 'no output'}.")
    return '\n'.join(lines) + '\n'


def write_report(report: Dict[str, Any], out_dir: str) -> Dict[str, str]:
    """Write the JSON file and the markdown table.

    Args:
        report (dict): What :func:`measure_gpu_rules` returns.
        out_dir (str): The folder, created if missing.

    Returns:
        dict: ``json`` and ``markdown``, the two paths.
    """
    paths = dict(
        json=osp.join(out_dir, 'gpu_benchmark.json'),
        markdown=osp.join(out_dir, 'gpu_benchmark.md'))
    save_json_atomic(report, paths['json'])
    table = markdown_table(report).encode('utf-8')
    atomic_write(paths['markdown'], lambda f: f.write(table))
    return paths
