"""Filters for warnings that every command would print and no user can act on.
"""
import warnings

__all__ = ['ignore_pkg_resources_deprecation']


def ignore_pkg_resources_deprecation() -> None:
    """Hide setuptools' "pkg_resources is deprecated" UserWarning.

    MMEngine's package checks (``is_installed``, ``get_installed_path``)
    import and reload ``pkg_resources``, and setuptools < 82, which mmcv's
    build needs, warns on every such import: four identical warnings per
    training command. Only that warning is filtered; every other warning,
    other deprecations of setuptools included, is shown as usual. The
    command-line tools call this first thing.
    """
    warnings.filterwarnings(
        'ignore',
        message='pkg_resources is deprecated as an API',
        category=UserWarning)
