"""Fluorescent objects on the fine grid: kidney-cortex local views plus generic texture.

Everything is drawn at ``contract.FINE_PIXEL_NM`` (HR/2, LR/4) so that the optics can blur and
integrate it. Thin structures are drawn anti-aliased by dense point sampling (every 0.5 fine px
along and across a stroke) with bilinear splatting; all points of one object are collected in a
:class:`Canvas` and splatted with a single ``np.bincount``, which keeps a 1152^2 field around a
second. Dense layers (cytoplasm, nuclei, haze-like background) are evaluated on the grid.

Pixel (i, j) covers [i, i+1) x [j, j+1); points are (y, x) in fine pixels. Lengths in the scene
descriptions are micrometres, converted with :data:`PX_PER_UM`. All randomness comes from the
``rng`` passed in. Intensities are relative "dye concentrations"; the simulator scales the
blurred result to the drawn photon budget afterwards.
"""

from __future__ import annotations

import math

import numpy as np

from srunet.physics import contract
from srunet.simulation.drawing import Canvas, box_around, gaussian_blob, smooth_noise

PX_PER_UM = 1000.0 / contract.FINE_PIXEL_NM

# Which structures each stain lights up (relative concentration). Phalloidin: actin (brush border,
# terminal web, cortical actin, stress fibres, foot processes); WGA: glycoconjugates (membranes,
# glycocalyx on microvilli, basement membrane, vesicles, nuclear envelope); DAPI: nuclei only.
STAINS = {
    "phalloidin": dict(microvilli=1.0, terminal_web=0.5, cortical=0.4, stress=0.7, membrane=0.0,
                       basement=0.03, vesicles=0.0, nuclei=0.0, envelope=0.0, cytoplasm=0.05,
                       foot=0.9),
    "WGA": dict(microvilli=0.6, terminal_web=0.0, cortical=0.0, stress=0.0, membrane=0.7,
                basement=0.5, vesicles=0.8, nuclei=0.0, envelope=0.4, cytoplasm=0.06, foot=0.6),
    "DAPI": dict(microvilli=0.0, terminal_web=0.0, cortical=0.0, stress=0.0, membrane=0.0,
                 basement=0.0, vesicles=0.0, nuclei=1.0, envelope=0.0, cytoplasm=0.01, foot=0.0),
}


def nucleus(canvas: Canvas, rng, chromatin, cy, cx, a, b, angle, w_dna, w_env) -> None:
    """Ellipsoidal nucleus (semi-axes a >= b px): DAPI chromatin texture and/or WGA envelope."""
    box = box_around(canvas.shape, cy, cx, a + 4)
    if box is None:
        return
    sl, dy, dx = box
    c, s = math.cos(angle), math.sin(angle)
    u, v = c * dx + s * dy, -s * dx + c * dy
    rho = np.sqrt((u / a) ** 2 + (v / b) ** 2)
    depth = (1.0 - rho) * b  # ~distance inside the boundary, px
    if w_dna:
        mask = np.clip(depth + 0.5, 0.0, 1.0)  # 1 px anti-aliased edge
        dna = 0.7 + 0.3 * np.tanh(1.5 * chromatin[sl])  # chromatin texture
        dna += 0.5 * np.exp(-0.5 * (depth / (0.25 * PX_PER_UM)) ** 2)  # peripheral heterochromatin

        def spot(r_max, sig_um):  # a Gaussian at a random place inside the nucleus
            r, t = r_max * math.sqrt(rng.uniform()), rng.uniform(0, 2 * math.pi)
            sig = rng.uniform(*sig_um) * PX_PER_UM
            return np.exp(-0.5 * ((u - r * a * math.cos(t)) ** 2 + (v - r * b * math.sin(t)) ** 2)
                          / sig**2)

        for _ in range(rng.integers(2, 9)):  # chromocentres: bright DAPI foci
            dna += rng.uniform(0.6, 1.5) * spot(0.75, (0.15, 0.35))
        for _ in range(rng.integers(0, 3)):  # nucleoli: DAPI-dim holes
            dna *= 1.0 - 0.7 * spot(0.5, (0.35, 0.7))
        canvas.dense[sl] += w_dna * 0.15 * mask * dna
    if w_env:  # nuclear envelope (WGA binds nuclear-pore glycoproteins): a thin rim
        canvas.dense[sl] += w_env * 0.4 * np.exp(-0.5 * (depth / 1.5) ** 2)


