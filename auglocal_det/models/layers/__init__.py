from .lean_stem import LeanStem
from .local_layer_spec import LayerFactory, LocalLayerSpec, to_2tuple_size
from .res_blocks import (
                         BasicBlock,
                         Bottleneck,
                         build_norm_layer,
                         build_shortcut,
                         get_block,
                         make_res_block,
                         make_res_layer,
)

__all__ = [
    'BasicBlock', 'Bottleneck', 'LayerFactory', 'LeanStem',
    'LocalLayerSpec',
    'build_norm_layer', 'build_shortcut', 'get_block', 'make_res_block',
    'make_res_layer', 'to_2tuple_size'
]
