"""ImageNet-1k (and anything laid out like it) for classification."""
import os
import os.path as osp
from typing import List, Optional, Sequence, Tuple, Union

from mmengine.dataset import BaseDataset
from mmengine.fileio import get_text

from auglocal_det.errors import InputError, InputFileNotFoundError
from auglocal_det.registry import DATASETS

__all__ = ['ImageNet', 'IMG_EXTENSIONS']

#: File name endings (lower case) taken as images in the folder layout.
IMG_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.webp', '.ppm', '.tif',
                  '.tiff')

PREPARE_HINT = (
    'Prepare ImageNet-1k as <data_root>/train/<wnid>/*.JPEG and '
    '<data_root>/val/<wnid>/*.JPEG (or add meta/train.txt and meta/val.txt '
    'lists of "relative/path.JPEG label" lines and set ann_file), point '
    'data_root at it (e.g. --cfg-options train_dataloader.dataset.data_root='
    '/path/to/imagenet/ val_dataloader.dataset.data_root=/path/to/imagenet/), '
    'or run the demo on generated data: python tools/demo.py (or generate '
    'the folder with python tools/misc/make_synthetic_data.py imagenet '
    'data/synthetic_imagenet)')


def _is_image(name: str) -> bool:
    return name.lower().endswith(IMG_EXTENSIONS)


def _list_dirs(path: str) -> List[str]:
    with os.scandir(path) as it:
        return sorted(e.name for e in it
                      if e.is_dir() and not e.name.startswith('.'))


def _list_images(path: str) -> List[str]:
    with os.scandir(path) as it:
        return sorted(e.name for e in it if e.is_file() and _is_image(e.name))


