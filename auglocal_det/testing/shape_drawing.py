"""Drawing of the synthetic shapes: one image per class, or a scene.

Geometric shapes and textures are drawn with random position, size,
rotation, colours and backgrounds (solid, gradient or smooth colour noise,
plus pixel noise), so a classifier has to learn shapes: the mean colour of
an image says nothing about its class. Every function draws from the
random generator it is given, so an image depends only on its seed.
"""
from typing import List, Sequence, Tuple

import numpy as np
from PIL import Image, ImageDraw

from auglocal_det.errors import InputError

__all__ = [
    'IMAGENET_SHAPE_CLASSES', 'COCO_SHAPE_CLASSES', 'shape_polygon',
    'render_classification_image', 'render_detection_image'
]

#: Classes of the ImageNet-style set: six silhouettes and two textures.
IMAGENET_SHAPE_CLASSES = ('checker', 'circle', 'cross', 'ring', 'square',
                          'star', 'stripes', 'triangle')
#: Categories of the COCO-style set (ids 1..5 in this order).
COCO_SHAPE_CLASSES = ('circle', 'square', 'triangle', 'star', 'cross')
_SUPERSAMPLE = 2  # draw at 2x and shrink: anti-aliased edges


def _random_colour(rng: np.random.Generator) -> np.ndarray:
    return rng.uniform(0, 255, size=3).astype(np.float32)


def _contrasting_colour(rng: np.random.Generator,
                        against: np.ndarray,
                        min_dist: float = 90.) -> np.ndarray:
    """A random colour at least ``min_dist`` (RGB distance) from another."""
    colour = _random_colour(rng)
    for _ in range(50):
        if np.linalg.norm(colour - against) >= min_dist:
            break
        colour = _random_colour(rng)
    return colour


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """An HxWx3 float32 background: solid, linear gradient or colour noise."""
    kind = rng.choice(3, p=(0.5, 0.35, 0.15))
    if kind == 0:
        img = np.broadcast_to(_random_colour(rng), (size, size, 3)).copy()
    elif kind == 1:
        c0, c1 = _random_colour(rng), _random_colour(rng)
        theta = rng.uniform(0, 2 * np.pi)
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
        t = xx * np.cos(theta) + yy * np.sin(theta)
        t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
        img = c0 * (1 - t[..., None]) + c1 * t[..., None]
    else:
        cells = int(rng.integers(2, 5))
        low = rng.uniform(0, 255, size=(cells, cells, 3)).astype(np.uint8)
        img = np.asarray(
            Image.fromarray(low).resize((size, size), Image.BICUBIC),
            dtype=np.float32)
    return img.astype(np.float32)


def _texture(rng: np.random.Generator, size: int, kind: str) -> np.ndarray:
    """Two-colour stripes or checkerboard, random period and angle."""
    c0 = _random_colour(rng)
    c1 = _contrasting_colour(rng, c0, 110.)
    period = rng.uniform(0.07, 0.16) * size
    theta = rng.uniform(0, np.pi)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    u = xx * np.cos(theta) + yy * np.sin(theta)
    v = -xx * np.sin(theta) + yy * np.cos(theta)
    phase = rng.uniform(0, 1)
    if kind == 'stripes':
        on = np.floor(u / period + phase) % 2 == 0
    elif kind == 'checker':
        on = (np.floor(u / period + phase) + np.floor(v / period)) % 2 == 0
    else:
        raise InputError(f'unknown texture {kind!r}')
    return np.where(on[..., None], c0, c1).astype(np.float32)


def shape_polygon(name: str, cx: float, cy: float, radius: float,
                  angle: float, rng: np.random.Generator) -> np.ndarray:
    """Vertices (N, 2) of a shape inside the circle ``(cx, cy, radius)``.

    Args:
        name (str): 'circle', 'square', 'triangle', 'star' or 'cross'.
        cx (float): Centre x.
        cy (float): Centre y.
        radius (float): Every vertex lies within this distance of the
            centre; the outermost ones lie on the circle.
        angle (float): Rotation in radians.
        rng (np.random.Generator): Source of the shape's own jitter (star
            depth, cross arm width, triangle irregularity).

    Returns:
        np.ndarray: float64 vertices in drawing order.
    """
    if name == 'circle':
        t = np.linspace(0, 2 * np.pi, 48, endpoint=False)
        pts = np.stack([np.cos(t), np.sin(t)], 1)
    elif name == 'square':
        t = np.pi / 4 + np.arange(4) * np.pi / 2
        pts = np.stack([np.cos(t), np.sin(t)], 1)
    elif name == 'triangle':
        t = np.arange(3) * 2 * np.pi / 3 + rng.uniform(-0.25, 0.25, 3)
        r = np.array([1.0, *rng.uniform(0.85, 1.0, 2)])
        pts = np.stack([np.cos(t), np.sin(t)], 1) * r[:, None]
    elif name == 'star':
        t = np.arange(10) * np.pi / 5 - np.pi / 2
        r = np.where(np.arange(10) % 2 == 0, 1.0, rng.uniform(0.38, 0.5))
        pts = np.stack([np.cos(t), np.sin(t)], 1) * r[:, None]
    elif name == 'cross':
        w = rng.uniform(0.2, 0.3)
        a = np.sqrt(1 - w * w)
        pts = np.array([(-w, a), (w, a), (w, w), (a, w), (a, -w), (w, -w),
                        (w, -a), (-w, -a), (-w, -w), (-a, -w), (-a, w),
                        (-w, w)])
    else:
        raise InputError(f'unknown shape {name!r}; expected one of '
                         f'circle, square, triangle, star, cross')
    rot = np.array([[np.cos(angle), -np.sin(angle)],
                    [np.sin(angle), np.cos(angle)]])
    return pts @ rot.T * radius + np.array([cx, cy])