def _wave(rng, radius_um, amp_um, wavelengths_um=(3.0, 10.0)):
    """Gentle radial undulation r(theta) = sum of two harmonics (integer: closes on the circle)."""
    terms = []
    for _ in range(2):
        m = max(1, round(2 * math.pi * radius_um / rng.uniform(*wavelengths_um)))
        terms.append((rng.uniform(0, amp_um) * PX_PER_UM, m, rng.uniform(0, 2 * math.pi)))
    return lambda th: sum(a * np.sin(m * th + p) for a, m, p in terms)


def _visible_arc(shape, cy, cx, pad):
    """Angular range of the field (padded by ``pad`` px) seen from (cy, cx); theta = atan2(dy, dx)."""
    h, w = shape
    if -pad <= cy <= h + pad and -pad <= cx <= w + pad:
        return -math.pi, math.pi
    th0 = math.atan2(h / 2 - cy, w / 2 - cx)
    d = [(math.atan2(y - cy, x - cx) - th0 + math.pi) % (2 * math.pi) - math.pi
         for y in (-pad, h + pad) for x in (-pad, w + pad)]
    return th0 + min(d), th0 + max(d)


def _inside(shape, pts, pad):
    return ((pts[..., 0] > -pad) & (pts[..., 0] < shape[0] + pad)
            & (pts[..., 1] > -pad) & (pts[..., 1] < shape[1] + pad))


def _polar_xy(cy, cx, r, th):
    return np.stack([cy + r * np.sin(th), cx + r * np.cos(th)], axis=-1)


