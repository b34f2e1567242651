"""Structure families of the simulator: kidney phantoms plus cytoskeleton, vesicles, textures.

The contract domain draws only the kidney phantom (:func:`kidney_content`, rendered by
:func:`srunet.simulation.phantom.render_object`). The wide domain (#17, docs/acquisition.md
"Wide domain (training v3)") draws a family per pair (``contract.WIDE["families"]``), optionally
with a second family layered on top, so the model does not learn one geometry:

* ``kidney``: the phantom, with the contract's scene and stain draw;
* ``cytoskeleton``: microtubules (25 nm, persistent), actin bundles (stress fibres, 0.1-0.3 um),
  cortical mesh (short crossing segments) and wavy intermediate filaments;
* ``vesicles``: puncta and vesicles (20-150 nm radius, filled or hollow), clustered or spread,
  a few larger organelle rings;
* ``texture``: grey images that ship inside scikit-image (:data:`TEXTURE_IMAGES`, never
  downloaded) as intensity, inverted or edge maps, or procedural power-law / blob fields.

The images of the foreign held-out set (``bench/foreign_heldout.py``) are kept out
(:data:`HELDOUT_IMAGES`; ``tests/test_simulate.py`` checks the bench script against it).
Every renderer takes ``(rng, shape)`` on the fine grid and returns ``(object, info)`` with the
object's bright end ~1 per LR pixel (``phantom.normalised``) and JSON-safe ``info``.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import scipy.fft
import scipy.ndimage

from srunet.physics import contract
from srunet.simulation import phantom
from srunet.simulation.drawing import Canvas, smooth_noise

PX_PER_UM = phantom.PX_PER_UM
NM = 1.0 / contract.FINE_PIXEL_NM  # fine px per nm
FINE_PER_LR = round(contract.LR_PIXEL_NM / contract.FINE_PIXEL_NM) ** 2  # fine px in one LR px

# Contract domain: scenes and stains of the kidney phantom
SCENES = {"tubule": 0.55, "glomerulus": 0.2, "generic": 0.25}
STAIN_PROBABILITY = {"phalloidin": 0.4, "WGA": 0.35, "DAPI": 0.25}

# scikit-image data images that ship with the package (no download) and are NOT in the foreign
# held-out set; natural and man-made textures, not microscopy.
TEXTURE_IMAGES = ("astronaut", "brick", "camera", "chelsea", "clock", "coffee", "coins", "grass",
                  "gravel", "moon", "page", "rocket", "text")
# Kept out of training: bench/foreign_heldout.py's specimens, and the retina crop
# ``microaneurysms`` (same kind of image as ``retina``).
HELDOUT_IMAGES = ("cell", "immunohistochemistry", "retina", "hubble_deep_field", "microaneurysms")
TEXTURE_SOURCES = {"image": 0.6, "powerlaw": 0.2, "blobs": 0.2}
IMAGE_MODES = {"intensity": 0.5, "inverted": 0.2, "edges": 0.3}
CROP_CANDIDATES = 3


def kidney_content(rng: np.random.Generator) -> dict:
    """Scene, stains and generic-texture weight of one kidney phantom (the contract's draw)."""
    scene = str(rng.choice(list(SCENES), p=list(SCENES.values())))
    stains = {str(rng.choice(list(STAIN_PROBABILITY), p=list(STAIN_PROBABILITY.values()))): 1.0}
    if rng.uniform() < 0.3:  # bleed-through / co-stain in the same channel
        extra = str(rng.choice([s for s in STAIN_PROBABILITY if s not in stains]))
        stains[extra] = float(rng.uniform(0.05, 0.3))
    generic_weight = 1.0 if scene == "generic" else (
        float(rng.uniform(0.05, 0.6)) if rng.uniform() < 0.6 else 0.0)
    return {"scene": scene, "stains": stains, "generic_weight": generic_weight}


def _choice(rng, table: dict) -> str:
    return str(rng.choice(list(table), p=list(table.values())))


def family_content(rng: np.random.Generator, family: str) -> dict:
    """Per-pair content description of a family (what is drawn before rendering)."""
    if family == "kidney":
        return {"family": family, **kidney_content(rng)}
    if family == "texture":
        source = _choice(rng, TEXTURE_SOURCES)
        content = {"family": family, "source": source}
        if source == "image":
            content["image"] = str(rng.choice(TEXTURE_IMAGES))
            content["mode"] = _choice(rng, IMAGE_MODES)
        return content
    if family in ("cytoskeleton", "vesicles"):
        return {"family": family}
    raise ValueError(f"unknown structure family {family!r}; known: {sorted(FAMILIES)}")


# ------------------------------------------------------------------------------ cytoskeleton
def _walks(rng, shape, n, length_um, persistence_um, step_px=4.0):
    """``n`` persistent random walks (worm-like chains) of the given lengths, (n, m, 2) px."""
    m = max(2, int(np.max(length_um) * PX_PER_UM / step_px))
    step = np.asarray(length_um, float).reshape(-1, 1) * PX_PER_UM / (m - 1)
    bend = rng.normal(0, 1, (n, m)) * np.sqrt(step / (np.asarray(persistence_um, float).reshape(-1, 1)
                                                      * PX_PER_UM))
    phi = rng.uniform(0, 2 * np.pi, (n, 1)) + np.cumsum(bend, 1)
    start = rng.uniform(-2 * PX_PER_UM, np.array(shape) + 2 * PX_PER_UM, (n, 1, 2))
    return start + np.cumsum(step[..., None] * np.stack([np.sin(phi), np.cos(phi)], -1), 1)


def cytoskeleton(rng: np.random.Generator, shape: tuple[int, int]) -> tuple[np.ndarray, dict]:
    """Filament networks of cultured cells: 1-3 of four filament kinds plus faint cytoplasm."""
    canvas = Canvas(shape)
    kinds = [k for k in ("microtubules", "bundles", "mesh", "intermediate") if rng.uniform() < 0.45]
    kinds = kinds or [("microtubules", "bundles", "mesh", "intermediate")[rng.integers(4)]]
    area = shape[0] * shape[1] / PX_PER_UM**2  # um^2
    counts = {}
    if "microtubules" in kinds:  # 25 nm wide, persistence of several um
        n = int(area * rng.uniform(0.05, 0.3))
        canvas.polylines(_walks(rng, shape, n, rng.uniform(5, 25, n), rng.uniform(3, 20)),
                         25 * NM, rng.uniform(0.5, 1.2, n))
        counts["microtubules"] = n
    if "bundles" in kinds:  # stress fibres: thick, straight, roughly co-aligned
        n = int(area * rng.uniform(0.01, 0.06)) + 1
        paths = _walks(rng, shape, n, rng.uniform(5, 20, n), 200.0)
        angle = rng.uniform(0, np.pi)
        d = paths[:, -1] - paths[:, 0]  # turn each bundle to the dominant direction +-20 deg
        turn = angle + rng.normal(0, 0.35, n) - np.arctan2(d[:, 0], d[:, 1])
        c, s = np.cos(turn)[:, None], np.sin(turn)[:, None]
        dy, dx = (paths - paths[:, :1]).transpose(2, 0, 1)
        paths = paths[:, :1] + np.stack([s * dx + c * dy, c * dx - s * dy], -1)
        canvas.polylines(paths, rng.uniform(100, 300, n) * NM, rng.uniform(0.4, 1.0, n))
        counts["bundles"] = n
    if "mesh" in kinds:  # cortical actin: short, randomly oriented segments
        n = int(area * rng.uniform(1.0, 6.0))
        p0 = rng.uniform(0, shape, (n, 2))
        ang, ln = rng.uniform(0, 2 * np.pi, n), rng.uniform(0.2, 1.2, n) * PX_PER_UM
        canvas.segments(p0, p0 + np.stack([ln * np.sin(ang), ln * np.cos(ang)], -1),
                        rng.uniform(7, 15) * NM, rng.uniform(0.2, 0.6, n))
        counts["mesh"] = n
    if "intermediate" in kinds:  # 10 nm, wavy (persistence ~1 um)
        n = int(area * rng.uniform(0.03, 0.15))
        canvas.polylines(_walks(rng, shape, n, rng.uniform(4, 15, n), rng.uniform(0.5, 2.0)),
                         10 * NM, rng.uniform(0.3, 0.9, n))
        counts["intermediate"] = n
    obj = phantom.normalised(canvas.render())
    background = rng.uniform(0.0, 0.1)  # of the bright end (per LR pixel, 16 fine px)
    obj += background / FINE_PER_LR * np.clip(1 + 0.5 * smooth_noise(rng, shape, 2 * PX_PER_UM),
                                              0, None)
    return obj, {"filaments": counts, "cytoplasm": background}


# ---------------------------------------------------------------------------------- vesicles
def vesicles(rng: np.random.Generator, shape: tuple[int, int]) -> tuple[np.ndarray, dict]:
    """Puncta and vesicles (20-150 nm radius), clustered or spread, plus a few organelle rings."""
    canvas = Canvas(shape)
    n = int(math.exp(rng.uniform(math.log(50), math.log(2000))))
    n_clusters = int(rng.integers(0, 12))
    if n_clusters:  # e.g. endosomes around the nucleus, synaptic-vesicle pools
        centres = rng.uniform(0, shape, (n_clusters, 2))
        spread = rng.uniform(0.5, 3.0, n_clusters) * PX_PER_UM
        which = rng.integers(0, n_clusters, n)
        pos = centres[which] + rng.normal(0, 1, (n, 2)) * spread[which, None]
    else:
        pos = rng.uniform(0, shape, (n, 2))
    radii = rng.uniform(20, 150, n) * NM
    hollow = rng.uniform() < 0.4
    bright = rng.lognormal(0, 0.5, n)
    canvas.discs(pos, radii, bright, hollow=hollow)
    n_rings = int(rng.integers(0, 8))  # lysosome/endosome-sized organelles, membrane-labelled
    if n_rings:
        canvas.discs(rng.uniform(0, shape, (n_rings, 2)), rng.uniform(0.3, 1.0, n_rings) * PX_PER_UM,
                     rng.uniform(0.2, 0.6, n_rings), hollow=True)
    obj = phantom.normalised(canvas.render())
    background = rng.uniform(0.0, 0.1)  # of the bright end (per LR pixel, 16 fine px)
    obj += background / FINE_PER_LR * np.clip(1 + 0.5 * smooth_noise(rng, shape, 1.5 * PX_PER_UM),
                                              0, None)
    return obj, {"n_puncta": n, "clusters": n_clusters, "hollow": bool(hollow),
                 "organelle_rings": n_rings, "cytoplasm": background}


# ----------------------------------------------------------------------------------- texture
@functools.lru_cache(maxsize=None)
def texture_image(name: str) -> np.ndarray:
    """A scikit-image data image as grey float in [0, 1] (cached per process)."""
    if name not in TEXTURE_IMAGES:
        raise ValueError(f"{name!r} is not a training texture; choose one of {TEXTURE_IMAGES}")
    from skimage import color, data

    try:
        image = np.asarray(getattr(data, name)())
    except Exception as error:  # a scikit-image build without the bundled file
        raise RuntimeError(f"skimage.data.{name}() is not available offline in this scikit-image "
                           f"installation ({error}); reinstall scikit-image>=0.22") from error
    if image.ndim == 3:
        image = color.rgb2gray(image[..., :3])
    image = image.astype(np.float64)
    return (image - image.min()) / max(float(np.ptp(image)), 1e-12)


def _powerlaw(rng, shape) -> np.ndarray:
    """Log-normal field with a 1/k^beta power spectrum: fractal, cloud- or tissue-like."""
    beta = rng.uniform(1.5, 3.5)
    ky = scipy.fft.fftfreq(shape[0])[:, None]
    kx = scipy.fft.rfftfreq(shape[1])[None, :]
    k = np.maximum(np.hypot(ky, kx), 1.0 / max(shape))
    white = scipy.fft.rfft2(rng.standard_normal(shape))
    field = scipy.fft.irfft2(white * k ** (-beta / 2), s=shape)
    field = (field - field.mean()) / (field.std() + 1e-12)
    return np.exp(rng.uniform(0.5, 1.5) * field)


def _blobs(rng, shape) -> np.ndarray:
    """Thresholded smooth field (binary blobs with soft edges), filled or outlined."""
    field = smooth_noise(rng, shape, rng.uniform(0.3, 2.0) * PX_PER_UM)
    level = rng.uniform(-0.5, 1.0)
    if rng.uniform() < 0.5:
        return np.clip((field - level) * 8.0, 0.0, 1.0)
    return np.exp(-0.5 * ((field - level) / rng.uniform(0.03, 0.1)) ** 2)  # outlines


def texture(rng: np.random.Generator, shape: tuple[int, int],
            content: dict) -> tuple[np.ndarray, dict]:
    """A bundled natural image (crop, zoom, flip, gamma) or a procedural texture."""
    source = content["source"]
    if source == "powerlaw":
        obj, info = _powerlaw(rng, shape), {}
    elif source == "blobs":
        obj, info = _blobs(rng, shape), {}
    else:
        image = texture_image(content["image"])
        zoom = rng.uniform(1.5, 5.0)  # fine px per image px: 32-106 nm per image px
        need = [int(math.ceil(s / zoom)) + 2 for s in shape]
        crops = []
        for _ in range(CROP_CANDIDATES):  # the most structured of a few crops: no flat fields
            y = int(rng.integers(0, max(1, image.shape[0] - need[0])))
            x = int(rng.integers(0, max(1, image.shape[1] - need[1])))
            crops.append(image[y:y + need[0], x:x + need[1]])
        crop = max(crops, key=lambda c: float(np.mean(np.abs(np.diff(c, axis=0)))
                                              + np.mean(np.abs(np.diff(c, axis=1)))))
        if content["mode"] == "inverted":
            crop = 1.0 - crop
        elif content["mode"] == "edges":  # membrane-like outlines of the image's objects
            crop = np.hypot(scipy.ndimage.sobel(crop, 0), scipy.ndimage.sobel(crop, 1))
        crop = np.clip(crop - np.percentile(crop, 1), 0, None)  # no pedestal: haze adds its own
        fine = scipy.ndimage.zoom(crop, zoom, order=1)[: shape[0], : shape[1]]
        fine = np.pad(fine, [(0, s - f) for s, f in zip(shape, fine.shape)], mode="reflect")
        obj = np.rot90(fine, int(rng.integers(4)))
        obj = obj[:, ::-1] if rng.uniform() < 0.5 else obj
        obj = np.ascontiguousarray(obj)
        info = {"zoom": zoom}
    gamma = rng.uniform(0.6, 2.0)  # stain contrast
    obj = np.clip(obj, 0.0, None) ** gamma
    return phantom.normalised(obj), {**info, "gamma": gamma}


FAMILIES = ("kidney", "cytoskeleton", "vesicles", "texture")


def render(rng: np.random.Generator, shape: tuple[int, int], content: dict) -> tuple[np.ndarray, dict]:
    """Render the object of a wide-domain content description (and its overlay, if any).

    Returns
    -------
    object : numpy.ndarray
        Non-negative float64 on the fine grid, bright end ~1 per LR pixel.
    info : dict
        JSON-safe description of what was drawn.
    """
    family = content["family"]
    if family == "kidney":
        obj, info = phantom.render_object(rng, shape, content)
    elif family == "cytoskeleton":
        obj, info = cytoskeleton(rng, shape)
    elif family == "vesicles":
        obj, info = vesicles(rng, shape)
    elif family == "texture":
        obj, info = texture(rng, shape, content)
    else:
        raise ValueError(f"unknown structure family {family!r}; known: {list(FAMILIES)}")
    overlay = content.get("overlay")
    if overlay:
        extra, extra_info = render(rng, shape, overlay["content"])
        obj = obj + overlay["weight"] * extra
        info["overlay_drawn"] = extra_info
    return np.maximum(obj, 0.0), info
