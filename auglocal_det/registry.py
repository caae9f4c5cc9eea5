"""One import point for the registries auglocal_det registers into.

Every component is registered in MMEngine's root registries. A registry
looks a name up in itself and then in its parents, so the classes are found
from any scope: from ``default_scope='mmdet'`` (the detection configs) as
well as from the ImageNet configs, and also on a machine where mmdet or
mmcv's compiled ops are not installed. The local-learning core therefore
depends on torch and mmengine alone.
"""
from mmengine.registry import DATA_SAMPLERS as MMENGINE_DATA_SAMPLERS
from mmengine.registry import DATASETS as MMENGINE_DATASETS
from mmengine.registry import HOOKS as MMENGINE_HOOKS
from mmengine.registry import LOOPS as MMENGINE_LOOPS
from mmengine.registry import METRICS as MMENGINE_METRICS
from mmengine.registry import MODEL_WRAPPERS as MMENGINE_MODEL_WRAPPERS
from mmengine.registry import MODELS as MMENGINE_MODELS
from mmengine.registry import OPTIM_WRAPPERS as MMENGINE_OPTIM_WRAPPERS
from mmengine.registry import PARAM_SCHEDULERS as MMENGINE_PARAM_SCHEDULERS
from mmengine.registry import RUNNERS as MMENGINE_RUNNERS
from mmengine.registry import TRANSFORMS as MMENGINE_TRANSFORMS
from mmengine.registry import VISUALIZERS as MMENGINE_VISUALIZERS
from mmengine.registry import Registry

MODELS = MMENGINE_MODELS
MODEL_WRAPPERS = MMENGINE_MODEL_WRAPPERS
OPTIM_WRAPPERS = MMENGINE_OPTIM_WRAPPERS
PARAM_SCHEDULERS = MMENGINE_PARAM_SCHEDULERS
HOOKS = MMENGINE_HOOKS
LOOPS = MMENGINE_LOOPS
DATASETS = MMENGINE_DATASETS
DATA_SAMPLERS = MMENGINE_DATA_SAMPLERS
TRANSFORMS = MMENGINE_TRANSFORMS
METRICS = MMENGINE_METRICS
VISUALIZERS = MMENGINE_VISUALIZERS
RUNNERS = MMENGINE_RUNNERS
#: Where the auxiliary heads rest between their uses
#: (``model.aux_head_offload``): the engine registers the implementation,
#: which the classifier builds by name, so models import nothing from it.
AUX_HEAD_PLACEMENTS = Registry('aux head placement')

__all__ = [
    'MODELS', 'MODEL_WRAPPERS', 'OPTIM_WRAPPERS', 'PARAM_SCHEDULERS',
    'HOOKS', 'LOOPS', 'DATASETS', 'DATA_SAMPLERS', 'TRANSFORMS', 'METRICS',
    'VISUALIZERS', 'RUNNERS', 'AUX_HEAD_PLACEMENTS'
]
