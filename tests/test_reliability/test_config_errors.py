"""Config mistakes that were tracebacks: an unregistered type name, and a
type switched by ``--cfg-options`` over keys of the old type."""
import pytest
from common_utils import tiny_auglocal_model
from mmengine.config import Config
from reliability_utils import run_train

from auglocal_det.errors import InputError
from auglocal_det.registry import MODELS
from auglocal_det.utils.config_errors import (
    accepted_keys,
    check_switched_types,
    unknown_type_error,
)

HEAD = dict(type='AugLocalAuxHead', depth=2)


def _model_cfg() -> Config:
    return Config(
        dict(
            model=tiny_auglocal_model(aux_head=dict(HEAD), num_classes=3)))


def _first_line(result) -> str:
    assert result.returncode == 1, result.stderr[-3000:]
    line = result.stderr.strip().splitlines()[0]
    print(line)
    return line


def test_unknown_type_lists_near_matches(tiny_config, tmp_path):
    line = _first_line(
        run_train(tiny_config, str(tmp_path / 'run'), '--cfg-options',
                  'model.aux_head.type=AugLocalAuxHaed', timeout=120))
    assert line.startswith(
        "error: model.aux_head.type: 'AugLocalAuxHaed' is not a registered "
        "model type (scope 'mmengine'); did you mean 'AugLocalAuxHead'?")
    assert 'The model types of auglocal_det: AugLocalAuxHead, ' \
        'ComposedAuxHead, DGLAuxHead, InfoProAuxHead, MLAANAuxHead, ' \
        'PredSimAuxHead' in line


def test_unknown_type_error_leaves_other_key_errors():
    assert unknown_type_error(KeyError('depth'), _model_cfg()) is None


def test_switched_head_type_names_leftover_keys(tiny_config, tmp_path):
    line = _first_line(
        run_train(tiny_config, str(tmp_path / 'run'), '--cfg-options',
                  'model.aux_head.type=DGLAuxHead', timeout=120))
    assert line == (
        "error: --cfg-options switched model.aux_head.type to 'DGLAuxHead', "
        'but the config keeps model.aux_head.depth from its previous type, '
        'and DGLAuxHead does not take it (--cfg-options merges into the '
        'dict, it does not replace it). Replace the whole dict: '
        '--cfg-options model.aux_head._delete_=True '
        'model.aux_head.type=DGLAuxHead (then add the DGLAuxHead options '
        'you want)')


def test_the_suggested_delete_form_builds():
    options = {
        'model.aux_head._delete_': True,
        'model.aux_head.type': 'DGLAuxHead'
    }
    cfg = _model_cfg()
    cfg.merge_from_dict(options)
    check_switched_types(cfg, options, 'mmengine')
    assert cfg.model.aux_head.to_dict() == dict(type='DGLAuxHead')
    model = MODELS.build(cfg.model)
    assert type(model.aux_heads[0]).__name__ == 'DGLAuxHead'


def test_switch_to_a_type_taking_the_keys_is_accepted():
    options = {'model.aux_head.type': 'AugLocalAuxHead',
               'model.aux_head.widen_factor': 0.5}
    cfg = _model_cfg()
    cfg.merge_from_dict(options)
    check_switched_types(cfg, options, 'mmengine')
    cfg = _model_cfg()
    cfg.merge_from_dict({'model.aux_head.type': 'PredSimAuxHead'})
    with pytest.raises(InputError, match='keeps model.aux_head.depth'):
        check_switched_types(cfg, {'model.aux_head.type': 'PredSimAuxHead'},
                             'mmengine')


def test_accepted_keys_follow_kwargs():
    keys = accepted_keys(MODELS.get('DGLAuxHead'))
    assert {'num_convs', 'layer_index', 'num_classes'} <= keys
    assert 'depth' not in keys
