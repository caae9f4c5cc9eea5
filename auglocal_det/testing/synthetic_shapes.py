"""Deterministic synthetic data in the real on-disk formats, for demos/tests.

Two generators write the shapes and textures of ``shape_drawing.py``
(random position, size, rotation, colours and backgrounds, so a classifier
has to learn shapes: the mean colour of an image says nothing about its
class).

- :func:`generate_imagenet_shapes` writes an ImageNet-style classification
  set, ``train/<class>/*.JPEG`` and ``val/<class>/*.JPEG`` (one shape or
  textured patch per image) plus ``meta/{train,val}.txt`` lists and
  ``meta/classes.txt``, readable by :class:`~auglocal_det.datasets.ImageNet`
  in both of its layouts.
- :func:`generate_coco_shapes` writes a COCO-style instance segmentation
  set, ``annotations/instances_{train,val}.json`` and ``{train,val}/*.jpg``,
  with several non-overlapping shapes per image, each annotated with a
  polygon, its bbox and area.

Every image is drawn from its own random generator seeded by
``(seed, split, index)``, so the output depends only on the arguments. Both
generators write a ``synthetic.json`` stamp last; :func:`ensure_synthetic`
regenerates a folder only when its stamp is missing or differs.
"""
import inspect
import json
import os
import os.path as osp
import shutil
import sys
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
from mmengine.utils import ProgressBar

from auglocal_det.errors import InputError

from .shape_drawing import (
    COCO_SHAPE_CLASSES,
    IMAGENET_SHAPE_CLASSES,
    _polygon_area,
    render_classification_image,
    render_detection_image,
    shape_polygon,
)

__all__ = [
    'IMAGENET_SHAPE_CLASSES', 'COCO_SHAPE_CLASSES',
    'generate_imagenet_shapes', 'generate_coco_shapes', 'ensure_synthetic',
    'shape_polygon'
]

STAMP = 'synthetic.json'
#: Bumped whenever the drawing changes, so that old data are regenerated.
GENERATOR_VERSION = 1
_SPLIT_IDS = {'train': 0, 'val': 1, 'test': 2}


# ----------------------------------------------------------------------
# stamps and atomic folders
# ----------------------------------------------------------------------
def _read_stamp(root: str) -> Optional[dict]:
    path = osp.join(root, STAMP)
    if not osp.isfile(path):
        return None
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _write_json(path: str, obj) -> None:
    tmp = f'{path}.tmp{os.getpid()}'
    with open(tmp, 'w') as f:
        json.dump(obj, f)
    os.replace(tmp, path)


def _prepare_root(root: str) -> str:
    """Check ``root`` can be (re)written; return a fresh staging folder."""
    if osp.exists(root):
        if not osp.isdir(root):
            raise FileExistsError(f'{root!r} exists and is not a folder')
        if os.listdir(root) and _read_stamp(root) is None:
            raise FileExistsError(
                f'{root!r} exists, is not empty and was not written by the '
                f'synthetic data generator (no {STAMP}); choose another '
                f'folder or remove it')
    parent = osp.dirname(osp.abspath(root))
    os.makedirs(parent, exist_ok=True)
    staging = osp.join(parent,
                       f'.{osp.basename(osp.abspath(root))}.tmp{os.getpid()}')
    shutil.rmtree(staging, ignore_errors=True)
    os.makedirs(staging)
    return staging


def _publish(staging: str, root: str, stamp: dict) -> None:
    """Replace ``root`` by the finished staging folder.

    If another process has meanwhile published the same data set (same
    stamp), its copy is kept, so that readers of ``root`` are not
    disturbed; an older set is moved aside before the swap and deleted
    after it.
    """
    if _read_stamp(root) == stamp:
        shutil.rmtree(staging, ignore_errors=True)
        return
    old = None
    if osp.exists(root):
        old = f'{staging}.old'
        os.replace(root, old)
    os.replace(staging, root)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _progress_bar(total: int, progress: bool) -> Optional[ProgressBar]:
    """A progress bar on a terminal only (a log file would get one line per
    image)."""
    if progress and sys.stdout.isatty():
        return ProgressBar(total)
    return None


def _rng(seed: int, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, _SPLIT_IDS.get(split, 9), index])


