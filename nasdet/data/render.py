"""Drawing the synthetic shape world with NumPy: shapes, backgrounds and distractors.

Everything here is vectorised over pixels (loops run over polygon edges or over the
handful of objects in an image, never over pixels) and draws from a caller-supplied
:class:`numpy.random.Generator`, so an image is a pure function of its generator's seed.

Conventions:

* Images are ``float32`` arrays ``(H, W, 3)`` with values in ``[0, 255]`` while being
  drawn; callers round to ``uint8`` at the end.
* A shape's ``size`` (px) is the extent of its longer axis before rotation; its
  rotated bounding box can be up to ``sqrt(2) * size`` wide.
* Coverage arrays hold the fraction (``0..1``) of each pixel inside the shape,
  estimated from ``SUPERSAMPLE x SUPERSAMPLE`` samples per pixel: anti-aliased edges,
  and a pixel belongs to an object's extent as soon as any sample falls inside it.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import numpy as np

#: The shape vocabulary, ordered roughly from most to least mutually distinct, so
#: that taking the first ``k`` shapes (the detection task) is itself a difficulty knob.
SHAPES: tuple[str, ...] = (
    "circle",
    "square",
    "triangle",
    "star",
    "ring",
    "cross",
    "heart",
    "arrow",
    "crescent",
    "diamond",
    "hexagon",
    "ellipse",
)

#: Background kinds, from easiest to hardest.
BACKGROUNDS: tuple[str, ...] = ("plain", "textured", "cluttered")

#: Samples per pixel side for anti-aliased coverage.
SUPERSAMPLE = 3

# Peak-to-peak amplitude (0..255 scale) of the linear shading ramp across an object, so
# that objects are not flat colour patches.
_SHADE = 30.0

_Inside = Callable[[np.ndarray, np.ndarray], np.ndarray]


# --------------------------------------------------------------------------- shapes
# Raw shape tests take (x, y) with y pointing up and return a boolean mask; the
# normalisation below recentres and rescales them, so raw extents do not matter.


def _polygon(vx: np.ndarray, vy: np.ndarray) -> _Inside:
    """Even-odd point-in-polygon test, vectorised over points (loops over edges)."""

    def inside(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        result = np.zeros(x.shape, dtype=bool)
        n = len(vx)
        for i in range(n):
            x1, y1, x2, y2 = vx[i], vy[i], vx[(i + 1) % n], vy[(i + 1) % n]
            if y1 == y2:
                continue
            crosses = (y1 > y) != (y2 > y)
            x_at_y = x1 + (y - y1) * ((x2 - x1) / (y2 - y1))
            result ^= crosses & (x < x_at_y)
        return result

    return inside


def _regular(n: int, start_deg: float, radii: tuple[float, ...] = (1.0,)) -> _Inside:
    """Regular polygon (one radius) or star (alternating radii) with ``n`` points."""
    count = n * len(radii)
    angles = np.deg2rad(start_deg) + 2 * np.pi * np.arange(count) / count
    r = np.array([radii[i % len(radii)] for i in range(count)])
    return _polygon(r * np.cos(angles), r * np.sin(angles))


def _raw_shapes() -> dict[str, _Inside]:
    def circle(x, y):
        return x * x + y * y <= 1.0

    def square(x, y):
        return np.maximum(np.abs(x), np.abs(y)) <= 1.0

    def ring(x, y):
        r2 = x * x + y * y
        return (r2 <= 1.0) & (r2 >= 0.5**2)

    def cross(x, y):
        ax, ay = np.abs(x), np.abs(y)
        return ((ax <= 0.32) & (ay <= 1.0)) | ((ay <= 0.32) & (ax <= 1.0))

    def heart(x, y):
        x, y = 1.2 * x, 1.2 * y
        return (x * x + y * y - 1.0) ** 3 - x * x * y**3 <= 0.0

    def crescent(x, y):
        return (x * x + y * y <= 1.0) & ((x - 0.5) ** 2 + y * y > 0.85**2)

    def diamond(x, y):
        # A rhombus, not a rotated square: rotation must not turn one class into another.
        return np.abs(x) / 0.6 + np.abs(y) <= 1.0

    def ellipse(x, y):
        return x * x + (y / 0.55) ** 2 <= 1.0

    arrow = _polygon(
        np.array([-1.0, 0.15, 0.15, 1.0, 0.15, 0.15, -1.0]),
        np.array([0.22, 0.22, 0.62, 0.0, -0.62, -0.22, -0.22]),
    )
    return {
        "circle": circle,
        "square": square,
        "triangle": _regular(3, 90.0),
        "star": _regular(5, 90.0, (1.0, 0.42)),
        "ring": ring,
        "cross": cross,
        "heart": heart,
        "arrow": arrow,
        "crescent": crescent,
        "diamond": diamond,
        "hexagon": _regular(6, 0.0),
        "ellipse": ellipse,
    }


_RAW = _raw_shapes()
assert tuple(_RAW) == SHAPES


@functools.cache
def _normaliser(shape: str) -> tuple[float, float, float]:
    """Centre ``(cx, cy)`` and half-extent of a raw shape, measured on a fine grid."""
    t = np.linspace(-1.6, 1.6, 801)
    x, y = np.meshgrid(t, t)
    mask = _RAW[shape](x, y)
    xs, ys = x[mask], y[mask]
    cx, cy = (xs.min() + xs.max()) / 2, (ys.min() + ys.max()) / 2
    half = max(xs.max() - xs.min(), ys.max() - ys.min()) / 2
    return float(cx), float(cy), float(half)


def shape_inside(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Whether points lie inside a normalised shape.

    Args:
        shape: A name from :data:`SHAPES`.
        u: Horizontal coordinates, right-positive; the shape's bounding box, unrotated,
            is centred at the origin and its longer axis spans ``[-1, 1]``.
        v: Vertical coordinates, down-positive (image convention).

    Returns:
        Boolean array of the broadcast shape of ``u`` and ``v``.
    """
    cx, cy, half = _normaliser(shape)
    return _RAW[shape](cx + u * half, cy - v * half)


