"""Pack a transformed sample into the model's input format."""
from typing import Sequence

import torch

from auglocal_det.registry import TRANSFORMS
from auglocal_det.structures import ClsDataSample

__all__ = ['PackClsInputs']


@TRANSFORMS.register_module()
class PackClsInputs:
    """Pack ``img`` and ``gt_label`` into ``inputs`` and ``data_samples``.

    Output: ``dict(inputs=uint8 tensor (3, H, W), data_samples=
    ClsDataSample)`` with ``gt_label`` (when present) and the ``meta_keys``
    found in the results as metainfo. The image stays uint8: the model's
    data preprocessor converts it to float and normalises it (on the GPU).

    Args:
        meta_keys (Sequence[str]): Keys copied into the data sample's
            metainfo when present. Defaults to
            ('img_path', 'ori_shape', 'img_shape', 'flip').
    """

    def __init__(self,
                 meta_keys: Sequence[str] = ('img_path', 'ori_shape',
                                             'img_shape', 'flip')) -> None:
        self.meta_keys = tuple(meta_keys)

    def __call__(self, results: dict) -> dict:
        if 'img' not in results:
            raise KeyError(f'{self.__class__.__name__}: no "img" in the '
                           f'results (keys: {sorted(results)}); put a '
                           f'loading transform first')
        img = results['img']
        if not isinstance(img, torch.Tensor) or img.ndim != 3:
            raise TypeError(f'{self.__class__.__name__}: "img" must be a '
                            f'(C, H, W) tensor, got {type(img).__name__}')
        sample = ClsDataSample(metainfo={
            k: results[k]
            for k in self.meta_keys if k in results
        })
        if 'gt_label' in results:
            sample.set_gt_label(results['gt_label'])
        return dict(inputs=img.contiguous(), data_samples=sample)

    def __repr__(self) -> str:
        return f'{self.__class__.__name__}(meta_keys={self.meta_keys})'
