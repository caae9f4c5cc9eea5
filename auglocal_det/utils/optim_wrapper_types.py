"""The twins of each optimizer wrapper type, by config name.

``tools/train.py --amp`` and the benchmark's rules switch a config's
``optim_wrapper.type`` through these tables.
"""
__all__ = ['AMP_WRAPPERS', 'LAYERWISE_WRAPPERS']

#: The mixed-precision twin of each optimizer wrapper.
AMP_WRAPPERS = {
    'OptimWrapper': 'AmpOptimWrapper',
    'LocalOptimWrapper': 'AmpLocalOptimWrapper',
    'LayerwiseLocalOptimWrapper': 'AmpLayerwiseLocalOptimWrapper',
}
#: The per-layer twin of each local optimizer wrapper: every local module
#: stepped right after its backward.
LAYERWISE_WRAPPERS = {
    'LocalOptimWrapper': 'LayerwiseLocalOptimWrapper',
    'AmpLocalOptimWrapper': 'AmpLayerwiseLocalOptimWrapper',
}