def shape_coverage(
    shape: str,
    size: float,
    angle_deg: float,
    subpixel: tuple[float, float] = (0.5, 0.5),
    supersample: int = SUPERSAMPLE,
) -> np.ndarray:
    """Anti-aliased coverage of a rotated shape, cropped to its tight pixel extent.

    Args:
        shape: A name from :data:`SHAPES`.
        size: Extent of the shape's longer axis before rotation, in pixels.
        angle_deg: Rotation, counter-clockwise on screen, in degrees.
        subpixel: Position of the shape's centre inside its pixel, each in ``[0, 1)``.
        supersample: Samples per pixel side.

    Returns:
        ``float32`` array ``(h, w)`` of per-pixel coverage; its first and last rows and
        columns each contain at least one non-zero value.
    """
    side = math.ceil(size * math.sqrt(2)) + 3
    centre = side // 2
    coords = (np.arange(side * supersample, dtype=np.float64) + 0.5) / supersample
    dx = coords[None, :] - (centre + subpixel[0])
    dy = coords[:, None] - (centre + subpixel[1])
    theta = math.radians(angle_deg)
    c, s = math.cos(theta), math.sin(theta)
    scale = 2.0 / size
    # Inverse rotation of screen offsets into the shape's frame (screen y points down).
    u = (dx * c - dy * s) * scale
    v = (dx * s + dy * c) * scale
    inside = shape_inside(shape, u, v)
    cov = inside.reshape(side, supersample, side, supersample).mean(axis=(1, 3))
    rows, cols = np.nonzero(cov)
    return cov[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1].astype(np.float32)


# ------------------------------------------------------------------ backgrounds


def _coords(size: int) -> tuple[np.ndarray, np.ndarray]:
    t = np.arange(size, dtype=np.float32) + 0.5
    return t[None, :], t[:, None]


def _ramp(size: int, angle: float) -> np.ndarray:
    """Linear ramp over the image along ``angle`` (radians), scaled to ``[0, 1]``."""
    x, y = _coords(size)
    r = x * math.cos(angle) + y * math.sin(angle)
    return (r - r.min()) / max(float(r.max() - r.min()), 1e-6)


