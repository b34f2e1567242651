"""Drawing primitives on the fine grid: a point-splatting canvas, random fields, blobs.

Pixel (i, j) covers [i, i+1) x [j, j+1); points are (y, x) in fine pixels. Thin structures are
drawn anti-aliased by dense point sampling (every ``STEP`` fine px) with bilinear splatting, all
points of one object collected in a :class:`Canvas` and splatted with one ``np.bincount``.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.ndimage

STEP = 0.5  # sampling pitch of strokes and discs, fine px
GOLDEN_ANGLE = math.pi * (3.0 - math.sqrt(5.0))  # even point spread on discs

class Canvas:
    """Collects weighted points (and dense additions) and renders them in one pass."""

    def __init__(self, shape: tuple[int, int]):
        self.shape = shape
        self.dense = np.zeros(shape)
        self._pts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []

    def points(self, y, x, w) -> None:
        """Add point sources (mass ``w``) at fine-grid positions (y, x)."""
        y, x, w = np.broadcast_arrays(*(np.asarray(v, dtype=float).ravel() for v in (y, x, w)))
        self._pts.append((y, x, w))

    def segments(self, p0, p1, width, conc) -> None:
        """Straight strokes from ``p0`` to ``p1`` ((n, 2) arrays), ``width`` px, concentration."""
        p0, p1 = np.asarray(p0, float).reshape(-1, 2), np.asarray(p1, float).reshape(-1, 2)
        n = len(p0)
        width = np.broadcast_to(np.asarray(width, float), (n,))
        conc = np.broadcast_to(np.asarray(conc, float), (n,))
        d = p1 - p0
        length = np.maximum(np.hypot(d[:, 0], d[:, 1]), 1e-9)
        n_al = np.maximum(np.ceil(length / STEP), 1).astype(np.int64)
        n_ac = np.maximum(np.ceil(width / STEP), 1).astype(np.int64)
        counts = n_al * n_ac
        seg = np.repeat(np.arange(n), counts)
        k = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
        t = (k // n_ac[seg] + 0.5) / n_al[seg]
        c = ((k % n_ac[seg] + 0.5) / n_ac[seg] - 0.5) * width[seg]
        unit = d / length[:, None]
        y = p0[seg, 0] + t * d[seg, 0] + c * unit[seg, 1]
        x = p0[seg, 1] + t * d[seg, 1] - c * unit[seg, 0]
        mass = conc * length * np.maximum(width, 1.0) / counts  # a <1 px line keeps 1 px of mass
        self.points(y, x, mass[seg])

    def polylines(self, paths, width, conc) -> None:
        """Strokes along paths: array (n_paths, n_vertices, 2); width/conc per path or scalar."""
        paths = np.asarray(paths, float)
        n, m = paths.shape[:2]
        width, conc = (np.repeat(np.broadcast_to(np.asarray(v, float), (n,)), m - 1)
                       for v in (width, conc))
        self.segments(paths[:, :-1].reshape(-1, 2), paths[:, 1:].reshape(-1, 2), width, conc)

    def discs(self, centers, radii, conc, hollow: bool = False) -> None:
        """Filled (or membrane-outlined) discs, sunflower-sampled so they are smooth."""
        centers = np.asarray(centers, float).reshape(-1, 2)
        n = len(centers)
        radii = np.broadcast_to(np.asarray(radii, float), (n,))
        conc = np.broadcast_to(np.asarray(conc, float), (n,))
        if hollow:  # a 1.5 px membrane on the circumference
            counts = np.maximum(np.ceil(2 * math.pi * radii / STEP), 1).astype(np.int64)
            mass = conc * 2 * math.pi * np.maximum(radii, 0.5) * 1.5
        else:
            counts = np.maximum(np.ceil(math.pi * radii**2 / STEP**2), 1).astype(np.int64)
            mass = conc * math.pi * np.maximum(radii, 0.5) ** 2
        idx = np.repeat(np.arange(n), counts)
        k = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
        if hollow:
            r = np.maximum(radii[idx] - 0.75, 0.0)
            ang = 2 * math.pi * k / counts[idx]
        else:
            r = radii[idx] * np.sqrt((k + 0.5) / counts[idx])
            ang = k * GOLDEN_ANGLE
        self.points(centers[idx, 0] + r * np.sin(ang), centers[idx, 1] + r * np.cos(ang),
                    (mass / counts)[idx])

    def render(self) -> np.ndarray:
        """Splat all points bilinearly (pixel centres at i + 0.5) onto the dense layer."""
        h, w = self.shape
        img = self.dense.ravel().copy()
        if self._pts:
            y, x, m = (np.concatenate(v) for v in zip(*self._pts))
            fy, fx = y - 0.5, x - 0.5
            y0, x0 = np.floor(fy), np.floor(fx)
            ty, tx = fy - y0, fx - x0
            y0, x0 = y0.astype(np.int64), x0.astype(np.int64)
            for dy, wy in ((0, 1 - ty), (1, ty)):
                for dx, wx in ((0, 1 - tx), (1, tx)):
                    yy, xx = y0 + dy, x0 + dx
                    ok = (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)
                    img += np.bincount(yy[ok] * w + xx[ok], weights=(m * wy * wx)[ok],
                                       minlength=h * w)
        return img.reshape(self.shape)


def smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma_px: float) -> np.ndarray:
    """Zero-mean, unit-std Gaussian random field with correlation length ``sigma_px``."""
    f = max(1, int(sigma_px / 3))  # filter on a coarser grid: same field, far cheaper
    small = rng.standard_normal((shape[0] // f + 2, shape[1] // f + 2))
    small = scipy.ndimage.gaussian_filter(small, sigma_px / f, mode="wrap")
    field = scipy.ndimage.zoom(small, f, order=1)[: shape[0], : shape[1]]
    return (field - field.mean()) / (field.std() + 1e-12)


def box_around(shape, cy, cx, half):
    y0, y1 = max(int(cy - half), 0), min(int(cy + half) + 1, shape[0])
    x0, x1 = max(int(cx - half), 0), min(int(cx + half) + 1, shape[1])
    if y0 >= y1 or x0 >= x1:
        return None
    yy, xx = np.mgrid[y0:y1, x0:x1] + 0.5
    return (slice(y0, y1), slice(x0, x1)), yy - cy, xx - cx


def gaussian_blob(canvas: Canvas, cy, cx, sy, sx, angle, amp) -> None:
    """Add an anisotropic Gaussian blob (peak ``amp``) to the dense layer."""
    box = box_around(canvas.shape, cy, cx, 3.5 * max(sy, sx))
    if box is None:
        return
    sl, dy, dx = box
    c, s = math.cos(angle), math.sin(angle)
    u, v = c * dx + s * dy, -s * dx + c * dy
    canvas.dense[sl] += amp * np.exp(-0.5 * ((u / sx) ** 2 + (v / sy) ** 2))
