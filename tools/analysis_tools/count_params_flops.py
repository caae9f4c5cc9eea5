"""Parameters and forward FLOPs per image of the models of configs.

For every config: the number of local modules and auxiliary networks, the
parameters of the network and of all auxiliary networks, and the forward
multiply-accumulates per training crop (``model.image_size``) of the
network and of the network plus every auxiliary network (each head's
``loss``), counted by :func:`auglocal_det.utils.flops.count_forward_flops`
on one random image. Prints a Markdown table.

Example::

    python tools/analysis_tools/count_params_flops.py \
        configs/auglocal/auglocal-d*_r32_400e_cifar10.py
"""
import argparse
import os.path as osp
import sys
from typing import Optional, Sequence

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(
    osp.abspath(__file__)))))
from mmengine.config import Config  # noqa: E402

from auglocal_det.analysis import build_config_model  # noqa: E402
from auglocal_det.utils.cli import run_with_clean_errors  # noqa: E402
from auglocal_det.utils.flops import count_forward_flops  # noqa: E402

COLUMNS = ('Config', 'K', 'Aux nets', 'Params (M)', 'Aux params (M)',
           'GMACs net', 'GMACs net + aux')


def _params(module) -> int:
    return sum(p.numel() for p in module.parameters())


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('configs', nargs='+', help='config files')
    args = parser.parse_args(argv)
    print('| ' + ' | '.join(COLUMNS) + ' |')
    print('|' + '---|' * len(COLUMNS))
    for path in args.configs:
        model = build_config_model(Config.fromfile(path))
        report = count_forward_flops(model)
        network = _params(model) - _params(model.aux_heads)
        print(f'| {osp.basename(path)} | {model.num_modules} | '
              f'{model.num_aux} | {network / 1e6:.3f} | '
              f'{_params(model.aux_heads) / 1e6:.3f} | '
              f'{report.network_macs / 1e9:.3f} | '
              f'{report.total_macs / 1e9:.3f} |')


if __name__ == '__main__':
    run_with_clean_errors(main)
