"""auglocal_det: supervised local learning for OpenMMLab.

Importing the package registers its components (backbones, auxiliary
heads, classifiers, optimizer and model wrappers, hooks, datasets and
metrics) and makes MMEngine checkpoints load under torch >= 2.6.
"""
from .utils.checkpoint import register_trusted_local_loader
from .version import __version__, version_info

register_trusted_local_loader()

from . import datasets, engine, evaluation, models, structures  # noqa: E402,F401,I001

__all__ = ['__version__', 'version_info', 'register_trusted_local_loader']
