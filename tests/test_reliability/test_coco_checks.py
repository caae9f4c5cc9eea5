"""COCO files that mmdet's CocoDataset accepts silently are reported."""
import copy
import json
import os.path as osp
import runpy

import pytest

pytest.importorskip('mmdet')

from mmdet.datasets import CocoDataset  # noqa: E402
from mmdet.registry import DATASETS  # noqa: E402
from reliability_utils import ROOT  # noqa: E402

from auglocal_det.datasets.checked_coco import (  # noqa: E402
    CheckedCocoDataset,
    check_coco_annotations,
)
from auglocal_det.errors import InputError  # noqa: E402

CLASSES = ('circle', 'square', 'triangle')


def _polygon(x, y, s):
    return [[x, y, x + s, y, x + s, y + s, x, y + s]]


def _coco(num_good: int = 20) -> dict:
    """Two 64x64 images; ``num_good`` valid annotations plus one of each
    problem."""
    images = [
        dict(id=1, file_name='a.jpg', width=64, height=64),
        dict(id=2, file_name='b.jpg', width=64, height=64),
    ]
    anns = []
    for i in range(num_good):
        anns.append(
            dict(
                id=i + 1 if i < 100 else i + 3,  # not 101, 102 (below)
                image_id=1 + i % 2,
                category_id=1 + i % 3,
                bbox=[4, 4, 10, 10],
                area=100,
                segmentation=_polygon(4, 4, 10),
                iscrowd=0))
    anns += [
        dict(id=101, image_id=1, category_id=1, bbox=[5, 5, 0, 8], area=0,
             segmentation=_polygon(5, 5, 8), iscrowd=0),
        dict(id=102, image_id=2, category_id=2, bbox=[5, 5, 8, 8], area=64,
             segmentation=[[5, 5, 13, 5]], iscrowd=0),
    ]
    categories = [
        dict(id=i + 1, name=n, supercategory='shape')
        for i, n in enumerate(CLASSES)
    ]
    return dict(images=images, annotations=anns, categories=categories)


def _write(tmp_path, data, name='ann.json'):
    path = str(tmp_path / name)
    with open(path, 'w') as f:
        json.dump(data, f)
    return path


def test_report_kinds_and_ratio():
    data = _coco(num_good=300)
    report = check_coco_annotations(data, CLASSES, 'ann.json')
    assert not report.errors and report.num_invalid == 2
    summary = report.summary()
    assert "2 of 302 annotations in 'ann.json' are invalid" in summary
    assert ("1 zero-area boxes (w < 1, h < 1 or area <= 0): annotation id "
            "101 (image 'a.jpg'): bbox [5, 5, 0, 8], area 0") in summary
    assert "1 broken polygons" in summary and 'annotation id 102' in summary

    few_good = check_coco_annotations(_coco(num_good=20), CLASSES, 'ann.json')
    assert len(few_good.errors) == 1
    assert 'more than 1% of the annotations' in few_good.errors[0]


def test_unknown_category_and_image_ids_are_errors():
    data = _coco(num_good=300)
    data['annotations'][0]['category_id'] = 7
    data['annotations'][1]['image_id'] = 99
    report = check_coco_annotations(data, CLASSES, 'ann.json')
    assert len(report.errors) == 1
    assert 'annotation id 1 (image' in report.errors[0]
    assert 'category_id 7' in report.errors[0]
    assert 'image_id 99' in report.errors[0]


def test_classes_not_matching_the_file():
    data = _coco(num_good=300)
    missing = check_coco_annotations(data, ('circle', 'tri'), 'ann.json')
    message = missing.errors[0]
    print(message)  # quoted in docs/reliability.md
    assert message.startswith("class(es) ['tri'] of metainfo.classes are "
                              "not categories of 'ann.json'")
    assert "1 'circle', 2 'square', 3 'triangle'" in message

    swapped = check_coco_annotations(data, ('square', 'circle'), 'ann.json')
    assert "Use metainfo.classes=('circle', 'square')" in swapped.errors[0]
    assert 'class names would be swapped' in swapped.errors[0]

    subset = check_coco_annotations(data, ('circle', 'square'), 'ann.json')
    assert not subset.errors
    assert "categories ['triangle']" in subset.notes[0]


def _build(tmp_path, data, dataset_type='CheckedCocoDataset', **kwargs):
    """Build from mmdet's registry, as the detection configs do."""
    return DATASETS.build(
        dict(
            type=dataset_type,
            _scope_='mmdet',
            data_root=str(tmp_path),
            ann_file=_write(tmp_path, data),
            data_prefix=dict(img=''),
            metainfo=dict(classes=kwargs.pop('classes', CLASSES)),
            pipeline=[],
            **kwargs))


def test_checked_dataset(tmp_path):
    data = _coco(num_good=20)
    # mmdet's own dataset drops the bad annotations without a word
    plain = _build(tmp_path, data, dataset_type='CocoDataset')
    assert isinstance(plain, CocoDataset)
    # the zero-area box is gone; the broken polygon is kept as an instance
    assert sum(len(d['instances']) for d in plain) == 21

    with pytest.raises(ValueError, match='2 of 22 annotations') as info:
        _build(tmp_path, data)
    assert osp.join(str(tmp_path), 'ann.json') in str(info.value)

    tolerant = _build(tmp_path, data, max_invalid_ratio=0.2)
    assert isinstance(tolerant, CheckedCocoDataset) and len(tolerant) == 2

    with pytest.raises(ValueError, match="class\\(es\\) \\['tri'\\]"):
        _build(tmp_path, _coco(300), classes=('circle', 'tri'))

    empty = copy.deepcopy(data)
    empty['images'], empty['annotations'] = [], []
    with pytest.raises(ValueError, match='lists no images'):
        _build(tmp_path, empty)


def test_check_coco_tool(tmp_path, capsys):
    tool = runpy.run_path(osp.join(ROOT, 'tools', 'misc', 'check_coco.py'))
    bad = _write(tmp_path, _coco(num_good=20), 'bad.json')
    good = _write(tmp_path, _coco(num_good=300), 'good.json')
    assert tool['main']([good, '--classes', *CLASSES]) == 0
    assert tool['main']([bad, '--classes', 'circle', 'tri']) == 1
    out = capsys.readouterr().out
    assert "error: class(es) ['tri']" in out
    assert 'zero-area boxes' in out
    assert tool['main']([str(tmp_path / 'missing.json')]) == 1


def test_truncated_annotation_file_is_named(tmp_path):
    """json's own message ("Expecting ',' delimiter: line 1 column ...")
    names no file; the dataset's does."""
    path = osp.join(str(tmp_path), _write(tmp_path, _coco(num_good=20)))
    with open(path) as f:
        text = f.read()
    with open(path, 'w') as f:
        f.write(text[:len(text) // 2])
    with pytest.raises(InputError) as info:
        DATASETS.build(
            dict(
                type='CheckedCocoDataset',
                _scope_='mmdet',
                data_root=str(tmp_path),
                ann_file='ann.json',
                data_prefix=dict(img=''),
                metainfo=dict(classes=CLASSES),
                pipeline=[]))
    print(f'InputError: {info.value}')
    assert str(info.value).startswith(
        f'COCO annotation file {path!r} is not valid JSON (')
