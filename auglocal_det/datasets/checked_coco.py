"""COCO annotations checked before training, with errors that name the
fault.

mmdet 3.3's :class:`~mmdet.datasets.CocoDataset` drops bad data without a
word: boxes with ``w < 1``, ``h < 1``, ``area <= 0`` or outside the image,
annotations of categories that are not in ``metainfo.classes``, and (in
``LoadAnnotations``) instance masks whose polygons have fewer than three
points. A class name of the config that is not a category of the file is
silently left without data, and labels follow the *file's* category order
whatever the order of ``metainfo.classes``, so class names can be
silently permuted.

:func:`check_coco_annotations` inspects the raw JSON and returns a
:class:`CocoReport`; :class:`CheckedCocoDataset` (a ``CocoDataset``) runs it
when the annotations are loaded, and ``tools/misc/check_coco.py`` runs it
from the command line. *Errors* (stop): class names missing from the file
or in another order, annotations of unknown categories or images, a file
without images, image or annotation ids that appear twice (two files
merged without renumbering: mmdet keeps one image per id and gives it the
annotations of both), a file or a class whose every annotation is a crowd
region (``iscrowd=1``, ignored in training: the box and mask losses are
0), images without a file in the image folder (when it is given), and
more invalid annotations than ``max_invalid_ratio``
(a systematic problem such as boxes written as ``x1, y1, x2, y2``).
*Invalid annotations* below that ratio (real COCO has a few degenerate
boxes) are reported as a warning with examples, and dropped as mmdet does.

This module imports mmdet: load it with ``custom_imports=dict(imports=[
'auglocal_det', 'auglocal_det.datasets.checked_coco'])``.
"""
import json
import logging
import math
import os.path as osp
from collections import OrderedDict
from typing import Any, Dict, List, Optional, Sequence

from mmdet.datasets import CocoDataset
from mmengine.logging import print_log

from auglocal_det.errors import InputError, InputFileNotFoundError
from auglocal_det.registry import DATASETS

__all__ = ['CheckedCocoDataset', 'CocoReport', 'check_coco_annotations']

#: Examples listed per kind of invalid annotation.
_EXAMPLES = 3
_CLASSES_KEY = 'metainfo.classes'


class CocoReport:
    """What :func:`check_coco_annotations` found in one annotation file.

    Attributes:
        ann_file (str): The file.
        num_images (int): Number of images.
        num_annotations (int): Number of annotations.
        errors (list[str]): Problems that make the file unusable as
            configured.
        invalid (dict[str, list[str]]): Invalid annotations per kind (one
            description per annotation).
        notes (list[str]): Facts worth knowing (e.g. categories of the file
            left out by the class list).
    """

    def __init__(self, ann_file: str) -> None:
        self.ann_file = ann_file
        self.num_images = 0
        self.num_annotations = 0
        self.errors: List[str] = []
        self.invalid: Dict[str, List[str]] = OrderedDict()
        self.notes: List[str] = []

    @property
    def num_invalid(self) -> int:
        """int: Number of invalid annotations."""
        return sum(len(v) for v in self.invalid.values())

    def add_invalid(self, kind: str, description: str) -> None:
        self.invalid.setdefault(kind, []).append(description)

    def summary(self) -> str:
        """The invalid annotations: count per kind and a few examples."""
        lines = [
            f'{self.num_invalid} of {self.num_annotations} annotations in '
            f'{self.ann_file!r} are invalid and are ignored in training:'
        ]
        for kind, items in self.invalid.items():
            shown = '; '.join(items[:_EXAMPLES])
            more = (f'; ... ({len(items) - _EXAMPLES} more)'
                    if len(items) > _EXAMPLES else '')
            lines.append(f'  {len(items)} {kind}: {shown}{more}')
        return '\n'.join(lines)

    def format(self) -> str:
        """The whole report, as printed by ``tools/misc/check_coco.py``."""
        lines = [
            f'{self.ann_file}: {self.num_images} images, '
            f'{self.num_annotations} annotations'
        ]
        lines += [f'error: {e}' for e in self.errors]
        if self.invalid:
            lines.append(self.summary())
        lines += [f'note: {n}' for n in self.notes]
        if not (self.errors or self.invalid):
            lines.append('no problem found')
        return '\n'.join(lines)


def _finite_numbers(values: Any, count: Optional[int] = None) -> bool:
    if not isinstance(values, (list, tuple)):
        return False
    if count is not None and len(values) != count:
        return False
    return all(
        isinstance(v, (int, float)) and not isinstance(v, bool)
        and math.isfinite(v) for v in values)


