from .cls_data_sample import ClsDataSample, format_label

__all__ = ['ClsDataSample', 'format_label']
