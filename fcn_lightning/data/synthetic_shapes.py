"""Drawing one scene of the synthetic dataset: the classes, their shapes and textures.

Scenes are drawn at `SUPERSAMPLE` times the output resolution and box-averaged down, so
edges are anti-aliased as in a photograph. A pixel that a class boundary passes through
(or runs along) is labelled 255, void: a 1-2 px version of PASCAL VOC's boundary band.
Such pixels are a blend of two classes, so they are neither learned nor scored, and two
classes never touch without void between them.

A class is a shape in a scene: *what* an object is depends on its own shape (disc,
cross, wire) and on the scene it is in, and the scene shows only in the ground band along
the bottom of the image (striped or checkered), mostly far from the objects. A net that
sees a few dozen pixels around an object can tell its shape but must guess its scene; one
that sees the whole image can tell both, as in PASCAL, where a boat and a car can look
alike up close and the water tells them apart. *Where* an object is takes a fine output
stride: sizes are in output pixels and do not scale with the image, and strokes 9-13 px
wide and discs 12-18 px across vanish at a 32 px output stride and are resolved at 8 px.

Every object takes its colours from one shared palette and the background carries
soft-edged blobs in the same colours, so no colour belongs to one class; smooth colour
fields, soft blobs and the ground band are background.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from itertools import pairwise

import numpy as np

SUPERSAMPLE = 3
VOID = 255

SHAPES: tuple[str, ...] = ("disc", "cross", "wire")
SCENES: tuple[str, ...] = ("striped", "checkered")  # the ground band's texture
CLASSES: tuple[str, ...] = (
    "background",
    *(f"{shape}@{scene}" for scene in SCENES for shape in SHAPES),
)
BACKGROUND = CLASSES.index("background")
OBJECT_CLASSES: tuple[int, ...] = tuple(range(1, len(CLASSES)))


def class_index(shape: str, scene: str) -> int:
    return CLASSES.index(f"{shape}@{scene}")


PALETTE = np.array(
    [
        (220, 40, 40),  # red
        (40, 170, 60),  # green
        (45, 75, 220),  # blue
        (235, 210, 40),  # yellow
        (40, 200, 210),  # cyan
        (200, 50, 190),  # magenta
        (240, 140, 30),  # orange
        (235, 235, 235),  # white
        (30, 30, 30),  # black
    ],
    dtype=np.float32,
)

# Sizes in output pixels (low, high): strokes and small objects are thin or small next to
# a 32 px output stride and resolvable at 8 px.
STROKE_WIDTH = (9.0, 13.0)
SMALL_DISC_RADIUS = (6.0, 9.0)
LARGE_DISC_RADIUS = (10.0, 22.0)
CROSS_HALF_LENGTH = (10.0, 18.0)
# The ground band: tall enough to read its texture, low enough to leave room for objects.
GROUND_HEIGHT = (10.0, 14.0)
# An object needs this much RGB distance from the background under it to be visible at all;
# an invisible object would be label noise no model can learn.
MIN_CONTRAST = 90.0
PIXEL_NOISE_STD = 5.0

Mask = Callable[[np.ndarray, np.ndarray], np.ndarray]
Paint = Callable[[np.ndarray, np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Scene:
    image: np.ndarray  # H x W x 3 uint8 RGB
    label: np.ndarray  # H x W uint8: class index, or VOID on boundaries


class _Canvas:
    """Supersampled RGB and label planes; shapes are given in output-pixel coordinates."""

    def __init__(self, height: int, width: int) -> None:
        self.height, self.width = height, width
        self.rgb = np.zeros((height * SUPERSAMPLE, width * SUPERSAMPLE, 3), np.float32)
        self.label = np.full((height * SUPERSAMPLE, width * SUPERSAMPLE), BACKGROUND, np.uint8)
        self.ground_top = float(height)  # objects are placed above this row

    def window(self, y0: float, y1: float, x0: float, x1: float):
        """The sub-pixel slices covering a box, and their centres' coordinates."""
        s = SUPERSAMPLE
        r0, r1 = max(int(np.floor(y0 * s)), 0), min(int(np.ceil(y1 * s)), self.height * s)
        c0, c1 = max(int(np.floor(x0 * s)), 0), min(int(np.ceil(x1 * s)), self.width * s)
        yy = ((np.arange(r0, r1, dtype=np.float32) + 0.5) / s)[:, None]
        xx = ((np.arange(c0, c1, dtype=np.float32) + 0.5) / s)[None, :]
        return (slice(r0, r1), slice(c0, c1)), yy, xx

    def paint(self, cls: int, box: tuple[float, ...], inside: Mask, colour: Paint) -> None:
        win, yy, xx = self.window(*box)
        if yy.size == 0 or xx.size == 0:
            return
        mask = inside(yy, xx)
        rgb = np.broadcast_to(colour(yy, xx), (*mask.shape, 3))
        self.rgb[win][mask] = rgb[mask]
        self.label[win][mask] = cls

    def blend(self, box: tuple[float, ...], alpha: Paint, colour: np.ndarray) -> None:
        """Background-only paint: changes colours, never labels."""
        win, yy, xx = self.window(*box)
        if yy.size == 0 or xx.size == 0:
            return
        a = alpha(yy, xx)[..., None]
        self.rgb[win] = (1 - a) * self.rgb[win] + a * colour

    def colour_at(self, y: float, x: float) -> np.ndarray:
        """What is painted so far at a point: a new object must stand out from it."""
        r = min(max(int(y * SUPERSAMPLE), 0), self.height * SUPERSAMPLE - 1)
        c = min(max(int(x * SUPERSAMPLE), 0), self.width * SUPERSAMPLE - 1)
        return self.rgb[r, c]

    def finish(self, rng: np.random.Generator) -> Scene:
        rgb = _block_mean(self.rgb)
        rgb += rng.normal(0.0, PIXEL_NOISE_STD, rgb.shape).astype(np.float32)
        s, fine = SUPERSAMPLE, self.label
        # Marking the sub-pixels on both sides of every class change makes the void band
        # unbroken (1-2 px), even where a boundary runs exactly between two pixels.
        edge = np.zeros(fine.shape, bool)
        rows, cols = fine[1:] != fine[:-1], fine[:, 1:] != fine[:, :-1]
        edge[1:] |= rows
        edge[:-1] |= rows
        edge[:, 1:] |= cols
        edge[:, :-1] |= cols
        void = edge.reshape(self.height, s, self.width, s).any(axis=(1, 3))
        label = np.where(void, VOID, fine[s // 2 :: s, s // 2 :: s]).astype(np.uint8)
        return Scene(np.clip(np.rint(rgb), 0, 255).astype(np.uint8), label)


def _block_mean(rgb: np.ndarray) -> np.ndarray:
    """Box-filter a supersampled plane down to output pixels (anti-aliasing)."""
    s = SUPERSAMPLE
    rows, cols = rgb.shape[0] // s, rgb.shape[1] // s
    summed = rgb.reshape(rows * s, cols, s, 3).sum(axis=2)
    return summed.reshape(rows, s, cols, 3).sum(axis=1) / (s * s)


def _rotated(yy: np.ndarray, xx: np.ndarray, cy: float, cx: float, angle: float):
    """Coordinates along and across a direction `angle` from the point (cy, cx)."""
    c, s = np.cos(angle), np.sin(angle)
    dy, dx = yy - cy, xx - cx
    return dx * c + dy * s, -dx * s + dy * c


def _segment_distance(yy: np.ndarray, xx: np.ndarray, p: np.ndarray, q: np.ndarray):
    d = q - p
    t = ((yy - p[0]) * d[0] + (xx - p[1]) * d[1]) / max(float(d @ d), 1e-6)
    t = np.clip(t, 0.0, 1.0)
    return np.hypot(yy - (p[0] + t * d[0]), xx - (p[1] + t * d[1]))


def _pick_colour(rng: np.random.Generator, avoid: np.ndarray) -> np.ndarray:
    """A palette colour (slightly jittered) that stands out from `avoid`."""
    far = [c for c in PALETTE if np.linalg.norm(c - avoid) >= MIN_CONTRAST]
    choices = far or [PALETTE[np.argmax(np.linalg.norm(PALETTE - avoid, axis=1))]]
    base = choices[rng.integers(len(choices))]
    return np.clip(base + rng.uniform(-15, 15, 3), 0, 255).astype(np.float32)


def _solid(colour: np.ndarray) -> Paint:
    return lambda yy, xx: colour


def _linear_weights(nodes: int, length: int) -> np.ndarray:
    """`length x nodes` weights that interpolate `nodes` values linearly along `length`."""
    pos = np.linspace(0, nodes - 1, length, dtype=np.float32)[:, None]
    return np.maximum(1 - np.abs(pos - np.arange(nodes, dtype=np.float32)), 0)


def _draw_background(canvas: _Canvas, rng: np.random.Generator) -> None:
    """A smooth colour field plus soft blobs in object colours: colour alone says nothing."""
    grid = rng.integers(2, 5, size=2)
    greys = rng.uniform(40, 200, size=(*grid, 1))
    tints = PALETTE[rng.integers(len(PALETTE), size=tuple(grid))]
    mix = rng.uniform(0.0, 0.7, size=(*grid, 1))
    nodes = ((1 - mix) * greys + mix * tints).astype(np.float32)
    rows = _linear_weights(grid[0], canvas.height)
    cols = _linear_weights(grid[1], canvas.width)
    field = np.einsum("yi,ijc,xj->yxc", rows, nodes, cols)
    # Smooth at the pixel scale, so sub-pixels may share their pixel's value.
    canvas.rgb[:] = field.repeat(SUPERSAMPLE, axis=0).repeat(SUPERSAMPLE, axis=1)
    for _ in range(rng.integers(1, 4)):
        cy, cx = rng.uniform(0, canvas.height), rng.uniform(0, canvas.width)
        sigma = rng.uniform(3.0, 7.0)
        colour = PALETTE[rng.integers(len(PALETTE))]

        def alpha(yy, xx, cy=cy, cx=cx, sigma=sigma):
            # A flat core, then a slow fade: the fade is what tells it from a disc.
            r = np.maximum(np.hypot(yy - cy, xx - cx) - sigma, 0.0)
            return np.exp(-0.5 * (r / sigma) ** 2)

        reach = 4 * sigma
        canvas.blend((cy - reach, cy + reach, cx - reach, cx + reach), alpha, colour)


def _place(canvas: _Canvas, rng: np.random.Generator, margin: float = 4.0):
    """An object's centre: anywhere above the ground band."""
    return (
        rng.uniform(margin, max(canvas.ground_top - margin, margin + 1)),
        rng.uniform(margin, canvas.width - margin),
    )


def _draw_disc(canvas: _Canvas, rng: np.random.Generator, cls: int) -> None:
    cy, cx = _place(canvas, rng)
    # Two thirds small (6-12 px across: below one stride-16 cell), the rest large.
    small = rng.random() < 2 / 3
    radius = rng.uniform(*SMALL_DISC_RADIUS) if small else rng.uniform(*LARGE_DISC_RADIUS)
    squash, angle = rng.uniform(0.7, 1.0), rng.uniform(0, np.pi)
    colour = _pick_colour(rng, canvas.colour_at(cy, cx))

    def inside(yy, xx):
        u, v = _rotated(yy, xx, cy, cx, angle)
        return (u / radius) ** 2 + (v / (radius * squash)) ** 2 <= 1.0

    box = (cy - radius, cy + radius, cx - radius, cx + radius)
    canvas.paint(cls, box, inside, _solid(colour))


def _draw_cross(canvas: _Canvas, rng: np.random.Generator, cls: int) -> None:
    cy, cx = _place(canvas, rng)
    half_len = rng.uniform(*CROSS_HALF_LENGTH)
    half_width = rng.uniform(*STROKE_WIDTH) / 2
    angle = rng.uniform(0, np.pi / 2)
    colour = _pick_colour(rng, canvas.colour_at(cy, cx))

    def inside(yy, xx):
        u, v = np.abs(_rotated(yy, xx, cy, cx, angle))
        return ((u <= half_len) & (v <= half_width)) | ((v <= half_len) & (u <= half_width))

    reach = half_len * np.sqrt(2)
    canvas.paint(cls, (cy - reach, cy + reach, cx - reach, cx + reach), inside, _solid(colour))


def _draw_wire(canvas: _Canvas, rng: np.random.Generator, cls: int) -> None:
    """A curved stroke (quadratic Bezier) running across a good part of the area above the
    ground."""
    h, w = canvas.ground_top, canvas.width
    ends = rng.uniform((0, 0), (h, w), size=(2, 2))
    while np.linalg.norm(ends[1] - ends[0]) < 0.5 * min(h, w):
        ends[1] = rng.uniform((0, 0), (h, w))
    control = ends.mean(axis=0) + rng.normal(0.0, 0.2 * min(h, w), 2)
    control[0] = min(control[0], h)  # the bend stays above the ground too
    t = np.linspace(0.0, 1.0, 9)[:, None]
    points = (1 - t) ** 2 * ends[0] + 2 * (1 - t) * t * control + t**2 * ends[1]
    half_width = rng.uniform(*STROKE_WIDTH) / 2
    middle = points[len(points) // 2]
    colour = _pick_colour(rng, canvas.colour_at(*middle))

    def inside(yy, xx):
        dist = [_segment_distance(yy, xx, p, q) for p, q in pairwise(points)]
        return np.minimum.reduce(dist) <= half_width

    lo, hi = points.min(axis=0) - half_width, points.max(axis=0) + half_width
    canvas.paint(cls, (lo[0], hi[0], lo[1], hi[1]), inside, _solid(colour))


def _stripes(rng: np.random.Generator, a: np.ndarray, b: np.ndarray) -> Paint:
    period, angle = rng.uniform(5.0, 8.0), rng.uniform(0, np.pi)

    def colour(yy, xx):
        u, _ = _rotated(yy, xx, 0.0, 0.0, angle)
        return np.where(((u / period) % 1.0 < 0.5)[..., None], a, b)

    return colour


def _checks(rng: np.random.Generator, a: np.ndarray, b: np.ndarray) -> Paint:
    cell, angle = rng.uniform(2.5, 4.0), rng.uniform(0, np.pi / 2)

    def colour(yy, xx):
        u, v = _rotated(yy, xx, 0.0, 0.0, angle)
        parity = (np.floor(u / cell) + np.floor(v / cell)) % 2 == 0
        return np.where(parity[..., None], a, b)

    return colour


_GROUND = {"striped": _stripes, "checkered": _checks}
_DRAW = {"disc": _draw_disc, "cross": _draw_cross, "wire": _draw_wire}


def _draw_ground(canvas: _Canvas, rng: np.random.Generator, scene: str) -> None:
    """The band along the bottom whose texture names the scene; labelled background."""
    first = PALETTE[rng.integers(len(PALETTE))]
    texture = _GROUND[scene](rng, first, _pick_colour(rng, first))
    box = (canvas.ground_top, canvas.height, 0.0, canvas.width)
    win, yy, xx = canvas.window(*box)
    canvas.rgb[win] = np.broadcast_to(texture(yy, xx), (yy.shape[0], xx.shape[1], 3))


def render_scene(
    rng: np.random.Generator, height: int, width: int, scene: str, shapes: list[str]
) -> Scene:
    """Background, the ground band of `scene`, then `shapes` painted in order (later ones
    on top), each labelled as that shape in that scene."""
    canvas = _Canvas(height, width)
    canvas.ground_top = height - rng.uniform(*GROUND_HEIGHT)
    _draw_background(canvas, rng)
    _draw_ground(canvas, rng, scene)
    for shape in shapes:
        _DRAW[shape](canvas, rng, class_index(shape, scene))
    return canvas.finish(rng)