def tubule(canvas: Canvas, rng, w: dict, ctx: dict, center, r_out_um: float,
           height_um: float) -> dict:
    """One curved tubule wall (epithelium between lumen and basement membrane) around ``center``.

    Cells 5-9 um wide with wavy lateral membranes, brush border (microvilli perpendicular to the
    apical surface) over a terminal web, cortical actin, basal stress fibres, a gently wavy
    basement membrane, basal nuclei and sub-apical vesicles. Only what is near the field is drawn.
    """
    shape, (cy, cx), P = canvas.shape, center, PX_PER_UM
    basal, apical = _wave(rng, r_out_um, 0.3), _wave(rng, r_out_um - height_um, 0.4)
    r_b = lambda th: r_out_um * P + basal(th)  # noqa: E731
    r_a = lambda th: (r_out_um - height_um) * P + apical(th)  # noqa: E731
    lo, hi = _visible_arc(shape, cy, cx, 3 * P)
    arc = np.linspace(lo, hi, int((hi - lo) * r_out_um * P / 2) + 2)
    arc_um = (hi - lo) * (r_out_um - height_um / 2)
    pad = 3 * P
    # cells: boundaries every 5-9 um along the mid-height circle
    widths = rng.uniform(5, 9, size=int(arc_um / 5) + 3) / (r_out_um - height_um / 2)
    bounds = lo - rng.uniform(0, widths[0]) + np.concatenate([[0], np.cumsum(widths)])
    bounds = bounds[bounds < hi + widths.max()]
    if w["membrane"] or w["cortical"]:
        m = int(height_um * P / 2) + 2
        s = np.linspace(0, 1, m)
        ra, rb = r_a(bounds)[:, None], r_b(bounds)[:, None]
        r = ra + (rb - ra) * s
        lam = rng.uniform(1, 3, (len(bounds), 1)) * P
        amp = rng.uniform(0.1, 0.5, (len(bounds), 1)) * P
        th = bounds[:, None] + amp * np.sin(2 * np.pi * (r - ra) / lam
                                            + rng.uniform(0, 6.3, (len(bounds), 1))) / r
        canvas.polylines(_polar_xy(cy, cx, r, th), 2.5, w["membrane"] + w["cortical"])
    if w["cortical"]:  # cortical actin under the basal membrane
        canvas.polylines(_polar_xy(cy, cx, r_b(arc) - 0.15 * P, arc)[None], 3.0, w["cortical"])
    t_bm = rng.uniform(0.1, 0.3)
    if w["basement"]:
        canvas.polylines(_polar_xy(cy, cx, r_b(arc) + t_bm * P / 2, arc)[None], t_bm * P,
                         w["basement"] * 0.5)
    if w["cytoplasm"] or w["terminal_web"]:
        yy, xx = np.mgrid[: shape[0], : shape[1]] + 0.5
        rr, tt = np.hypot(yy - cy, xx - cx), np.arctan2(yy - cy, xx - cx)
        ra, rb = r_a(tt), r_b(tt)
        if w["cytoplasm"]:
            cyto = np.clip(rr - ra + 0.5, 0, 1) * np.clip(rb - rr + 0.5, 0, 1)
            canvas.dense += w["cytoplasm"] * cyto * (0.7 + 0.3 * np.tanh(ctx["texture"]))
        if w["terminal_web"]:
            tw = rng.uniform(0.3, 0.6) * P
            band = np.clip(rr - ra + 0.5, 0, 1) * np.clip(ra + tw - rr + 0.5, 0, 1)
            canvas.dense += 0.3 * w["terminal_web"] * band * (0.6 + 0.4 * np.tanh(ctx["fine"]))
            n = int(arc_um * 25)  # short, mostly tangential filaments of the web
            th = rng.uniform(lo, hi, n)
            p0 = _polar_xy(cy, cx, r_a(th) + rng.uniform(0, tw, n), th)
            ang = th + np.pi / 2 + rng.normal(0, 0.4, n)
            ln = rng.uniform(0.2, 0.8, n) * P
            p1 = p0 + np.stack([ln * np.sin(ang), ln * np.cos(ang)], -1)
            canvas.segments(p0, p1, 1.5, w["terminal_web"])
    mv = {"microvillus_length_um": rng.uniform(1.5, 3.0),
          "microvillus_spacing_um": rng.uniform(0.1, 0.16)}
    if w["microvilli"]:
        r_in = (r_out_um - height_um) * P
        pitch = mv["microvillus_spacing_um"] * P / r_in  # radians
        steps = pitch * rng.uniform(0.8, 1.2, int(arc_um / 0.08) + 2)
        th = lo + rng.uniform(0, steps[0]) + np.cumsum(steps)
        th = th[th < hi]
        p0 = _polar_xy(cy, cx, r_a(th), th)
        keep = _inside(shape, p0, pad)
        th, p0 = th[keep], p0[keep]
        ang = th + rng.normal(0, 0.02, len(th))  # packed, nearly parallel
        ln = mv["microvillus_length_um"] * P * rng.uniform(0.85, 1.15, len(th))
        p1 = p0 - np.stack([ln * np.sin(ang), ln * np.cos(ang)], -1)  # into the lumen
        canvas.segments(p0, p1, rng.uniform(3.0, 4.5, len(th)),  # ~60-100 nm thick
                        w["microvilli"] * rng.uniform(0.6, 1.0, len(th)))
    if w["stress"]:
        n = max(1, int(arc_um * rng.uniform(0.3, 1.0)))
        th0 = rng.uniform(lo, hi, n)[:, None]
        s = np.linspace(0, 1, 32)
        th = th0 + s * rng.uniform(3, 10, (n, 1)) / r_out_um * rng.choice([-1, 1], (n, 1))
        depth = rng.uniform(0.15, 1.0, (n, 1)) + s * rng.uniform(-0.3, 0.3, (n, 1))
        paths = _polar_xy(cy, cx, r_b(th) - np.clip(depth, 0.1, 1.2) * P, th)
        canvas.polylines(paths, rng.uniform(2, 5, n), w["stress"] * rng.uniform(0.5, 1.0, n))
    n_nuc, last_end = 0, -np.inf
    if w["nuclei"] or w["envelope"]:
        for t0, t1 in zip(bounds[:-1], bounds[1:]):
            thc = (t0 + t1) / 2 + rng.normal(0, 0.05) * (t1 - t0)
            a, b = nuclear_axes(rng, max_short_um=0.42 * height_um)
            rc = r_b(thc) - (b + rng.uniform(0.3, 1.0)) * P
            if rng.uniform() > 0.75 or thc - a * P / rc < last_end:  # not in this section / no room
                continue
            last_end = thc + a * P / rc + 0.3 * P / rc
            cyy, cxx = cy + rc * math.sin(thc), cx + rc * math.cos(thc)
            if _inside(shape, np.array([cyy, cxx]), a * P):
                n_nuc += 1
                nucleus(canvas, rng, ctx["chromatin"], cyy, cxx, a * P, b * P,
                        thc + np.pi / 2 + rng.normal(0, 0.25), w["nuclei"], w["envelope"])
    if w["vesicles"]:
        n = int(arc_um * 2.3 * ctx["vesicle_density"])
        th = rng.uniform(lo, hi, n)
        c = _polar_xy(cy, cx, r_a(th) + rng.uniform(0.2, 2.5, n) * P, th)
        c = c[_inside(shape, c, 10)]
        canvas.discs(c, rng.uniform(0.025, 0.15, len(c)) * P,  # 50-300 nm diameter
                     w["vesicles"] * rng.uniform(0.5, 1.5, len(c)), hollow=ctx["hollow_vesicles"])
    return {"outer_diameter_um": 2 * r_out_um, "epithelium_um": height_um,
            "n_cells": len(bounds) - 1, "basement_membrane_um": t_bm, "n_nuclei": n_nuc, **mv}


