"""auglocal_det: supervised local learning for OpenMMLab.

Importing the package registers its components (backbones, auxiliary
heads, classifiers, optimizer and model wrappers, hooks, the runner,
datasets and metrics).
"""
from . import datasets, engine, evaluation, models, structures  # noqa: E402,F401,I001
from .version import __version__, version_info

__all__ = ['__version__', 'version_info']
