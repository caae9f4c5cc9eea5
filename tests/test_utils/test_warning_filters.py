"""ignore_pkg_resources_deprecation: that one warning goes, others stay."""
import importlib
import warnings

import pytest

from auglocal_det.utils.warning_filters import ignore_pkg_resources_deprecation


def _reload_pkg_resources():
    """Re-import pkg_resources as MMEngine's package checks do."""
    pkg_resources = pytest.importorskip('pkg_resources')
    importlib.reload(pkg_resources)


def test_only_the_pkg_resources_warning_is_filtered():
    with warnings.catch_warnings(record=True) as before:
        warnings.simplefilter('always')
        _reload_pkg_resources()
    if not any('pkg_resources is deprecated' in str(w.message)
               for w in before):
        pytest.skip('this setuptools does not warn about pkg_resources')
    with warnings.catch_warnings(record=True) as after:
        warnings.simplefilter('always')
        ignore_pkg_resources_deprecation()
        _reload_pkg_resources()
        warnings.warn('another user warning', UserWarning, stacklevel=1)
        warnings.warn('pkg_resources is deprecated as an API',
                      DeprecationWarning, stacklevel=1)
    messages = [(w.category, str(w.message)) for w in after]
    assert not any(c is UserWarning and 'pkg_resources is deprecated' in m
                   for c, m in messages)
    assert (UserWarning, 'another user warning') in messages
    # the same text in another category is not this warning
    assert (DeprecationWarning,
            'pkg_resources is deprecated as an API') in messages