def nuclear_axes(rng, max_short_um: float = 3.0) -> tuple[float, float]:
    """Semi-axes (um) of a nucleus 5-9 x 3.5-6 um (short axis capped to fit the cell)."""
    a = rng.uniform(5.0, 9.0) / 2
    b = min(rng.uniform(3.5, 6.0) / 2, a, max_short_um)
    return a, b


def glomerulus(canvas: Canvas, rng, w: dict, ctx: dict) -> dict:
    """Glomerular capillary loops: basement membrane rings with podocyte foot processes.

    Foot processes 0.2-0.4 um wide separated by ~40 nm slits, seen in cross-section as a row of
    bumps on the outside of each loop, and en face as two primary processes with interdigitating
    fingers (the zipper pattern).
    """
    shape, P = canvas.shape, PX_PER_UM
    t_bm, fp_w = rng.uniform(0.1, 0.3), rng.uniform(0.2, 0.4)
    slit, fp_h = rng.uniform(0.03, 0.06), rng.uniform(0.2, 0.5)
    loops: list[tuple[float, float, float]] = []
    target = rng.integers(3, 10)
    for _ in range(200):
        if len(loops) >= target:
            break
        r = rng.uniform(2.0, 5.0) * P
        c = rng.uniform(-2 * P, np.array(shape) + 2 * P)
        if all(math.hypot(c[0] - y, c[1] - x) > r + q + (2 * fp_h + 0.6) * P for y, x, q in loops):
            loops.append((c[0], c[1], r))
    outside = np.ones(shape)
    for cy, cx, r in loops:
        th = np.linspace(-np.pi, np.pi, int(2 * np.pi * r / 2) + 2)
        wave = _wave(rng, r / P, 0.15, (1.5, 5.0))
        rr = r + wave(th)
        canvas.polylines(_polar_xy(cy, cx, rr + t_bm * P / 2, th)[None], t_bm * P, w["basement"])
        canvas.polylines(_polar_xy(cy, cx, rr - 0.05 * P, th)[None], 1.5,  # endothelium
                         0.5 * w["membrane"] + 0.3 * w["cortical"])
        if w["foot"]:
            r_fp = r + t_bm * P
            period = (fp_w + slit) * P
            steps = period / r_fp * rng.uniform(0.9, 1.1, int(2 * np.pi * r_fp / period) + 2)
            ang = rng.uniform(-np.pi, np.pi) + np.cumsum(steps)
            ang = ang[ang < ang[0] + 2 * np.pi * rng.uniform(0.6, 1.0)]  # partly denuded loops
            base = r_fp + wave(ang)
            p0 = _polar_xy(cy, cx, base, ang)
            p1 = _polar_xy(cy, cx, base + fp_h * P * rng.uniform(0.8, 1.2, len(ang)), ang)
            canvas.segments(p0, p1, fp_w * P * rng.uniform(0.85, 1.15, len(ang)) - slit * P,
                            w["foot"] * rng.uniform(0.7, 1.0, len(ang)))
        box = box_around(shape, cy, cx, r + 2)
        if box is not None:
            sl, dy, dx = box
            outside[sl] *= np.clip(np.hypot(dy, dx) - r + 0.5, 0, 1)
    canvas.dense += w["cytoplasm"] * outside * (0.7 + 0.3 * np.tanh(ctx["texture"]))
    n_patch = int(rng.integers(0, 3)) if w["foot"] else 0
    for _ in range(n_patch):  # en face: interdigitating foot processes between two primaries
        n = 48
        length = rng.uniform(3, 8) * P
        phi = rng.uniform(0, 2 * np.pi) + np.cumsum(rng.normal(0, 0.05, n))
        tangent = np.stack([np.sin(phi), np.cos(phi)], -1)
        line = rng.uniform(0, shape) + np.cumsum(length / n * tangent, 0)
        normal = np.stack([np.cos(phi), -np.sin(phi)], -1)
        half = rng.uniform(0.5, 1.0) * P
        for side in (-1, 1):
            canvas.polylines((line + side * half * normal)[None], rng.uniform(0.3, 0.6) * P,
                             0.4 * w["foot"])
        s = np.arange(0, length, (fp_w + slit) * P)
        idx = np.clip((s / length * n).astype(int), 0, n - 1)
        side = np.where(np.arange(len(s)) % 2 == 0, 1.0, -1.0)[:, None]
        p0 = line[idx] + side * half * normal[idx]
        p1 = line[idx] - side * (half - 0.15 * P) * normal[idx]
        canvas.segments(p0, p1, (fp_w - slit) * P, w["foot"])
    n_nuc = int(rng.integers(1, 5)) if (w["nuclei"] or w["envelope"]) else 0
    for _ in range(n_nuc):
        a, b = nuclear_axes(rng)
        nucleus(canvas, rng, ctx["chromatin"], *rng.uniform(0, shape), a * P, b * P,
                rng.uniform(0, np.pi), w["nuclei"], w["envelope"])
    return {"n_loops": len(loops), "basement_membrane_um": t_bm, "foot_process_um": fp_w,
            "slit_um": slit, "en_face_patches": n_patch, "n_nuclei": n_nuc}