def _mask(size: int, polygons: Sequence[np.ndarray],
          holes: Sequence[np.ndarray] = ()) -> np.ndarray:
    """Float mask (size, size) in [0, 1] of polygons minus holes."""
    canvas = Image.new('L', (size, size), 0)
    draw = ImageDraw.Draw(canvas)
    for poly in polygons:
        draw.polygon([tuple(p) for p in poly], fill=255)
    for poly in holes:
        draw.polygon([tuple(p) for p in poly], fill=0)
    return np.asarray(canvas, dtype=np.float32) / 255.


def _shaded(rng: np.random.Generator, colour: np.ndarray,
            size: int) -> np.ndarray:
    """A solid colour with a mild random lighting gradient."""
    theta = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    t = (xx * np.cos(theta) + yy * np.sin(theta))[..., None]
    strength = rng.uniform(0, 0.25)
    return np.clip(colour * (1 - strength * t), 0, 255)


def _finish(rng: np.random.Generator, canvas: np.ndarray,
            size: int) -> Image.Image:
    """Shrink the supersampled canvas and add pixel noise."""
    img = Image.fromarray(np.clip(canvas, 0, 255).astype(np.uint8))
    img = img.resize((size, size), Image.BOX)
    arr = np.asarray(img, dtype=np.float32)
    arr = arr + rng.normal(0, rng.uniform(0, 6), arr.shape)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def render_classification_image(name: str, size: int,
                                rng: np.random.Generator) -> Image.Image:
    """Draw one image of class ``name`` of :data:`IMAGENET_SHAPE_CLASSES`.

    Args:
        name (str): The class.
        size (int): Side of the square image in pixels.
        rng (np.random.Generator): The image's random generator.

    Returns:
        PIL.Image.Image: An RGB image.
    """
    big = size * _SUPERSAMPLE
    bg = _background(rng, big)
    angle = rng.uniform(0, 2 * np.pi)
    if name in ('stripes', 'checker'):
        radius = rng.uniform(0.3, 0.46) * big
    else:
        radius = rng.uniform(0.22, 0.44) * big
    cx, cy = rng.uniform(radius, big - radius, 2)
    if name in ('stripes', 'checker'):
        region = 'circle' if rng.random() < 0.5 else 'square'
        mask = _mask(big, [shape_polygon(region, cx, cy, radius, angle, rng)])
        fg = _texture(rng, big, name)
    else:
        if name == 'ring':
            outer = shape_polygon('circle', cx, cy, radius, angle, rng)
            inner = shape_polygon('circle', cx, cy,
                                  radius * rng.uniform(0.45, 0.65), angle,
                                  rng)
            mask = _mask(big, [outer], [inner])
        else:
            mask = _mask(big,
                         [shape_polygon(name, cx, cy, radius, angle, rng)])
        colour = _contrasting_colour(rng, bg.reshape(-1, 3).mean(0))
        fg = _shaded(rng, colour, big)
    canvas = bg * (1 - mask[..., None]) + fg * mask[..., None]
    return _finish(rng, canvas, size)


def _polygon_area(poly: np.ndarray) -> float:
    x, y = poly[:, 0], poly[:, 1]
    twice = np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))
    return float(0.5 * abs(twice))


def render_detection_image(size: int, rng: np.random.Generator,
                           min_objects: int,
                           max_objects: int) -> Tuple[Image.Image, list]:
    """Draw several non-overlapping shapes; return the image and objects.

    Args:
        size (int): Side of the square image.
        rng (np.random.Generator): The image's random generator.
        min_objects (int): Fewest shapes per image.
        max_objects (int): Most shapes per image (fewer if they do not fit).

    Returns:
        tuple: The RGB image and a list of ``(category_index, polygon)``
        with the polygon in image pixel coordinates.
    """
    big = size * _SUPERSAMPLE
    bg = _background(rng, big)
    bg_mean = bg.reshape(-1, 3).mean(0)
    wanted = int(rng.integers(min_objects, max_objects + 1))
    placed: List[Tuple[float, float, float]] = []
    objects = []
    canvas = bg
    for _ in range(wanted * 30):
        if len(objects) == wanted:
            break
        radius = rng.uniform(0.08, 0.22) * size
        cx, cy = rng.uniform(radius + 1, size - radius - 1, 2)
        if any(np.hypot(cx - x, cy - y) < radius + r + 2
               for x, y, r in placed):
            continue
        cat = int(rng.integers(len(COCO_SHAPE_CLASSES)))
        poly = shape_polygon(COCO_SHAPE_CLASSES[cat], cx, cy, radius,
                             rng.uniform(0, 2 * np.pi), rng)
        mask = _mask(big, [poly * _SUPERSAMPLE])
        fg = _shaded(rng, _contrasting_colour(rng, bg_mean), big)
        canvas = canvas * (1 - mask[..., None]) + fg * mask[..., None]
        placed.append((cx, cy, radius))
        objects.append((cat, poly))
    return _finish(rng, canvas, size), objects
