"""auglocal_det: supervised local learning for OpenMMLab.

Importing the package registers its components (backbones, auxiliary
heads, classifiers, optimizer and model wrappers, hooks, the runner,
datasets and metrics).
"""
from .version import __version__, version_info

from . import datasets, engine, evaluation, models, structures  # noqa: E402,F401,I001

__all__ = ['__version__', 'version_info']
