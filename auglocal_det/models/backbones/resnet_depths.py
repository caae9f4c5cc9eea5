"""The one table of ResNet depths: block type and blocks per stage.

``LocalResNet.arch_settings`` (ImageNet) and
``LocalCifarResNet.arch_settings`` (CIFAR) are these tables. They sit
apart from the classes so that the pretrained-file check and MLAAN can
name a network without importing the backbones.
"""
from typing import Dict, Optional, Sequence, Tuple

from ..layers import BasicBlock, Bottleneck

__all__ = ['IMAGENET_RESNETS', 'CIFAR_RESNETS', 'resnet_arch_name']

#: ``depth -> (block class, blocks per stage)`` of the ImageNet ResNets.
IMAGENET_RESNETS: Dict[int, Tuple[type, Tuple[int, ...]]] = {
    18: (BasicBlock, (2, 2, 2, 2)),
    34: (BasicBlock, (3, 4, 6, 3)),
    50: (Bottleneck, (3, 4, 6, 3)),
    101: (Bottleneck, (3, 4, 23, 3)),
    152: (Bottleneck, (3, 8, 36, 3)),
}
#: The same for the CIFAR ResNets (three stages).
CIFAR_RESNETS: Dict[int, Tuple[type, Tuple[int, ...]]] = {
    20: (BasicBlock, (3, 3, 3)),
    32: (BasicBlock, (5, 5, 5)),
    44: (BasicBlock, (7, 7, 7)),
    56: (BasicBlock, (9, 9, 9)),
    110: (BasicBlock, (18, 18, 18)),
}


def resnet_arch_name(block: str,
                     stage_blocks: Sequence[int]) -> Optional[str]:
    """Name of the ResNet with this block type and blocks per stage.

    Args:
        block (str): ``'BasicBlock'`` or ``'Bottleneck'``.
        stage_blocks (Sequence[int]): Blocks per stage, e.g. (3, 4, 6, 3).

    Returns:
        str or None: E.g. ``'resnet34'``; None for no standard ResNet.
    """
    for table in (IMAGENET_RESNETS, CIFAR_RESNETS):
        for depth, (block_cls, blocks) in table.items():
            if block_cls.__name__ == block and tuple(blocks) == tuple(
                    stage_blocks):
                return f'resnet{depth}'
    return None
