"""Register raw confocal/ISM pairs onto the exact 2x grid and check them (``srunet pairs``).

Real pairs are never aligned to the pixel: the two detectors sit behind different optics, so the
ISM image is shifted, slightly rotated and scaled relative to the confocal one. For each pair the
ISM image binned 2x2 is registered to the confocal image (model: binned-ISM coordinate
``x_b = c + s R(angle) (u - c) + t`` for confocal coordinate ``u``, image centre ``c``), then the
ISM image is resampled so that LR pixel (i, j) covers HR pixels (2i..2i+1, 2j..2j+1)
(``srunet.geometry``), and both are cropped to the common field.

Estimation: translation by phase correlation (``skimage.registration.phase_cross_correlation``),
rotation and scale by log-polar phase correlation of the Fourier magnitudes, then a joint
refinement of (angle, scale, shift) maximising the Pearson correlation (Powell).
"""

from __future__ import annotations

import csv
import json
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage, optimize

from srunet.files import swap_into_place
from srunet.geometry import hr_shape, hr_slices
from srunet.physics.contract import LR_PIXEL_NM
from srunet.physics.optics import bin_to_lr
from srunet.tiff import find_pairs, read_image, write_ome_tiff

MARKER = "registration.json"  # written by `srunet pairs`; `srunet train` warns without it


@dataclass(frozen=True)
class Limits:
    """Rejection thresholds (see ``srunet pairs --help``)."""

    min_overlap: float = 0.5  # share of the confocal field covered by the ISM field
    min_correlation: float = 0.6  # Pearson, confocal vs binned registered ISM
    max_scale_error: float = 0.05  # |scale - 1| after the nominal 2x
    max_rotation_deg: float = 10.0
    max_saturation: float = 0.01  # share of pixels stuck at the image maximum


@dataclass
class PairQC:
    """What was measured for one pair (one row of qc.csv)."""

    name: str
    status: str = "rejected"
    reason: str = ""
    shift_y_lr_px: float = float("nan")
    shift_x_lr_px: float = float("nan")
    rotation_deg: float = float("nan")
    scale: float = float("nan")
    overlap: float = float("nan")
    correlation_before: float = float("nan")
    correlation_after: float = float("nan")
    saturation_lr: float = float("nan")
    saturation_hr: float = float("nan")
    gain: float = float("nan")
    offset: float = float("nan")
    lr_shape: list = field(default_factory=list)
    out_lr_shape: list = field(default_factory=list)
    crop_lr: list = field(default_factory=list)  # [y0, y1, x0, x1] of the raw LR image kept


def bin2(image: np.ndarray) -> np.ndarray:
    """2x2 mean (odd last row/column dropped): the ISM image on the confocal grid."""
    return bin_to_lr(image, binning="mean")


def saturation(image: np.ndarray) -> float:
    """Share of pixels at the image's maximum (a detector clipping shows as a plateau there)."""
    return float(np.mean(image >= image.max()))


def _matrix(angle_deg: float, scale: float) -> np.ndarray:
    a = np.deg2rad(angle_deg)
    return scale * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])


def warp(moving: np.ndarray, shape, angle_deg: float, scale: float, shift, order: int = 3,
         cval: float = np.nan) -> np.ndarray:
    """Sample ``moving`` at ``c + s R (u - c) + shift`` for every pixel ``u`` of ``shape``."""
    centre = (np.asarray(shape, dtype=np.float64) - 1) / 2
    matrix = _matrix(angle_deg, scale)
    offset = centre - matrix @ centre + np.asarray(shift, dtype=np.float64)
    return ndimage.affine_transform(moving.astype(np.float64), matrix, offset, output_shape=shape,
                                    order=order, mode="constant", cval=cval)


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < 16:
        return float("nan")
    a, b = a[ok] - a[ok].mean(), b[ok] - b[ok].mean()
    return float((a * b).sum() / max(np.sqrt((a * a).sum() * (b * b).sum()), 1e-12))


