"""Check the CUDA paths and measure BP against AugLocal on one GPU.

First the suite's CUDA tests (``pytest -m cuda tests/test_cuda``: host
offload, AMP, channels-last, NCCL data parallelism, ``tools/train.py
--amp``), then BP, AugLocal d = 4 and AugLocal with its auxiliary heads in
host memory at ResNet-34, 224 px, bfloat16 autocast, channels-last: peak
``torch.cuda.max_memory_allocated`` and time per iteration
(:mod:`auglocal_det.utils.gpu_benchmark`). Writes
``OUT_DIR/gpu_benchmark.json`` and ``OUT_DIR/gpu_benchmark.md``, the
latter in the form of the AugLocal paper's GPU-memory table next to the
paper's ResNet-34 row. About 8 minutes on one GPU; without one it stops
at once.

Example::

    python tools/analysis_tools/gpu_benchmark.py --out-dir work_dirs/gpu
"""
import argparse
import os.path as osp
import sys

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, ROOT)
import auglocal_det  # noqa: E402,F401  (registers the components)
from auglocal_det.utils.cli import run_with_clean_errors  # noqa: E402
from auglocal_det.utils.gpu_benchmark import (  # noqa: E402
    check_options,
    markdown_table,
    measure_gpu_rules,
    require_cuda,
    run_cuda_tests,
    write_report,
)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Run the CUDA tests, then measure the GPU memory and '
        'time of BP, AugLocal d = 4 and AugLocal with its heads in host '
        'memory at ResNet-34, 224 px, bf16 autocast, channels-last')
    parser.add_argument(
        '--out-dir',
        default=osp.join('work_dirs', 'gpu_benchmark'),
        help='where gpu_benchmark.json and gpu_benchmark.md go')
    parser.add_argument(
        '--skip-tests',
        action='store_true',
        help='measure only, without running the CUDA tests first')
    parser.add_argument(
        '--iters',
        type=int,
        default=10,
        help='timed iterations per rule, after one warm-up (at least 2)')
    parser.add_argument(
        '--batch-size', type=int, default=128, help='images per iteration')
    parser.add_argument(
        '--bp-max-batch',
        type=int,
        nargs='?',
        const=1024,
        default=None,
        metavar='LIMIT',
        help='also search the largest batch, up to LIMIT (1024 without a '
        'value), with which BP trains')
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    check_options(args.batch_size, args.iters, args.bp_max_batch)
    require_cuda()
    tests = None if args.skip_tests else run_cuda_tests(ROOT)
    report = measure_gpu_rules(
        osp.join(ROOT, 'configs'), args.batch_size, args.iters,
        args.bp_max_batch)
    report['tests'] = tests
    paths = write_report(report, args.out_dir)
    print(markdown_table(report))
    print(f"written: {paths['json']}, {paths['markdown']}")
    if tests is not None and tests['returncode'] != 0:
        print(f"error: the CUDA tests failed: {tests['summary']}",
              file=sys.stderr)
        sys.exit(1)


if __name__ == '__main__':
    run_with_clean_errors(main)