# ----------------------------------------------------------------------
# ImageNet-style classification set
# ----------------------------------------------------------------------
def generate_imagenet_shapes(root: str,
                             num_train_per_class: int = 300,
                             num_val_per_class: int = 50,
                             image_size: int = 64,
                             seed: int = 0,
                             classes: Sequence[str] = IMAGENET_SHAPE_CLASSES,
                             quality: int = 90,
                             progress: bool = True) -> dict:
    """Write an ImageNet-style folder of synthetic shape images.

    Layout::

        root/train/<class>/<class>_00000.JPEG ...
        root/val/<class>/<class>_00000.JPEG ...
        root/meta/train.txt, val.txt   "<class>/<file>.JPEG <label>" lines
        root/meta/classes.txt          class names in label order
        root/synthetic.json            the arguments (the stamp)

    Args:
        root (str): Output folder; replaced if it holds an older synthetic
            set, refused if it holds anything else.
        num_train_per_class (int): Training images per class. Defaults to
            300.
        num_val_per_class (int): Validation images per class. Defaults to
            50.
        image_size (int): Side of the square images. Defaults to 64.
        seed (int): Random seed. Defaults to 0.
        classes (Sequence[str]): Subset of :data:`IMAGENET_SHAPE_CLASSES`,
            in label order. Defaults to all eight (sorted).
        quality (int): JPEG quality. Defaults to 90.
        progress (bool): Show a progress bar (on a terminal). Defaults to
            True.

    Returns:
        dict: The stamp (arguments, class list and image counts).
    """
    unknown = [c for c in classes if c not in IMAGENET_SHAPE_CLASSES]
    if unknown:
        raise InputError(f'unknown synthetic classes {unknown}; choose from '
                         f'{IMAGENET_SHAPE_CLASSES}')
    if image_size < 16:
        raise InputError(f'image_size must be >= 16, got {image_size}')
    stamp = dict(
        kind='imagenet_shapes',
        version=GENERATOR_VERSION,
        num_train_per_class=int(num_train_per_class),
        num_val_per_class=int(num_val_per_class),
        image_size=int(image_size),
        seed=int(seed),
        classes=list(classes),
        quality=int(quality))
    staging = _prepare_root(root)
    jobs = []
    for split, per_class in (('train', num_train_per_class),
                             ('val', num_val_per_class)):
        for label, name in enumerate(classes):
            os.makedirs(osp.join(staging, split, name))
            for i in range(per_class):
                jobs.append((split, label, name, i))
    bar = _progress_bar(len(jobs), progress)
    lines: Dict[str, List[str]] = {'train': [], 'val': []}
    for split, label, name, i in jobs:
        # one generator per image: independent of order and of the other
        # classes' counts
        index = (IMAGENET_SHAPE_CLASSES.index(name) << 24) + i
        img = render_classification_image(name, image_size,
                                          _rng(seed, split, index))
        rel = f'{name}/{name}_{i:05d}.JPEG'
        img.save(osp.join(staging, split, rel), 'JPEG', quality=quality)
        lines[split].append(f'{rel} {label}')
        if bar is not None:
            bar.update()
    if bar is not None:
        print()
    os.makedirs(osp.join(staging, 'meta'))
    for split, split_lines in lines.items():
        with open(osp.join(staging, 'meta', f'{split}.txt'), 'w') as f:
            f.write('\n'.join(split_lines) + '\n')
    with open(osp.join(staging, 'meta', 'classes.txt'), 'w') as f:
        f.write('\n'.join(classes) + '\n')
    stamp['num_images'] = {k: len(v) for k, v in lines.items()}
    _write_json(osp.join(staging, STAMP), stamp)
    _publish(staging, root, stamp)
    return stamp