def _common(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    h, w = min(a.shape[0], b.shape[0]), min(a.shape[1], b.shape[1])
    return a[:h, :w], b[:h, :w]


def _rotation_scale(ref: np.ndarray, mov: np.ndarray) -> tuple[float, float]:
    """(angle in degrees, scale) of ``mov`` relative to ``ref`` by log-polar phase correlation."""
    from skimage.filters import difference_of_gaussians, window
    from skimage.registration import phase_cross_correlation
    from skimage.transform import warp_polar

    ref, mov = _common(ref, mov)
    spectra = []
    for image in (ref, mov):
        band = difference_of_gaussians(image, 1, 8) * window("hann", image.shape)
        spectra.append(np.abs(np.fft.fftshift(np.fft.fft2(band))))
    radius = min(ref.shape) // 2
    polar = [warp_polar(s, radius=radius, output_shape=(360, radius), scaling="log", order=1)
             for s in spectra]
    # Magnitudes are symmetric under 180 degrees: use the half with the full angular range.
    shifts, _, _ = phase_cross_correlation(polar[0][:180], polar[1][:180], upsample_factor=20,
                                           normalization=None)
    klog = radius / np.log(radius)
    # Signs follow warp()'s model (checked on known transforms); this coarse estimate only
    # seeds the joint refinement in estimate(), which recovers rotation and scale exactly.
    return float(shifts[0]), float(np.exp(shifts[1] / klog))


def estimate(lr: np.ndarray, hr: np.ndarray) -> tuple[float, float, np.ndarray, float]:
    """Register the binned ISM image to the confocal image.

    Returns
    -------
    angle_deg, scale, shift (dy, dx) in LR pixels, Pearson correlation after registration;
    with them ``warp(bin2(hr), lr.shape, angle_deg, scale, shift)`` matches ``lr``.
    """
    from skimage.registration import phase_cross_correlation

    lr = ndimage.gaussian_filter(lr.astype(np.float64), 1.0)
    hrb = ndimage.gaussian_filter(bin2(hr.astype(np.float64)), 1.0)
    # Optimise on a central window: enough pixels for 0.01 px precision, bounded cost.
    h, w = lr.shape
    win = (slice(max(0, h // 2 - 192), h // 2 + 192), slice(max(0, w // 2 - 192), w // 2 + 192))
    margin = max(4, min(h, w) // 16)  # what a few degrees of rotation moves at the borders

    def score(params) -> float:
        angle, log_scale, dy, dx = params
        moved = warp(hrb, lr.shape, angle, np.exp(log_scale), (dy, dx), order=1)
        return -pearson(lr[win][margin:-margin, margin:-margin],
                        moved[win][margin:-margin, margin:-margin])

    starts = []
    a, b = _common(lr, hrb)
    shift, _, _ = phase_cross_correlation(a, b, upsample_factor=20, normalization=None)
    starts.append((0.0, 0.0, -shift[0], -shift[1]))
    angle, scale = _rotation_scale(lr, hrb)
    if abs(angle) < 45 and 0.5 < scale < 2:
        rotated = warp(hrb, lr.shape, angle, scale, (0, 0), order=1, cval=float(hrb.mean()))
        shift, _, _ = phase_cross_correlation(lr, rotated, upsample_factor=20, normalization=None)
        starts.append((angle, np.log(scale), -shift[0], -shift[1]))
    best = min(starts, key=score)
    result = optimize.minimize(score, best, method="Powell",
                               options={"xtol": 1e-4, "ftol": 1e-9, "maxfev": 4000})
    angle, log_scale, dy, dx = result.x
    return float(angle), float(np.exp(log_scale)), np.array([dy, dx]), float(-result.fun)


def _valid_box(valid: np.ndarray) -> tuple[int, int, int, int]:
    """Largest-ish axis-aligned box (y0, y1, x0, x1) of all-True pixels, by shrinking the
    bounding box from the side with the most invalid pixels (at most h + w steps)."""
    ys, xs = np.nonzero(valid)
    if ys.size == 0:
        return 0, 0, 0, 0
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    while y1 > y0 and x1 > x0:
        box = ~valid[y0:y1, x0:x1]
        if not box.any():
            break
        sides = {"top": box[0].sum(), "bottom": box[-1].sum(), "left": box[:, 0].sum(),
                 "right": box[:, -1].sum()}
        side = max(sides, key=sides.get)
        y0, y1 = y0 + (side == "top"), y1 - (side == "bottom")
        x0, x1 = x0 + (side == "left"), x1 - (side == "right")
    return int(y0), int(y1), int(x0), int(x1)


def resample_hr(hr: np.ndarray, lr_shape, angle_deg: float, scale: float, shift) -> np.ndarray:
    """The ISM image on the exact 2x grid of the confocal image (NaN outside its field).

    HR pixel p of the output sits at LR coordinate (p - 0.5) / 2 (its LR pixel's centre is at
    the centre of its 2x2 block); binned-ISM coordinate x_b maps to ISM coordinate 2 x_b + 0.5.
    """
    out_shape = hr_shape(lr_shape)
    centre = (np.asarray(lr_shape, dtype=np.float64) - 1) / 2
    m = _matrix(angle_deg, scale)
    # x_hr = 2 (c + M ((p - 0.5)/2 - c) + t) + 0.5 = M p + offset
    offset = 2 * (centre - m @ centre + np.asarray(shift)) + 0.5 - m @ np.array([0.5, 0.5])
    return ndimage.affine_transform(hr.astype(np.float64), m, offset, output_shape=out_shape,
                                    order=3, mode="constant", cval=np.nan)


def register_pair(name: str, lr_path: Path, hr_path: Path, limits: Limits = Limits()):
    """Measure, check and register one pair.

    Returns
    -------
    (qc, lr_out, hr_out, panels): ``lr_out``/``hr_out`` are None when rejected; ``qc.reason``
    then names the files, the measurement and what to do.
    """
    qc = PairQC(name)
    where = f"pair {name!r} ({lr_path}, {hr_path})"
    try:
        (lr, lr_um), (hr, hr_um) = read_image(lr_path), read_image(hr_path)
    except ValueError as error:  # NaN/inf, not 2-D, not a TIFF: the message names the file
        qc.reason = f"{where}: {error}"
        return qc, None, None, None
    qc.lr_shape = list(lr.shape)
    if lr_um and hr_um and abs(lr_um / hr_um / 2 - 1) > limits.max_scale_error:
        qc.reason = (f"{where}: wrong scale: pixel sizes {lr_um * 1000:.1f} nm (LR) and "
                     f"{hr_um * 1000:.1f} nm (HR), ratio {lr_um / hr_um:.3f}, not 2; resample the "
                     "ISM image to half the confocal pixel size first")
        return qc, None, None, None
    qc.saturation_lr, qc.saturation_hr = saturation(lr), saturation(hr)
    worst = max(qc.saturation_lr, qc.saturation_hr)
    if worst > limits.max_saturation:
        which = lr_path if qc.saturation_lr >= qc.saturation_hr else hr_path
        qc.reason = (f"{where}: saturated: {worst:.1%} of the pixels of {which} sit at its maximum "
                     f"(limit {limits.max_saturation:.1%}); re-acquire with lower gain or exposure")
        return qc, None, None, None
    if min(hr.shape) < 2 * 16 or min(lr.shape) < 16:
        qc.reason = f"{where}: images too small ({lr.shape}, {hr.shape}); need >= 16 LR px"
        return qc, None, None, None
    qc.correlation_before = pearson(*_common(lr.astype(np.float64), bin2(hr)))
    angle, scale, shift, _ = estimate(lr, hr)
    qc.rotation_deg, qc.scale = angle, scale
    qc.shift_y_lr_px, qc.shift_x_lr_px = float(shift[0]), float(shift[1])
    hrb = bin2(hr)
    moved = warp(hrb, lr.shape, angle, scale, shift, order=1)
    valid = np.isfinite(moved)
    qc.overlap = float(valid.mean())
    qc.correlation_after = pearson(lr.astype(np.float64), moved)
    # Without a match the fitted angle/scale/overlap mean nothing: test the correlation first.
    if not qc.correlation_after >= limits.min_correlation:
        qc.reason = (f"{where}: correlation after registration {qc.correlation_after:.3f} (limit "
                     f"{limits.min_correlation}); the images do not show the same field or "
                     "channel: check the pairing by name, the stage position, the channel and "
                     "that the ISM pixel size is half the confocal one")
    elif abs(scale - 1) > limits.max_scale_error:
        qc.reason = (f"{where}: wrong scale: the ISM image is {2 * scale:.3f}x the confocal one, "
                     f"not 2x (limit {limits.max_scale_error:.0%}); check both pixel sizes and "
                     "resample the ISM image to exactly half the confocal pixel size")
    elif abs(angle) > limits.max_rotation_deg:
        qc.reason = (f"{where}: rotated by {angle:.2f} degrees (limit "
                     f"{limits.max_rotation_deg}); check the camera orientation of both arms")
    elif qc.overlap < limits.min_overlap:
        qc.reason = (f"{where}: overlap {qc.overlap:.0%} of the confocal field (limit "
                     f"{limits.min_overlap:.0%}); acquire both images at the same stage position")
    if qc.reason:
        return qc, None, None, None
    y0, y1, x0, x1 = _valid_box(np.isfinite(warp(hrb, lr.shape, angle, scale, shift, order=0)))
    if min(y1 - y0, x1 - x0) < 16:
        qc.reason = f"{where}: common field only {y1 - y0}x{x1 - x0} LR px; need >= 16"
        return qc, None, None, None
    hr_grid = resample_hr(hr, lr.shape, angle, scale, shift)[hr_slices(y0, x0, y1 - y0, x1 - x0)]
    lr_out, top, left = lr[y0:y1, x0:x1], 0, 0
    if not np.all(np.isfinite(hr_grid)):  # spline support at the edge: drop one more pixel
        top = left = 1
        lr_out, hr_grid = lr_out[1:-1, 1:-1], hr_grid[2:-2, 2:-2]
    binned = bin2(hr_grid)
    qc.gain, qc.offset = (float(v) for v in np.polyfit(binned.ravel(), lr_out.ravel(), 1))
    qc.correlation_after = pearson(lr_out.astype(np.float64), binned)
    qc.out_lr_shape = list(lr_out.shape)
    qc.crop_lr = [y0 + top, y0 + top + lr_out.shape[0], x0 + left, x0 + left + lr_out.shape[1]]
    qc.status, qc.reason = "ok", ""
    panels = {"lr": lr, "before": _common(lr, hrb)[1], "after_lr": lr_out, "after_hr": binned}
    return qc, lr_out, hr_grid.astype(np.float32), panels


def _overlay(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Magenta (confocal) / green (ISM) overlay: misregistration shows as coloured fringes."""
    a, b = _common(a, b)

    def norm(x):
        low, high = np.percentile(x, (1, 99.8))
        return np.clip((x - low) / max(high - low, 1e-9), 0, 1)
    a, b = norm(a), norm(b)
    return np.stack([a, b, a], axis=-1)


def save_figure(path: Path, name: str, qc: PairQC, panels: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 4.8))
    axes[0].imshow(_overlay(panels["lr"], panels["before"]))
    axes[0].set_title(f"before: r = {qc.correlation_before:.3f}")
    axes[1].imshow(_overlay(panels["after_lr"], panels["after_hr"]))
    axes[1].set_title(f"after: r = {qc.correlation_after:.3f}")
    for ax in axes:
        ax.axis("off")
    fig.suptitle(f"{name}: shift ({qc.shift_y_lr_px:+.2f}, {qc.shift_x_lr_px:+.2f}) LR px, "
                 f"{qc.rotation_deg:+.2f} deg, scale {qc.scale:.4f}  (magenta confocal, green ISM)",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def unregistered_note(lr_dir) -> str | None:
    """One warning line when ``lr_dir``'s dataset was neither registered by ``srunet pairs``
    nor simulated (the simulator's pairs lie on the 2x grid by construction)."""
    root = Path(lr_dir).parent
    if (root / MARKER).is_file() or (root / "manifest.json").is_file():
        return None
    return (f"warning: {root} has no {MARKER}: its pairs were not registered; real confocal/ISM "
            f"pairs are never aligned to the pixel: run `srunet pairs {root} --out REGISTERED` "
            "and train on REGISTERED")


def register_folder(raw_dir, out_dir, *, overwrite: bool = False, limits: Limits = Limits(),
                    figures: bool = True) -> list[PairQC]:
    """Register every pair of ``raw_dir/lr``, ``raw_dir/hr`` into ``out_dir`` (atomically).

    Writes ``lr/``, ``hr/`` (accepted pairs, same names), ``qc.csv``, ``qc.json``,
    ``figures/NAME.png`` and the marker ``registration.json``.

    Raises
    ------
    FileExistsError
        If ``out_dir`` exists and ``overwrite`` is False.
    ValueError
        If no pair could be registered (every rejection is listed).
    """
    raw_dir, out_dir = Path(raw_dir), Path(out_dir)
    if out_dir.exists() and not overwrite:
        raise FileExistsError(f"{out_dir} exists; pass --overwrite to replace it")
    pairs = find_pairs(raw_dir / "lr", raw_dir / "hr")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        for sub in ("lr", "hr", "figures"):
            (tmp / sub).mkdir()
        rows = []
        for pair in pairs:
            qc, lr_out, hr_out, panels = register_pair(pair.name, pair.lr, pair.hr, limits)
            rows.append(qc)
            if lr_out is None:
                continue
            lr_um = (read_image(pair.lr)[1] or LR_PIXEL_NM / 1000)
            write_ome_tiff(tmp / "lr" / pair.lr.name, lr_out, lr_um)
            write_ome_tiff(tmp / "hr" / pair.hr.name, hr_out, lr_um / 2)
            if figures:
                save_figure(tmp / "figures" / f"{pair.name}.png", pair.name, qc, panels)
        accepted = [r for r in rows if r.status == "ok"]
        if not accepted:
            raise ValueError("no pair could be registered:\n" + "\n".join(r.reason for r in rows))
        _write_tables(tmp, rows)
        (tmp / MARKER).write_text(json.dumps({
            "tool": "srunet pairs", "source": str(raw_dir.resolve()), "limits": asdict(limits),
            "accepted": [r.name for r in accepted],
            "rejected": {r.name: r.reason for r in rows if r.status != "ok"}}, indent=2))
        swap_into_place(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return rows


def _write_tables(folder: Path, rows: list[PairQC]) -> None:
    records = [asdict(r) for r in rows]
    (folder / "qc.json").write_text(json.dumps(records, indent=2))
    columns = [k for k in records[0] if k not in ("lr_shape", "out_lr_shape", "crop_lr")]
    with open(folder / "qc.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, columns, extrasaction="ignore")
        writer.writeheader()
        for record in records:
            writer.writerow({k: (f"{v:.5g}" if isinstance(v, float) else v)
                             for k, v in record.items() if k in columns})
