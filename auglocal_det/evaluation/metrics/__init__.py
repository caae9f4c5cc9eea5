from .accuracy import Accuracy
from .layerwise_accuracy import LayerwiseAccuracy, parse_layerwise_metrics

__all__ = ['Accuracy', 'LayerwiseAccuracy', 'parse_layerwise_metrics']