@DATASETS.register_module()
class ImageNet(BaseDataset):
    """ImageNet-1k classification data in one of its two usual layouts.

    *Folder layout* (``ann_file=''``)::

        data_root/
          train/n01440764/n01440764_10026.JPEG ...
          val/n01440764/ILSVRC2012_val_00000293.JPEG ...

    *List layout* (``ann_file='meta/train.txt'``): each line is
    ``relative/path.JPEG label`` with the path relative to
    ``data_root/<data_prefix>`` (by default ``data_root/<split>``) and an
    integer label.

    The class list is the same for every split: given by ``classes``, or
    the sorted names of the class folders of ``data_root/train`` (the 1000
    WordNet ids for ImageNet-1k, in the canonical sorted order that gives
    the usual label indices). The data are checked when the dataset is
    built, so that a wrong path fails before any training: a missing data
    root, split folder or list file, a class folder missing from a split or
    not in the class list, an empty class folder or split, a malformed list
    line or a label out of range raise errors that name the path. An image
    that cannot be decoded fails when it is loaded, naming the file.

    Args:
        data_root (str): Root of the data set. Defaults to ''.
        split (str): ``'train'`` or ``'val'`` (any folder name works); the
            folder that holds the split's images. Defaults to 'train'.
        ann_file (str): List file relative to ``data_root``; empty for the
            folder layout. Defaults to ''.
        data_prefix (str | dict): Image folder relative to ``data_root``
            (``dict(img_path=...)`` as in MMEngine also works); defaults to
            ``split``.
        classes (Sequence[str] | str, optional): Class names in label
            order, or a text file with one name per line (relative paths
            are also looked up under ``data_root``); ``metainfo=dict(
            classes=...)`` works too. None infers them
            from the class folders of ``data_root/train`` (for the list
            layout without a ``train`` folder, the names are the label
            numbers). Defaults to None.
        num_classes (int, optional): Expected number of classes (1000 for
            ImageNet-1k); a different count is an error. Defaults to None.
        **kwargs: Passed to :class:`mmengine.dataset.BaseDataset`
            (``pipeline``, ``test_mode``, ``indices``, ...).
    """

    METAINFO = dict(classes=None)

    def __init__(self,
                 data_root: str = '',
                 split: str = 'train',
                 ann_file: str = '',
                 data_prefix: Union[str, dict, None] = None,
                 classes: Union[Sequence[str], str, None] = None,
                 num_classes: Optional[int] = None,
                 **kwargs) -> None:
        if not split or osp.sep in split:
            raise InputError(
                f'ImageNet: split must be a folder name such as "train" or '
                f'"val", got {split!r}')
        metainfo = kwargs.get('metainfo') or {}
        if classes is None:  # MMEngine's way: metainfo=dict(classes=...)
            classes = metainfo.get('classes')
        self.split = split
        self.num_classes = num_classes
        self._classes_arg = classes
        if data_prefix is None:
            data_prefix = split
        if isinstance(data_prefix, str):
            data_prefix = dict(img_path=data_prefix)
        super().__init__(
            data_root=data_root,
            ann_file=ann_file,
            data_prefix=data_prefix,
            **kwargs)

    # ------------------------------------------------------------------
    # loading
    # ------------------------------------------------------------------
    def load_data_list(self) -> List[dict]:
        """Scan the folder or read the list file; check the data.

        Returns:
            list[dict]: One ``dict(img_path=..., gt_label=...)`` per image.
        """
        self._check_root()
        img_dir = self.data_prefix['img_path']
        if self.ann_file:
            classes = self._resolve_classes(required=False)
            data_list, classes = self._load_list_file(img_dir, classes)
        else:
            classes = self._resolve_classes(required=True)
            data_list = self._scan_folder(img_dir, classes)
        if self.num_classes is not None and len(classes) != self.num_classes:
            raise InputError(
                f'ImageNet: found {len(classes)} classes for {img_dir!r} but '
                f'num_classes={self.num_classes} (the model\'s number of '
                f'classes). {PREPARE_HINT}')
        self._metainfo['classes'] = tuple(classes)
        return data_list

    def _check_root(self) -> None:
        root = self.data_root or '.'
        if not osp.isdir(root):
            raise InputFileNotFoundError(
                f'ImageNet: data root {self.data_root!r} (absolute: '
                f'{osp.abspath(root)!r}) does not exist. {PREPARE_HINT}')

    def _resolve_classes(self, required: bool) -> Optional[List[str]]:
        """Class names from ``classes`` or from the train class folders."""
        classes = self._classes_arg
        if isinstance(classes, str):
            path = classes
            if not osp.isabs(path) and not osp.isfile(path) \
                    and self.data_root:
                path = osp.join(self.data_root, path)
            if not osp.isfile(path):
                raise InputFileNotFoundError(
                    f'ImageNet: class list file {classes!r} not found (also '
                    f'looked for {path!r})')
            names = [ln.strip() for ln in get_text(path).splitlines()]
            classes = [n for n in names if n]
            if not classes:
                raise InputError(f'ImageNet: class list file {path!r} is '
                                 'empty')
        if classes is not None:
            classes = [str(c) for c in classes]
            dup = sorted({c for c in classes if classes.count(c) > 1})
            if dup:
                raise InputError(
                    f'ImageNet: classes lists {dup} more than once')
            return classes

        train_dir = osp.join(self.data_root, 'train')
        if not osp.isdir(train_dir):
            if required:
                raise InputFileNotFoundError(
                    f'ImageNet: cannot infer the class list: {train_dir!r} '
                    f'does not exist (give classes=[...] or a class list '
                    f'file). {PREPARE_HINT}')
            return None
        classes = _list_dirs(train_dir)
        if not classes:
            if required:
                raise InputFileNotFoundError(
                    f'ImageNet: {train_dir!r} has no class folders; expected '
                    f'{train_dir}/<wnid>/*.JPEG. {PREPARE_HINT}')
            return None
        return classes

    def _scan_folder(self, img_dir: str, classes: List[str]) -> List[dict]:
        if not osp.isdir(img_dir):
            raise InputFileNotFoundError(
                f'ImageNet: split folder {img_dir!r} does not exist. '
                f'{PREPARE_HINT}')
        found = _list_dirs(img_dir)
        if not found:
            loose = _list_images(img_dir)
            what = (f'{len(loose)} images but no class folders (sort them '
                    f'into <wnid> folders or use the list layout with '
                    f'ann_file="meta/{self.split}.txt")'
                    if loose else 'no class folders')
            raise InputFileNotFoundError(
                f'ImageNet: split folder {img_dir!r} has {what}. '
                f'{PREPARE_HINT}')
        known = set(classes)
        extra = [c for c in found if c not in known]
        if extra:
            raise InputError(
                f'ImageNet: class folder(s) {self._few(extra)} in {img_dir!r} '
                f'are not in the class list ({len(classes)} classes, '
                f'{self._class_source()}); every split must use the same '
                f'classes')
        missing = [c for c in classes if c not in set(found)]
        if missing:
            raise InputFileNotFoundError(
                f'ImageNet: class folder(s) {self._few(missing)} missing from '
                f'{img_dir!r} ({len(missing)} of {len(classes)} classes of '
                f'{self._class_source()}). {PREPARE_HINT}')
        data_list = []
        for label, name in enumerate(classes):
            cls_dir = osp.join(img_dir, name)
            files = _list_images(cls_dir)
            if not files:
                raise InputFileNotFoundError(
                    f'ImageNet: class folder {cls_dir!r} has no images '
                    f'(extensions {", ".join(IMG_EXTENSIONS)})')
            data_list.extend(
                dict(img_path=osp.join(cls_dir, f), gt_label=label)
                for f in files)
        return data_list

    def _load_list_file(
            self, img_dir: str,
            classes: Optional[List[str]]) -> Tuple[List[dict], List[str]]:
        if not osp.isfile(self.ann_file):
            raise InputFileNotFoundError(
                f'ImageNet: list file {self.ann_file!r} does not exist. '
                f'{PREPARE_HINT}')
        data_list = []
        max_label = -1
        for lineno, line in enumerate(
                get_text(self.ann_file).splitlines(), 1):
            line = line.strip()
            if not line:
                continue
            path, _, label = line.rpartition(' ')
            try:
                label = int(label)
            except ValueError:
                label = -1
            if not path.strip() or label < 0:
                raise InputError(
                    f'ImageNet: {self.ann_file}:{lineno}: expected '
                    f'"relative/path.JPEG label" with an integer label >= 0, '
                    f'got {line!r}')
            if classes is not None and label >= len(classes):
                raise InputError(
                    f'ImageNet: {self.ann_file}:{lineno}: label {label} out '
                    f'of range for {len(classes)} classes '
                    f'({self._class_source()})')
            max_label = max(max_label, label)
            data_list.append(
                dict(
                    img_path=osp.join(img_dir, path.strip()),
                    gt_label=label))
        if not data_list:
            raise InputError(
                f'ImageNet: list file {self.ann_file!r} has no images. '
                f'{PREPARE_HINT}')
        if classes is None:
            num = self.num_classes or max_label + 1
            classes = [str(i) for i in range(num)]
            if max_label >= num:
                raise InputError(
                    f'ImageNet: {self.ann_file!r} has label {max_label} but '
                    f'num_classes={num}')
        return data_list, classes

    def _class_source(self) -> str:
        if isinstance(self._classes_arg, str):
            return f'from {self._classes_arg!r}'
        if self._classes_arg is not None:
            return 'from the classes argument'
        return f'the folders of {osp.join(self.data_root, "train")!r}'

    @staticmethod
    def _few(names: List[str], limit: int = 5) -> str:
        shown = ', '.join(names[:limit])
        more = f' and {len(names) - limit} more' if len(names) > limit else ''
        return f'[{shown}{more}]'

    def get_cat_ids(self, idx: int) -> List[int]:
        """Label of an image, as a one-element list (for samplers)."""
        return [int(self.get_data_info(idx)['gt_label'])]

    def __repr__(self) -> str:
        head = f'Dataset {self.__class__.__name__}'
        lines = [f'split: {self.split}', f'data_root: {self.data_root}']
        if self._fully_initialized:
            lines.append(f'number of samples: {len(self)}')
            lines.append(f'number of classes: '
                         f'{len(self._metainfo["classes"])}')
        else:
            lines.append('not loaded yet (lazy_init=True)')
        return '\n'.join([head] + ['    ' + ln for ln in lines])