def _value_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Smooth value noise ``(size, size, 3)`` in ``[-1, 1]``: a random lattice of
    ``cells + 1`` knots per side, interpolated with a smoothstep."""
    lattice = rng.uniform(-1.0, 1.0, (cells + 1, cells + 1, 3)).astype(np.float32)
    t = (np.arange(size, dtype=np.float32) + 0.5) / size * cells
    i0 = np.minimum(t.astype(np.int64), cells - 1)
    f = t - i0
    f = f * f * (3 - 2 * f)
    rows = lattice[i0] * (1 - f)[:, None, None] + lattice[i0 + 1] * f[:, None, None]
    return rows[:, i0] * (1 - f)[None, :, None] + rows[:, i0 + 1] * f[None, :, None]


def _random_colour(rng: np.random.Generator) -> np.ndarray:
    return rng.uniform(0.0, 255.0, 3).astype(np.float32)


def render_background(rng: np.random.Generator, size: int, kind: str) -> np.ndarray:
    """A square background image.

    ``plain`` is one uniform colour. ``textured`` is a two-colour gradient plus smooth
    value noise at a random frequency and, half the time, sinusoidal stripes at a random
    frequency and angle. ``cluttered`` starts from ``textured``; its distractors are
    drawn separately by :func:`draw_distractors`.

    Args:
        rng: Random generator.
        size: Side in pixels.
        kind: One of :data:`BACKGROUNDS`.

    Returns:
        ``float32`` array ``(size, size, 3)`` in ``[0, 255]``.
    """
    if kind == "plain":
        return np.broadcast_to(_random_colour(rng), (size, size, 3)).copy()
    if kind not in BACKGROUNDS:
        raise ValueError(f"unknown background {kind!r}")
    c1 = _random_colour(rng)
    c2 = np.clip(c1 + rng.uniform(-90.0, 90.0, 3), 0, 255).astype(np.float32)
    t = _ramp(size, rng.uniform(0, 2 * math.pi))[..., None]
    img = c1 * (1 - t) + c2 * t
    cells = int(rng.integers(2, 17))
    img = img + rng.uniform(10.0, 45.0) * _value_noise(rng, size, cells)
    if rng.random() < 0.5:
        cycles = rng.uniform(2.0, 16.0)
        phase = rng.uniform(0, 2 * math.pi)
        wave = np.sin(2 * math.pi * cycles * _ramp(size, rng.uniform(0, math.pi)) + phase)
        img = img + rng.uniform(10.0, 40.0) * wave[..., None] * rng.uniform(0.3, 1.0, 3)
    return np.clip(img, 0, 255).astype(np.float32)


# ------------------------------------------------------------------ compositing


def composite(
    canvas: np.ndarray,
    coverage: np.ndarray,
    fill: np.ndarray,
    x0: int,
    y0: int,
) -> None:
    """Alpha-composite ``fill`` over ``canvas`` in place, weighted by ``coverage``.

    Args:
        canvas: ``(H, W, 3)`` float image.
        coverage: ``(h, w)`` coverage placed with its top-left pixel at ``(x0, y0)``;
            must lie inside the canvas.
        fill: ``(3,)`` colour or ``(h, w, 3)`` colour field.
        x0: Column of the top-left pixel.
        y0: Row of the top-left pixel.
    """
    h, w = coverage.shape
    region = canvas[y0 : y0 + h, x0 : x0 + w]
    a = coverage[..., None]
    region *= 1 - a
    region += a * fill


def shaded_fill(rng: np.random.Generator, colour: np.ndarray, h: int, w: int) -> np.ndarray:
    """A colour field ``(h, w, 3)``: ``colour`` plus a linear shading ramp in a random
    direction with peak-to-peak amplitude up to ``_SHADE``."""
    angle = rng.uniform(0, 2 * math.pi)
    x = np.arange(w, dtype=np.float32)[None, :] - (w - 1) / 2
    y = np.arange(h, dtype=np.float32)[:, None] - (h - 1) / 2
    r = (x * math.cos(angle) + y * math.sin(angle)) / max(h, w)
    amp = rng.uniform(-_SHADE, _SHADE)
    return np.clip(colour + amp * r[..., None], 0, 255).astype(np.float32)


def contrasting_colour(
    rng: np.random.Generator,
    canvas: np.ndarray,
    coverage: np.ndarray,
    x0: int,
    y0: int,
    min_contrast: float,
    tries: int = 12,
) -> np.ndarray:
    """A random colour at least ``min_contrast`` (Euclidean RGB distance, 0..255 scale)
    from the mean of the canvas under ``coverage``; the most distant of ``tries``
    candidates when none qualifies. Colour is drawn independently of the shape class."""
    h, w = coverage.shape
    weights = coverage[..., None]
    under = (canvas[y0 : y0 + h, x0 : x0 + w] * weights).sum((0, 1)) / weights.sum()
    best, best_d = None, -1.0
    for _ in range(tries):
        colour = _random_colour(rng)
        d = float(np.linalg.norm(colour - under))
        if d >= min_contrast:
            return colour
        if d > best_d:
            best, best_d = colour, d
    assert best is not None
    return best


# ------------------------------------------------------------------ distractors


def _segment_coverage(size: int, p0: np.ndarray, p1: np.ndarray, width: float) -> np.ndarray:
    x, y = _coords(size)
    d = p1 - p0
    t = ((x - p0[0]) * d[0] + (y - p0[1]) * d[1]) / max(float(d @ d), 1e-6)
    t = np.clip(t, 0.0, 1.0)
    dist = np.hypot(x - (p0[0] + t * d[0]), y - (p0[1] + t * d[1]))
    return np.clip(width / 2 + 0.5 - dist, 0.0, 1.0).astype(np.float32)


def _blob_coverage(rx: float, ry: float, angle: float) -> np.ndarray:
    side = math.ceil(2 * max(rx, ry)) + 3
    t = np.arange(side, dtype=np.float32) + 0.5 - side / 2
    c, s = math.cos(angle), math.sin(angle)
    u = t[None, :] * c + t[:, None] * s
    v = -t[None, :] * s + t[:, None] * c
    d = np.sqrt((u / rx) ** 2 + (v / ry) ** 2)
    return np.clip((1.0 - d) * min(rx, ry) + 0.5, 0.0, 1.0).astype(np.float32)


def fragment_coverage(
    rng: np.random.Generator,
    shape: str,
    size: float,
    angle_deg: float,
    keep_fraction: float,
) -> np.ndarray:
    """A piece of a shape: its coverage cut by a random wavy line keeping about
    ``keep_fraction`` of its area, cropped to the piece's extent.

    The cut is wavy because a straight cut through a corner of a polygon leaves a clean
    smaller polygon (a triangle, often), which would be an unannotated object."""
    cov = shape_coverage(shape, size, angle_deg, tuple(rng.uniform(0, 1, 2)))
    h, w = cov.shape
    phi = rng.uniform(0, 2 * math.pi)
    x, y = np.arange(w, dtype=np.float32)[None, :], np.arange(h, dtype=np.float32)[:, None]
    along = -x * math.sin(phi) + y * math.cos(phi)
    wave = rng.uniform(1.5, 3.0) * np.sin(
        2 * math.pi * along / rng.uniform(5.0, 10.0) + rng.uniform(0, 2 * math.pi)
    )
    proj = x * math.cos(phi) + y * math.sin(phi) + wave
    # The cut sits at the coverage-weighted quantile of the (wavy) projection.
    order = np.argsort(proj, axis=None, kind="stable")
    cum = np.cumsum(cov.ravel()[order])
    k = int(np.searchsorted(cum, keep_fraction * cum[-1]))
    threshold = proj.ravel()[order[min(k, order.size - 1)]]
    piece = np.where(proj <= threshold, cov, 0.0).astype(np.float32)
    rows, cols = np.nonzero(piece)
    return piece[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]


def draw_distractors(
    rng: np.random.Generator,
    canvas: np.ndarray,
    count: int,
    scale_range: tuple[float, float],
    max_fragment_fraction: float,
) -> None:
    """Draw ``count`` non-object distractors onto ``canvas`` in place.

    A distractor is a line (1-3 px wide), a small blob, or a fragment of any shape of
    the vocabulary keeping at most ``max_fragment_fraction`` of its area (kept below the
    detection task's visible-fraction threshold so that a fragment is never mistaken for
    an occluded object that should have been annotated).

    Args:
        rng: Random generator.
        canvas: ``(S, S, 3)`` float image.
        count: Number of distractors.
        scale_range: Object size range (px) that fragments are drawn from.
        max_fragment_fraction: Upper bound on a fragment's kept area fraction.
    """
    size = canvas.shape[0]
    for _ in range(count):
        colour = _random_colour(rng)
        kind = rng.random()
        if kind < 0.4:
            p0 = rng.uniform(0, size, 2)
            length = rng.uniform(0.2, 0.8) * size
            a = rng.uniform(0, 2 * math.pi)
            p1 = p0 + length * np.array([math.cos(a), math.sin(a)])
            cov = _segment_coverage(size, p0, p1, rng.uniform(1.0, 3.0))
            composite(canvas, cov, colour, 0, 0)
            continue
        if kind < 0.7:
            rmax = max(2.5, 0.3 * scale_range[0])
            cov = _blob_coverage(
                rng.uniform(1.5, rmax), rng.uniform(1.5, rmax), rng.uniform(0, 3.2)
            )
        else:
            shape = SHAPES[int(rng.integers(len(SHAPES)))]
            keep = rng.uniform(0.5 * max_fragment_fraction, max_fragment_fraction)
            cov = fragment_coverage(
                rng, shape, rng.uniform(*scale_range), rng.uniform(0, 360), keep
            )
        h, w = cov.shape
        if h > size or w > size:
            continue
        x0 = int(rng.integers(0, size - w + 1))
        y0 = int(rng.integers(0, size - h + 1))
        composite(canvas, cov, shaded_fill(rng, colour, h, w), x0, y0)


def finish(rng: np.random.Generator, canvas: np.ndarray, noise_std: float) -> np.ndarray:
    """Add Gaussian pixel noise (standard deviation ``noise_std`` on the 0..255 scale)
    and round to ``uint8``."""
    if noise_std > 0:
        canvas = canvas + rng.normal(0.0, noise_std, canvas.shape).astype(np.float32)
    return np.clip(np.rint(canvas), 0, 255).astype(np.uint8)