def generic(canvas: Canvas, rng, ctx: dict) -> dict:
    """Geometry-agnostic texture: filaments, closed curves, puncta, blobs, smooth background."""
    shape, P = canvas.shape, PX_PER_UM
    loguni = lambda lo, hi: math.exp(rng.uniform(math.log(lo), math.log(hi)))  # noqa: E731
    chance = {"filaments": 0.75, "puncta": 0.7, "blobs": 0.5, "curves": 0.4, "background": 0.6}
    parts = [p for p, c in chance.items() if rng.uniform() < c]
    if not set(parts) & {"filaments", "puncta", "blobs"}:
        parts.append(("filaments", "puncta", "blobs")[rng.integers(3)])
    if "filaments" in parts:  # persistent random walks: actin/microtubule-like
        n, m = int(loguni(3, 80)), 64
        step = rng.uniform(1, 15, (n, 1)) * P / (m - 1)
        bend = rng.normal(0, loguni(0.005, 0.15), (n, m))  # persistence varies per image
        phi = rng.uniform(0, 2 * np.pi, (n, 1)) + np.cumsum(bend, 1)
        start = rng.uniform(-P, np.array(shape) + P, (n, 1, 2))
        paths = start + np.cumsum(step[..., None] * np.stack([np.sin(phi), np.cos(phi)], -1), 1)
        canvas.polylines(paths, rng.uniform(1, 6, n), rng.uniform(0.3, 1.0, n))
    if "curves" in parts:  # closed wavy outlines: membrane-like
        n, m = int(rng.integers(1, 7)), 160
        th = np.linspace(0, 2 * np.pi, m)
        rad = rng.uniform(1, 6, (n, 1)) * P * (
            1 + sum(rng.uniform(0, 0.15, (n, 1)) * np.sin(k * th + rng.uniform(0, 6.3, (n, 1)))
                    for k in (2, 3, 5)))
        c = rng.uniform(0, shape, (n, 1, 2))
        canvas.polylines(c + np.stack([rad * np.sin(th), rad * np.cos(th)], -1),
                         rng.uniform(1, 3, n), rng.uniform(0.3, 1.0, n))
    if "puncta" in parts:  # point-like and sub-resolution spots of varied brightness
        n = int(loguni(10, 600))
        radii = rng.uniform(0.0, 0.1, n) * P
        mass = rng.lognormal(math.log(80), 0.6, n)
        conc = mass / (np.pi * np.maximum(radii, 0.5) ** 2)
        canvas.discs(rng.uniform(0, shape, (n, 2)), radii, conc)
    if "blobs" in parts:
        for _ in range(rng.integers(2, 26)):
            s = rng.uniform(0.15, 1.5) * P
            gaussian_blob(canvas, *rng.uniform(0, shape), s, s * rng.uniform(1, 3),
                          rng.uniform(0, np.pi), rng.uniform(0.1, 0.6))
    if "background" in parts:
        canvas.dense += rng.uniform(0.02, 0.15) * np.clip(1 + 0.5 * ctx["texture"], 0, None)
    return {"generic_parts": parts}