def _check_categories(report: CocoReport, categories: List[dict],
                      classes: Optional[Sequence[str]]) -> Dict[int, str]:
    names = OrderedDict()
    for cat in categories:
        if not isinstance(cat, dict) or 'id' not in cat or 'name' not in cat:
            report.errors.append(
                f'a category of {report.ann_file!r} has no "id" or "name": '
                f'{cat!r}')
            continue
        if cat['id'] in names:
            report.errors.append(
                f'category id {cat["id"]} appears twice in '
                f'{report.ann_file!r}')
        names[cat['id']] = str(cat['name'])
    if classes is None:
        return names
    file_names = list(names.values())
    missing = [c for c in classes if c not in file_names]
    listing = ', '.join(f'{i} {n!r}' for i, n in names.items())
    if missing:
        report.errors.append(
            f'class(es) {missing} of {_CLASSES_KEY} are not categories of '
            f'{report.ann_file!r}, so they would get no training data (the '
            f"file's categories: {listing}). Fix {_CLASSES_KEY} (and the "
            "heads' num_classes) or the file")
        return names
    in_file_order = [n for n in file_names if n in set(classes)]
    if in_file_order != list(classes):
        report.errors.append(
            f'{_CLASSES_KEY} lists the classes in another order than the '
            f'categories of {report.ann_file!r}; mmdet numbers labels in '
            "the file's order, so class names would be swapped. Use "
            f'{_CLASSES_KEY}={tuple(in_file_order)!r}')
    left_out = [n for n in file_names if n not in set(classes)]
    if left_out:
        report.notes.append(
            f'categories {left_out} of {report.ann_file!r} are not in '
            f'{_CLASSES_KEY}; their annotations are not used')
    return names


def _check_annotation(report: CocoReport, ann: Any,
                      images: Dict[Any, dict], categories: Dict[int,
                                                                str]) -> None:
    if not isinstance(ann, dict):
        report.add_invalid('malformed annotations', repr(ann)[:60])
        return
    image = images.get(ann.get('image_id'))
    where = f'annotation id {ann.get("id")}'
    if image is not None:
        where += f' (image {image.get("file_name")!r})'
    if image is None:
        report.add_invalid('annotations of unknown image ids',
                           f'{where}: image_id {ann.get("image_id")!r}')
        return
    if ann.get('category_id') not in categories:
        report.add_invalid(
            'annotations of unknown category ids',
            f'{where}: category_id {ann.get("category_id")!r}')
        return
    if ann.get('ignore', False):
        return

    bbox = ann.get('bbox')
    if not _finite_numbers(bbox, 4):
        report.add_invalid('malformed boxes', f'{where}: bbox {bbox!r}')
        return
    x, y, w, h = bbox
    area = ann.get('area', w * h)
    if w < 1 or h < 1 or not isinstance(area, (int, float)) or area <= 0:
        report.add_invalid(
            'zero-area boxes (w < 1, h < 1 or area <= 0)',
            f'{where}: bbox {bbox}, area {area!r}')
        return
    width, height = image.get('width'), image.get('height')
    if isinstance(width, (int, float)) and isinstance(height, (int, float)):
        if min(x + w, width) <= max(x, 0) or min(y + h, height) <= max(y, 0):
            report.add_invalid(
                'boxes outside their image',
                f'{where}: bbox {bbox} in a {width}x{height} image')
            return

    seg = ann.get('segmentation')
    if seg is None or ann.get('iscrowd', 0):
        return
    if isinstance(seg, dict):  # RLE
        if list(seg.get('size', [])) != [height, width]:
            report.add_invalid(
                'RLE masks of the wrong size',
                f'{where}: size {seg.get("size")!r}, image '
                f'{height}x{width}')
        return
    bad = [
        p for p in (seg if isinstance(seg, list) else [seg])
        if not (_finite_numbers(p) and len(p) >= 6 and len(p) % 2 == 0)
    ]
    if not seg or bad:
        shown = repr(bad[0] if bad else seg)
        report.add_invalid(
            'broken polygons (fewer than 3 points, an odd number of '
            'coordinates or non-numbers)',
            f'{where}: {shown[:60]}')


def _id_listing(ids: Sequence[Any]) -> str:
    shown = ', '.join(map(str, ids[:_EXAMPLES * 2]))
    more = len(ids) - _EXAMPLES * 2
    return shown + (f', ... ({more} more)' if more > 0 else '')


