from .metrics import Accuracy, LayerwiseAccuracy, parse_layerwise_metrics

__all__ = ['Accuracy', 'LayerwiseAccuracy', 'parse_layerwise_metrics']
