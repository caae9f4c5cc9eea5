"""The analyses of the papers' figures, as library functions for the tools
in ``tools/analysis_tools``."""
from .learning_curves import (
    learning_curves,
    output_loss_key,
    plot_learning_curves,
    read_learning_curve,
    read_train_records,
)
from .representation_similarity import (
    build_config_model,
    cka_from_grams,
    gram_matrix,
    linear_cka,
    load_work_dir_model,
    local_layer_grams,
    plot_layerwise_cka,
    representation_similarity,
    validation_batch,
)

__all__ = [
    'learning_curves', 'output_loss_key', 'plot_learning_curves',
    'read_learning_curve', 'read_train_records', 'build_config_model',
    'cka_from_grams',
    'gram_matrix', 'linear_cka', 'load_work_dir_model', 'local_layer_grams',
    'plot_layerwise_cka', 'representation_similarity', 'validation_batch'
]