# ----------------------------------------------------------------------
# COCO-style instance segmentation set
# ----------------------------------------------------------------------
def generate_coco_shapes(root: str,
                         num_train: int = 200,
                         num_val: int = 50,
                         image_size: int = 128,
                         seed: int = 0,
                         min_objects: int = 1,
                         max_objects: int = 4,
                         quality: int = 90,
                         progress: bool = True) -> dict:
    """Write a COCO-style instance segmentation set of synthetic shapes.

    Layout::

        root/annotations/instances_train.json, instances_val.json
        root/train/000000000001.jpg ...
        root/val/000000000001.jpg ...
        root/synthetic.json                  the arguments (the stamp)

    Each JSON holds ``images`` (``id`` from 1, ``file_name``, ``width``,
    ``height``), ``annotations`` (``id`` from 1, ``image_id``,
    ``category_id``, ``segmentation`` as a list with one polygon
    ``[x1, y1, x2, y2, ...]``, ``bbox`` ``[x, y, w, h]``, ``area`` of the
    polygon, ``iscrowd=0``) and ``categories`` (ids 1..5 for
    :data:`COCO_SHAPE_CLASSES`, supercategory 'shape'). Shapes do not
    overlap and lie fully inside the image, so the polygons are the exact
    visible masks. For mmdet, set ``metainfo=dict(classes=
    COCO_SHAPE_CLASSES)`` and ``data_prefix=dict(img='train/')``.

    Args:
        root (str): Output folder (replaced if it holds an older synthetic
            set, refused if it holds anything else).
        num_train (int): Training images. Defaults to 200.
        num_val (int): Validation images. Defaults to 50.
        image_size (int): Side of the square images. Defaults to 128.
        seed (int): Random seed. Defaults to 0.
        min_objects (int): Fewest shapes per image. Defaults to 1.
        max_objects (int): Most shapes per image. Defaults to 4.
        quality (int): JPEG quality. Defaults to 90.
        progress (bool): Show a progress bar (on a terminal). Defaults to
            True.

    Returns:
        dict: The stamp (arguments and counts of images and instances).
    """
    if not 1 <= min_objects <= max_objects:
        raise InputError(f'need 1 <= min_objects <= max_objects, got '
                         f'{min_objects}, {max_objects}')
    if image_size < 32:
        raise InputError(f'image_size must be >= 32, got {image_size}')
    stamp = dict(
        kind='coco_shapes',
        version=GENERATOR_VERSION,
        num_train=int(num_train),
        num_val=int(num_val),
        image_size=int(image_size),
        seed=int(seed),
        min_objects=int(min_objects),
        max_objects=int(max_objects),
        quality=int(quality),
        classes=list(COCO_SHAPE_CLASSES))
    staging = _prepare_root(root)
    os.makedirs(osp.join(staging, 'annotations'))
    categories = [
        dict(id=i + 1, name=name, supercategory='shape')
        for i, name in enumerate(COCO_SHAPE_CLASSES)
    ]
    bar = _progress_bar(num_train + num_val, progress)
    counts = {}
    for split, num in (('train', num_train), ('val', num_val)):
        os.makedirs(osp.join(staging, split))
        images, annotations = [], []
        for i in range(num):
            img, objects = render_detection_image(image_size,
                                                  _rng(seed, split, i),
                                                  min_objects, max_objects)
            image_id = i + 1
            file_name = f'{image_id:012d}.jpg'
            img.save(osp.join(staging, split, file_name), 'JPEG',
                     quality=quality)
            images.append(
                dict(
                    id=image_id,
                    file_name=file_name,
                    width=image_size,
                    height=image_size))
            for cat, poly in objects:
                x0, y0 = poly.min(0)
                x1, y1 = poly.max(0)
                annotations.append(
                    dict(
                        id=len(annotations) + 1,
                        image_id=image_id,
                        category_id=cat + 1,
                        segmentation=[[
                            round(float(v), 2) for v in poly.reshape(-1)
                        ]],
                        area=round(_polygon_area(poly), 2),
                        bbox=[
                            round(float(x0), 2),
                            round(float(y0), 2),
                            round(float(x1 - x0), 2),
                            round(float(y1 - y0), 2)
                        ],
                        iscrowd=0))
            if bar is not None:
                bar.update()
        _write_json(
            osp.join(staging, 'annotations', f'instances_{split}.json'),
            dict(
                info=dict(
                    description='synthetic shapes (auglocal_det)',
                    version='1.0'),
                licenses=[],
                images=images,
                annotations=annotations,
                categories=categories))
        counts[split] = dict(images=len(images), instances=len(annotations))
    if bar is not None:
        print()
    stamp['counts'] = counts
    _write_json(osp.join(staging, STAMP), stamp)
    _publish(staging, root, stamp)
    return stamp


# ----------------------------------------------------------------------
def ensure_synthetic(generator: Callable[..., dict], root: str,
                     **kwargs) -> Tuple[dict, bool]:
    """Run ``generator(root, **kwargs)`` unless ``root`` already matches.

    Args:
        generator (Callable): :func:`generate_imagenet_shapes` or
            :func:`generate_coco_shapes`.
        root (str): Output folder.
        **kwargs: The generator's arguments.

    Returns:
        tuple[dict, bool]: The stamp, and whether the data were generated
        now (False: an identical set was already there).
    """
    stamp = _read_stamp(root)
    if stamp is not None:
        wanted = _stamp_args(generator, kwargs)
        if all(stamp.get(k) == v for k, v in wanted.items()):
            return stamp, False
    return generator(root, **kwargs), True


def _stamp_args(generator: Callable[..., dict], kwargs: dict) -> dict:
    """The stamp fields implied by a generator call (defaults filled)."""
    params = inspect.signature(generator).parameters
    args = {
        name: p.default
        for name, p in params.items()
        if p.default is not inspect.Parameter.empty
    }
    args.update(kwargs)
    args.pop('progress', None)
    if 'classes' in args:
        args['classes'] = list(args['classes'])
    kind = ('imagenet_shapes' if generator is generate_imagenet_shapes else
            'coco_shapes' if generator is generate_coco_shapes else None)
    if kind is not None:
        args['kind'] = kind
        args['version'] = GENERATOR_VERSION
    return args
