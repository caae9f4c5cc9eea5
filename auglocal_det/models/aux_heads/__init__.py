from .auglocal import (
                       AugLocalAuxHead,
                       auglocal_aux_depth,
                       auglocal_depth_list,
                       auglocal_sample_layers,
                       auglocal_stride_rule,
                       auglocal_strides,
)
from .base import AuxBatch, BaseAuxHead, interpolate_loss_weight
from .builder import build_aux_heads
from .composed import ComposedAuxHead
from .dgl import DGLAuxHead
from .infopro import InfoProAuxHead, supervised_contrastive_loss
from .mlaan import (
                       MLAAN_LEAP_LAYERS,
                       LeapAugmentedModule,
                       MLAANAuxHead,
                       MLAANIndependentHead,
                       mlaan_leap_layers,
)
from .predsim import PredSimAuxHead, predsim_pool_size, similarity_matrix

__all__ = [
    'AuxBatch', 'BaseAuxHead', 'interpolate_loss_weight', 'AugLocalAuxHead',
    'ComposedAuxHead', 'DGLAuxHead', 'InfoProAuxHead', 'PredSimAuxHead',
    'auglocal_aux_depth',
    'auglocal_depth_list', 'auglocal_sample_layers', 'auglocal_stride_rule',
    'auglocal_strides',
    'predsim_pool_size', 'similarity_matrix', 'supervised_contrastive_loss',
    'build_aux_heads', 'MLAANAuxHead', 'MLAANIndependentHead',
    'LeapAugmentedModule', 'MLAAN_LEAP_LAYERS', 'mlaan_leap_layers'
]