def _check_duplicate_ids(report: CocoReport, data: dict) -> None:
    """Image and annotation ids that appear more than once."""
    names: Dict[Any, List[str]] = OrderedDict()
    for img in data['images']:
        if isinstance(img, dict):
            names.setdefault(img.get('id'), []).append(
                str(img.get('file_name')))
    twice = [i for i, files in names.items() if len(files) > 1]
    if twice:
        first = twice[0]
        report.errors.append(
            f'{len(twice)} image ids appear more than once in '
            f'{report.ann_file!r}: {_id_listing(twice)} (e.g. id {first}: '
            f'{", ".join(map(repr, names[first][:3]))}). Were two files '
            'merged without renumbering? mmdet keeps one image per id and '
            'attaches the annotations of the others to it; give every image '
            'its own id (and renumber the image_id of its annotations)')
    counts: Dict[Any, int] = OrderedDict()
    for ann in data['annotations']:
        if isinstance(ann, dict):
            counts[ann.get('id')] = counts.get(ann.get('id'), 0) + 1
    twice = [i for i, n in counts.items() if n > 1]
    if twice:
        report.errors.append(
            f'{len(twice)} annotation ids appear more than once in '
            f'{report.ann_file!r}: {_id_listing(twice)} (mmdet stops with '
            '"Annotation ids ... are not unique"); give every annotation its '
            'own id')


def _check_crowd(report: CocoReport, data: dict,
                 categories: Dict[int, str],
                 classes: Optional[Sequence[str]]) -> None:
    """A file or a class whose every annotation is a crowd region."""
    usable: Dict[Any, int] = {}
    crowd: Dict[Any, int] = {}
    for ann in data['annotations']:
        if not isinstance(ann, dict) or ann.get('ignore', False):
            continue
        target = crowd if ann.get('iscrowd', 0) else usable
        cat = ann.get('category_id')
        target[cat] = target.get(cat, 0) + 1
    if not crowd:
        return
    if not usable:
        report.errors.append(
            f'every annotation of {report.ann_file!r} is a crowd region '
            f'(iscrowd=1, {sum(crowd.values())} annotations): mmdet ignores '
            'crowd regions in training, so the box and mask losses would be '
            '0. Set iscrowd=0 on the objects (iscrowd=1 marks a region of '
            'many objects that is not to be learnt)')
        return
    wanted = set(classes) if classes is not None else None
    only_crowd = [
        f'{categories.get(cat)!r} (category id {cat}, {n} crowd '
        'annotations)' for cat, n in crowd.items()
        if cat in categories and not usable.get(cat) and (
            wanted is None or categories[cat] in wanted)
    ]
    if only_crowd:
        report.errors.append(
            f'class(es) {", ".join(only_crowd)} of {report.ann_file!r} '
            'have only crowd annotations (iscrowd=1), which mmdet ignores '
            'in training, so they would get no training data. Set '
            'iscrowd=0 on their objects, or leave them out of '
            f'{_CLASSES_KEY}')


def _check_image_files(report: CocoReport, images: Dict[Any, dict],
                       img_dir: str) -> None:
    """Images of the file without a file in ``img_dir``."""
    missing = [(i, img.get('file_name')) for i, img in images.items()
               if not isinstance(img.get('file_name'), str)
               or not osp.isfile(osp.join(img_dir, img['file_name']))]
    if missing:
        shown = ', '.join(f'id {i} {name!r}'
                          for i, name in missing[:_EXAMPLES * 2])
        more = len(missing) - _EXAMPLES * 2
        report.errors.append(
            f'{len(missing)} of {len(images)} images listed in '
            f'{report.ann_file!r} have no file in {img_dir!r}: {shown}'
            + (f', ... ({more} more)' if more > 0 else '') +
            ' (training would stop at the first of them). Add the files, '
            'remove the images from the file, or point data_prefix.img at '
            'the folder that holds them')


