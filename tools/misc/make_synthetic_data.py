"""Generate the synthetic demo data sets in their real on-disk formats.

Examples::

    # ImageNet folder layout (sizes from configs/_base_/datasets/
    # synthetic_imagenet.py unless given)
    python tools/misc/make_synthetic_data.py imagenet data/synthetic_imagenet
    # COCO-style instance segmentation
    python tools/misc/make_synthetic_data.py coco data/synthetic_coco \\
        --num-train 200 --num-val 50 --image-size 128
    # CIFAR-10 / SVHN / STL-10 / Fashion-MNIST / MNIST files in their
    # official formats (oriented gratings, 10 classes), readable by the
    # small-image configs
    python tools/misc/make_synthetic_data.py cifar10 data/cifar10_synthetic \\
        --num-train 1000 --num-test 500
"""
import argparse
import os.path as osp
import sys

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, ROOT)

from mmengine.config import Config  # noqa: E402

from auglocal_det.testing import (  # noqa: E402
    generate_coco_shapes,
    generate_imagenet_shapes,
    write_small_image_set,  # noqa: E402
)

#: Sub-command -> dataset type of the small-image sets.
SMALL_IMAGE_SETS = {
    'cifar10': 'CIFAR10', 'svhn': 'SVHN', 'stl10': 'STL10',
    'fashion-mnist': 'FashionMNIST', 'mnist': 'MNIST'
}

DATA_CONFIG = osp.join(ROOT, 'configs', '_base_', 'datasets',
                       'synthetic_imagenet.py')


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Generate synthetic shapes data (deterministic)')
    sub = parser.add_subparsers(dest='kind', required=True)
    imagenet = sub.add_parser(
        'imagenet', help='train/<class>/*.JPEG, val/<class>/*.JPEG, meta/')
    imagenet.add_argument('out', help='output folder')
    imagenet.add_argument('--num-train-per-class', type=int)
    imagenet.add_argument('--num-val-per-class', type=int)
    imagenet.add_argument('--image-size', type=int)
    imagenet.add_argument('--classes', nargs='+')
    coco = sub.add_parser(
        'coco', help='annotations/instances_{train,val}.json, train/, val/')
    coco.add_argument('out', help='output folder')
    coco.add_argument('--num-train', type=int, default=200)
    coco.add_argument('--num-val', type=int, default=50)
    coco.add_argument('--image-size', type=int, default=128)
    coco.add_argument('--min-objects', type=int, default=1)
    coco.add_argument('--max-objects', type=int, default=4)
    small = []
    for kind, dataset_type in SMALL_IMAGE_SETS.items():
        p = sub.add_parser(
            kind, help=f'{dataset_type} files in the official format')
        p.add_argument('out', help='output folder (the data root)')
        p.add_argument('--num-train', type=int, default=1000)
        p.add_argument('--num-test', type=int, default=500)
        small.append(p)
    for p in (imagenet, coco, *small):
        p.add_argument('--seed', type=int)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if args.kind == 'imagenet':
        kwargs = dict(Config.fromfile(DATA_CONFIG).synthetic_data)
        for key in ('num_train_per_class', 'num_val_per_class',
                    'image_size', 'classes', 'seed'):
            if getattr(args, key) is not None:
                kwargs[key] = getattr(args, key)
        kwargs['classes'] = tuple(kwargs['classes'])
        stamp = generate_imagenet_shapes(args.out, **kwargs)
        print(f'wrote {stamp["num_images"]} images of '
              f'{stamp["image_size"]} px, classes {stamp["classes"]}, to '
              f'{args.out}')
    elif args.kind in SMALL_IMAGE_SETS:
        written = write_small_image_set(
            SMALL_IMAGE_SETS[args.kind], args.out, args.num_train,
            args.num_test, seed=args.seed or 0)
        counts = {split: len(labels) for split, (_, labels) in
                  written.items()}
        print(f'wrote {SMALL_IMAGE_SETS[args.kind]} files, {counts}, to '
              f'{args.out}')
    else:
        stamp = generate_coco_shapes(
            args.out,
            num_train=args.num_train,
            num_val=args.num_val,
            image_size=args.image_size,
            seed=args.seed or 0,
            min_objects=args.min_objects,
            max_objects=args.max_objects)
        print(f'wrote {stamp["counts"]} to {args.out}')


if __name__ == '__main__':
    main()