def normalised(img: np.ndarray) -> np.ndarray:
    """Scale so the bright end (99.8th percentile of 4x4 sums, ~LR pixels) is 1."""
    h, w = (s // 4 * 4 for s in img.shape)
    ref = np.percentile(img[:h, :w].reshape(h // 4, 4, w // 4, 4).sum((1, 3)), 99.8)
    return img / ref if ref > 0 else img


def render_object(rng: np.random.Generator, shape: tuple[int, int],
                  content: dict) -> tuple[np.ndarray, dict]:
    """Render one fluorescent object on the fine grid.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of all randomness.
    shape : tuple of int
        Fine-grid shape (rows, cols), including any margin the optics need.
    content : dict
        ``scene`` ("tubule", "glomerulus" or "generic"), ``stains`` ({stain: weight}) and
        ``generic_weight`` (weight of the generic texture layer), as drawn by the simulator.

    Returns
    -------
    object : numpy.ndarray
        Non-negative float64 dye concentration, bright end ~1 per LR pixel area.
    info : dict
        JSON-serialisable description of what was drawn (geometry, structure weights).
    """
    P = PX_PER_UM
    ctx = {"texture": smooth_noise(rng, shape, rng.uniform(0.5, 1.5) * P),
           "fine": smooth_noise(rng, shape, 0.08 * P),
           "vesicle_density": rng.uniform(0.3, 2.0), "hollow_vesicles": bool(rng.uniform() < 0.5)}
    info: dict = {}
    scene = content["scene"]
    obj = np.zeros(shape)
    if scene != "generic":
        weights = {k: sum(s * STAINS[name][k] for name, s in content["stains"].items())
                   * rng.uniform(0.7, 1.3) for k in STAINS["WGA"]}
        info["structure_weights"] = {k: round(v, 4) for k, v in weights.items()}
        ctx["chromatin"] = (smooth_noise(rng, shape, rng.uniform(0.1, 0.25) * P)
                            if weights["nuclei"] else np.zeros(shape))
        canvas = Canvas(shape)
        if scene == "tubule":
            r_out, center = rng.uniform(12, 26), np.array(shape) / 2
            height = rng.uniform(5, min(10, 0.6 * r_out))
            r_c, th0 = rng.uniform(r_out - height - 2.5, r_out + 1.0), rng.uniform(0, 2 * np.pi)
            c1 = center - r_c * P * np.array([math.sin(th0), math.cos(th0)])
            info["tubules"] = [tubule(canvas, rng, weights, ctx, c1, r_out, height)]
            if rng.uniform() < 0.4:  # a neighbouring tubule across the interstitium
                r2, th1 = rng.uniform(12, 26), th0 + rng.normal(0, 0.3)
                dist = (r_out + rng.uniform(0.5, 3.0) + r2) * P
                c2 = c1 + dist * np.array([math.sin(th1), math.cos(th1)])
                info["tubules"].append(tubule(canvas, rng, weights, ctx, c2, r2,
                                              rng.uniform(5, min(10, 0.6 * r2))))
        else:
            info["glomerulus"] = glomerulus(canvas, rng, weights, ctx)
        obj = normalised(canvas.render())
    if content["generic_weight"] > 0:
        canvas = Canvas(shape)
        info.update(generic(canvas, rng, ctx))
        obj = obj + content["generic_weight"] * normalised(canvas.render())
    return np.maximum(obj, 0.0), info