def check_coco_annotations(data: dict,
                           classes: Optional[Sequence[str]] = None,
                           ann_file: str = '<annotations>',
                           max_invalid_ratio: float = 0.01,
                           img_dir: Optional[str] = None) -> CocoReport:
    """Check the raw content of a COCO instance annotation file.

    Args:
        data (dict): The parsed JSON (``images``, ``annotations``,
            ``categories``).
        classes (Sequence[str], optional): The config's class names
            (``metainfo.classes``), in label order. None skips the class
            checks. Defaults to None.
        ann_file (str): File name used in the messages.
        max_invalid_ratio (float): Fraction of invalid annotations above
            which they are an error rather than a warning. Defaults to 0.01.
        img_dir (str, optional): The folder of the images
            (``data_root`` + ``data_prefix.img``); each image's file is
            looked for there. None skips that check. Defaults to None.

    Returns:
        CocoReport: The findings.
    """
    report = CocoReport(ann_file)
    if not isinstance(data, dict):
        report.errors.append(f'{ann_file!r} does not hold a JSON object')
        return report
    for key in ('images', 'annotations', 'categories'):
        if not isinstance(data.get(key), list):
            report.errors.append(
                f'{ann_file!r} has no "{key}" list (not a COCO instance '
                'annotation file?)')
    if report.errors:
        return report
    categories = _check_categories(report, data['categories'], classes)
    images = {img.get('id'): img for img in data['images']
              if isinstance(img, dict)}
    report.num_images = len(images)
    report.num_annotations = len(data['annotations'])
    if not images:
        report.errors.append(f'{ann_file!r} lists no images')
    _check_duplicate_ids(report, data)
    for ann in data['annotations']:
        _check_annotation(report, ann, images, categories)
    _check_crowd(report, data, categories, classes)
    if img_dir is not None:
        _check_image_files(report, images, img_dir)

    systematic = [
        kind for kind in ('annotations of unknown image ids',
                          'annotations of unknown category ids')
        if kind in report.invalid
    ]
    if systematic or report.num_invalid > max_invalid_ratio * max(
            report.num_annotations, 1):
        report.errors.append(
            report.summary() +
            ('\n  (annotations that point to no image or category mean a '
             'broken file)' if systematic else
             f'\n  (more than {max_invalid_ratio:.0%} of the annotations: '
             'a problem of the file, e.g. boxes written as x1, y1, x2, y2 '
             'instead of x, y, w, h)'))
    return report


@DATASETS.register_module()
class CheckedCocoDataset(CocoDataset):
    """:class:`~mmdet.datasets.CocoDataset` that checks its annotations.

    When the annotation file is loaded, :func:`check_coco_annotations`
    compares its categories with ``metainfo.classes`` and inspects every
    annotation. Errors raise a ``ValueError`` naming the file, the
    annotations and the config key at fault; a small share of invalid
    annotations (degenerate boxes, broken polygons) is reported in one
    warning and ignored, as ``CocoDataset`` ignores them.

    Args:
        max_invalid_ratio (float): Fraction of invalid annotations above
            which loading fails. Defaults to 0.01.
        **kwargs: Arguments of :class:`~mmdet.datasets.CocoDataset`.
    """

    def __init__(self, *args, max_invalid_ratio: float = 0.01,
                 **kwargs) -> None:
        self.max_invalid_ratio = max_invalid_ratio
        self._checked = False
        super().__init__(*args, **kwargs)

    def load_data_list(self) -> List[dict]:
        """Load the annotations as ``CocoDataset`` does, checking them first.

        Returns:
            list[dict]: The data list.

        Raises:
            ValueError: If the file does not fit the config or is broken.
        """
        if not osp.isfile(self.ann_file) and '://' not in self.ann_file:
            raise InputFileNotFoundError(
                f'COCO annotation file {self.ann_file!r} not found (set '
                'data_root and ann_file of the dataloaders)')
        self._checked = False
        try:
            data_list = super().load_data_list()
        except json.JSONDecodeError as exc:  # the message names no file
            size = osp.getsize(self.ann_file) if osp.isfile(
                self.ann_file) else None
            raise InputError(
                f'COCO annotation file {self.ann_file!r} is not valid JSON'
                + (f' ({size} bytes)' if size is not None else '') +
                f': {exc}; the file is truncated or corrupt (an interrupted '
                'download or copy?): download or write it again') from exc
        if not self._checked:  # no image: parse_data_info never ran
            raise InputError(f'COCO annotation file {self.ann_file!r} lists '
                             'no images')
        return data_list

    def parse_data_info(self, raw_data_info: dict) -> dict:
        """Check the whole file at the first image, then parse as
        ``CocoDataset`` does."""
        if not self._checked:
            self._checked = True
            self._check(self.coco.dataset)
        return super().parse_data_info(raw_data_info)

    def _check(self, data: dict) -> None:
        report = check_coco_annotations(
            data,
            classes=self.metainfo.get('classes'),
            ann_file=self.ann_file,
            max_invalid_ratio=self.max_invalid_ratio)
        if report.errors:
            raise InputError('\n'.join(report.errors))
        if report.invalid:
            print_log(
                report.summary(), logger='current', level=logging.WARNING)
        for note in report.notes:
            print_log(note, logger='current')
