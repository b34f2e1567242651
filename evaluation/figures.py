"""Figures and the Markdown summary of the evaluation report (matplotlib, no pyplot state)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from srunet.evaluation import frc
from srunet.evaluation.metrics import DATA_RANGE_PERCENTILES, DISPLAY_PERCENTILES
from srunet.physics import contract

# The invented-detail flag in words (report.json settings and summary.md).
INVENTED_NOTE = (
    f"power of the prediction at frequencies beyond 1/{contract.ISM_RESOLUTION_LIMIT_NM:.0f} nm "
    "(finer than an ISM microscope resolves) that repeats between the predictions from two noise "
    "draws of the input (their cross-spectrum), minus the part the independent ISM target "
    "confirms (cross-spectrum prediction x target), as a share of the structure power "
    "(prediction x target cross-power at all frequencies), after the gain fit to the target. "
    "A denoiser's estimate of real detail is confirmed by the target and cancels; input noise does "
    "not repeat; a texture or a boost the model adds repeats and is not in the target. Flagged "
    f"above {frc.INVENTED_THRESHOLD:g} (an invented RMS amplitude of about "
    f"{100 * math.sqrt(frc.INVENTED_THRESHOLD):.1f} % of the structure's), a threshold calibrated "
    "with bench/flag_controls.py on 24 held-out phantoms: the release as is holds at most 9.5e-5 "
    "there, bicubic at most 9.5e-5 and the release low-passed at the ISM limit 3e-6; the release "
    "plus a fixed texture at 5 % of the local brightness holds at least 2.9e-4, the release with "
    "that band boosted 10x at least 1.6e-4. The band stops 0.1 cycles/px short of the Nyquist "
    "frequency on each axis, where every 2x interpolator leaves images of the coarse content. "
    "An FRC cannot make this distinction: it ignores power, so the "
    "SR-vs-SR FRC of a denoiser stays high up to Nyquist. Without a second LR draw the "
    "prediction's own high-band power replaces the reproducible one, so its noise counts as "
    "invented too (an upper bound).")

METRIC_LABELS = {"psnr": "PSNR (dB)", "ssim": "SSIM", "nrmse": "NRMSE", "accuracy": "accuracy (%)"}


def _display_range(image: np.ndarray) -> tuple[float, float]:
    low, high = np.percentile(image, DISPLAY_PERCENTILES)
    return float(low), float(high if high > low else low + 1.0)


def side_by_side(path, panels, *, title: str = "", panel_inches: float = 4.0) -> Path:
    """PNG of images side by side, each with its own robust display range (the images are on
    different intensity scales: camera ADU, normalised, photon counts).

    ``panels`` is a sequence of (title, 2-D image). Used for training previews and covers.
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(panel_inches * len(panels), panel_inches + 0.6), dpi=80)
    for index, (name, image) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), index + 1)
        low, high = _display_range(image)
        ax.imshow(image, cmap="magma", vmin=low, vmax=high, interpolation="nearest")
        ax.set_title(name)
        ax.set_axis_off()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def _nice_bar_um(width_um: float) -> float:
    """A round scale-bar length of about a fifth of the field width."""
    for length in (0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100):
        if length >= width_um / 6:
            return float(length)
    return 200.0


def _image_panel(fig, cell, image, *, title, pixel_nm, cmap="gray", limits=None, unit=None):
    """One image with a scale bar in µm (and a colour bar labelled ``unit`` when given)."""
    from mpl_toolkits.axes_grid1.anchored_artists import AnchoredSizeBar

    ax = fig.add_subplot(cell)
    low, high = limits if limits is not None else _display_range(image)
    shown = ax.imshow(image, cmap=cmap, vmin=low, vmax=high, interpolation="nearest")
    ax.set_title(title, fontsize=9)
    ax.set_axis_off()
    length_um = _nice_bar_um(image.shape[1] * pixel_nm / 1000.0)
    ax.add_artist(AnchoredSizeBar(ax.transData, length_um * 1000.0 / pixel_nm,
                                  f"{length_um:g} µm", "lower right", pad=0.3, color="white",
                                  frameon=False, size_vertical=max(1.0, image.shape[0] / 120),
                                  fontproperties={"size": 8}))
    if unit is not None:
        bar = fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.02)
        bar.set_label(unit, fontsize=8)
        bar.ax.tick_params(labelsize=7)
    return ax


def spread_label(ratio: float | None) -> str:
    """Colour-bar label of the TTA spread: relative, with the measured under-estimate."""
    if ratio is None or not np.isfinite(ratio):
        return "relative spread (not calibrated, see report)"
    return (f"relative spread (not calibrated: underestimates\nerror ~{ratio:.0f}-fold, "
            "see report)")


def pair_figure(path, *, lr, bicubic, sr, hr, error, consistency, frc_curves: dict,
                title: str, std=None, std_ratio: float | None = None,
                lr_pixel_nm: float = contract.LR_PIXEL_NM,
                hr_pixel_nm: float = contract.HR_PIXEL_NM) -> Path:
    """One PNG per image: top LR | bicubic | SR | HR, bottom |error| | consistency | (TTA
    spread) | FRC, every image with a µm scale bar and colour bars with units, and a legend.

    ``bicubic`` and ``sr`` should already be fitted (gain/offset) to ``hr`` so that the three HR
    panels share one display range (and colour bar), taken from the target. ``std`` is shown as
    a relative map; ``std_ratio`` is the measured error/spread ratio quoted on its colour bar.
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(13, 6.5), dpi=90, layout="constrained")
    outer = fig.add_gridspec(2, 1)
    # separate rows: the FRC plot's width must not stretch the columns of the image row
    top, bottom = outer[0].subgridspec(1, 4), outer[1].subgridspec(1, 4)
    vmin, vmax = _display_range(hr)
    target_unit = "intensity (target units)"
    _image_panel(fig, top[0, 0], lr, title=f"LR input ({lr_pixel_nm:g} nm px)", pixel_nm=lr_pixel_nm,
                 unit="intensity (input units)")
    for column, (label, image) in enumerate((("bicubic 2x", bicubic), ("SR (model)", sr)), 1):
        _image_panel(fig, top[0, column], image, title=label, pixel_nm=hr_pixel_nm,
                     limits=(vmin, vmax))
    _image_panel(fig, top[0, 3], hr, title=f"HR target ({hr_pixel_nm:g} nm px)",
                 pixel_nm=hr_pixel_nm, limits=(vmin, vmax), unit=target_unit)
    magnitude = np.abs(error)
    _image_panel(fig, bottom[0, 0], magnitude, title="|SR - HR| (after fit)", pixel_nm=hr_pixel_nm,
                 cmap="magma", limits=(0.0, _display_range(magnitude)[1]),
                 unit="|error| (target units)")
    _image_panel(fig, bottom[0, 1], consistency, title="consistency error (LR grid)",
                 pixel_nm=lr_pixel_nm, cmap="magma", limits=(0.0, _display_range(consistency)[1]),
                 unit="|LR - degraded SR| (input units)")
    if std is not None:
        relative = np.asarray(std, np.float64) / max(vmax - vmin, 1e-12)
        _image_panel(fig, bottom[0, 2], relative, title="TTA spread (8 rotations/flips)",
                     pixel_nm=hr_pixel_nm, cmap="viridis",
                     limits=(0.0, _display_range(relative)[1]), unit=spread_label(std_ratio))
        ax = fig.add_subplot(bottom[0, 3])
    else:
        ax = fig.add_subplot(bottom[0, 2:])
    for label, (freq, corr) in frc_curves.items():
        ax.plot(np.asarray(freq) * 1000.0, corr, label=label, lw=1)
    ax.axhline(1 / 7, color="0.5", ls="--", lw=1, label="1/7 threshold")
    ax.axvline(1000.0 / contract.ISM_RESOLUTION_LIMIT_NM, color="red", ls=":", lw=1,
               label=f"ISM limit ({contract.ISM_RESOLUTION_LIMIT_NM:.0f} nm)")
    ax.set_xlabel("spatial frequency (1/µm)", fontsize=8)
    ax.set_ylabel("Fourier ring correlation", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.set_ylim(-0.2, 1.05)
    ax.legend(fontsize=6.5, loc="lower left")
    ax.set_title("FRC: resolution where it crosses 1/7", fontsize=9)
    fig.suptitle(title, fontsize=11)
    fig.text(0.01, 0.005, "Bicubic, SR and HR share one grey scale (target units, after a "
             "gain/offset fit). Error: where SR differs from the target. Consistency: where SR, "
             "blurred back to confocal, disagrees with the measured input (bright = suspect). "
             + ("Spread: where the 8 rotated/flipped predictions disagree; relative only. "
                if std is not None else "")
             + "FRC: detail finer than the red line is beyond what ISM can resolve.",
             fontsize=7.5, wrap=True, va="bottom")
    fig.get_layout_engine().set(rect=(0, 0.045, 1, 0.955))  # room for the legend text
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


FLAG_NOTES = (
    "**invented detail = yes**: the prediction holds detail finer than the "
    f"{contract.ISM_RESOLUTION_LIMIT_NM:.0f} nm an ISM microscope resolves that repeats from one "
    "noise draw to the next (so it is the model's, not noise) but is not in the independent ISM "
    "target: a texture or sharpening the model adds. What to do: do not interpret structures smaller "
    f"than about {contract.ISM_RESOLUTION_LIMIT_NM:.0f} nm in that image, compare its SR and HR panels, "
    "and retrain (or drop the model) if it is common. Denoising alone does not raise it (the "
    "target confirms what a denoiser estimates). Without a second LR realisation "
    "(`--lr-repeat`/`--hr-repeat`) the prediction's noise counts too: confirm with one.",
    "**'<=' before an FRC value**: the curve never fell below the threshold, so the number is a "
    "bound set by the pixel size, not a measurement; read it as 'at least this fine' (no action). "
    "An FRC is not an invented-detail test: it ignores power, and a denoiser's faint estimate of "
    "fine detail repeats between noise draws, so 'SR' FRC values finer than the ISM limit are "
    "expected; 'SR vs HR' is the resolution the output shares with a real ISM image.",
    "**rsp SR well below rsp HR**: the output, blurred back to confocal, disagrees with the measured "
    "input more than the real ISM image does; look at the bright areas of that image's consistency "
    "map before trusting structures there, and retrain on your own pairs if it is common.",
)


def _fmt(value, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "**yes**" if value else "no"
    return f"{value:.{digits}g}" if isinstance(value, float) else str(value)


def _error_bar_lines(report: dict) -> list[str]:
    """The summary's error-bar paragraph: the package's calibrated sigma, the fitted one."""
    bar, fitted = report.get("error_bar"), report.get("fitted_calibration")
    lines = ["", "### Error bar (calibrated sigma)", ""]
    if bar:
        c, cover = bar["calibration"], bar["coverage"]
        lines += [f"The package's error bar (sigma = sqrt(({c['spread_factor']:.3g} x TTA spread)^2 "
                  f"+ ({c['floor']:.3g} x input std)^2), fitted on {c['data']}) covers "
                  f"**{100 * cover:.1f} %** of these pixels at +-{bar['z']:g} sigma (nominal "
                  f"{100 * c['level']:.0f} %; it held {100 * c['coverage']:.1f} % where it was "
                  "fitted). Per TTA-spread bin (low to high): "
                  + ", ".join(f"{100 * v:.0f} %" for v in bar["bins"]["coverage"]) + ". The "
                  "error is the prediction minus the target on the output's scale, so the "
                  "interval is for an independent ISM acquisition of the same field.", "",
                  f"![coverage]({bar['figure']})", ""]
    else:
        lines += ["The package ships no calibrated error bar, so no coverage is reported.", ""]
    if fitted and "file" in fitted:
        lines += [f"`{fitted['file']}`: an error bar fitted on these pairs (spread factor "
                  f"{fitted['spread_factor']:.3g}, floor {fitted['floor']:.3g} x input std; "
                  f"{100 * fitted['coverage']:.1f} % at +-{fitted['z']:g} sigma here). Ship it "
                  "with `srunet package --calibration` once checked on other pairs."]
    elif fitted:
        lines += [f"No error bar could be fitted on these pairs: {fitted['error']}"]
    return lines


def summary_markdown(report: dict) -> str:
    """The one-page ``summary.md``: headline table, trust checks, per-image figures, definitions."""
    overall, images = report["overall"], report["images"]
    lines = [f"# srunet evaluation: {report['model']}", "",
             f"{len(images)} image pair(s), written {report['created']}. All numbers are in "
             "`report.json`; arrays per image in `arrays/`.", "",
             "## Image quality (mean over images, after gain/offset fit to the target)", "",
             "| metric | model | bicubic | model, foreground | bicubic, foreground |",
             "|---|---|---|---|---|"]
    for key, label in METRIC_LABELS.items():
        row = [overall["model"]["whole"].get(key), overall["bicubic"]["whole"].get(key),
               overall["model"]["foreground"].get(key), overall["bicubic"]["foreground"].get(key)]
        lines.append(f"| {label} | " + " | ".join(_fmt(v, 4) for v in row) + " |")
    lines += ["", "## Trust checks", "",
              f"FRC method: {overall['frc_method']}, threshold {report['settings']['frc_threshold']}. "
              "Invented detail: reproducible power beyond the "
              f"{contract.ISM_RESOLUTION_LIMIT_NM:.0f} nm ISM limit that the target does not confirm, "
              "as a share of the structure power (flagged above "
              f"{report['settings']['invented_detail_threshold']:g}; definition below). 'SR vs HR' correlates "
              "the prediction with the target (independent noise): the finest detail the two agree on. "
              "Consistency: SR blurred by the confocal-vs-ISM PSF difference and binned 2x2 "
              "against the real LR (Pearson `rsp`, 1 = consistent); the target HR is scored the "
              "same way as a reference.", "",
              "| image | FRC LR (nm) | FRC SR (nm) | FRC HR (nm) | FRC SR vs HR (nm) | invented detail "
              "| rsp SR | rsp HR |"
              + (" TTA spread (model units) |" if overall.get("tta_mean_std") is not None else ""),
              "|---|---|---|---|---|---|---|---|" + ("---|" if overall.get("tta_mean_std") is not None else "")]
    for name, record in images.items():
        frc = record["frc"]

        def res(key):
            value = frc[key]["resolution_nm"]
            return ("<=" if frc[key]["sampling_limited"] else "") + _fmt(value, 4)

        invented = record["invented_detail"]
        cells = [name, res("lr"), res("sr"), res("hr"), res("sr_vs_hr"),
                 f"{_fmt(invented['invented'], 2)} ({_fmt(invented['flagged'])})",
                 _fmt(record["consistency"]["sr"]["rsp"], 4),
                 _fmt(record["consistency"]["hr"]["rsp"], 4)]
        if record.get("uncertainty"):
            cells.append(_fmt(record["uncertainty"]["mean_std"], 3))
        lines.append("| " + " | ".join(cells) + " |")
    flagged = overall["invented_detail"]
    if flagged:
        lines += ["", f"**Warning:** {len(flagged)} output(s) hold invented detail beyond the ISM "
                  "limit: " + ", ".join(flagged) + " (see below what that means and what to do)."]
        if any(images[n]["invented_detail"]["method"] == "one draw" for n in flagged):
            lines += ["Without a second LR realisation the prediction's noise beyond the limit "
                      "counts as invented; give one (`--lr-repeat`, `--hr-repeat`) to confirm."]
    lines += ["", "### What the flags mean and what to do", ""] + [f"- {line}" for line in FLAG_NOTES]
    if report.get("calibration_figure"):
        ratio = overall["tta_calibration_ratio"]
        lines += ["", "### Uncertainty (test-time augmentation)", "",
                  f"The raw spread of the 8 rotated/flipped predictions (the figures' spread "
                  f"panel) is a **relative** map: on these images the actual RMS error is "
                  f"{_fmt(ratio)} times the RMS spread (1 would be calibrated), so it "
                  f"underestimates the error about {ratio:.0f}-fold. It shows *where* the model "
                  "is less sure; a calibrated sigma (below) "
                  "says *how large* the error is.", "",
                  f"![calibration]({report['calibration_figure']})"]
        lines += _error_bar_lines(report)
    lines += ["", "## Images", ""]
    for name, record in images.items():
        lines += [f"![{name}]({record['figure']})", ""]
    lines += ["## Definitions", "",
              f"- Foreground: {report['settings']['foreground_mask']}",
              "- Metrics: PSNR/SSIM/NRMSE/accuracy of `srunet.evaluation.metrics.all_metrics` (data "
              f"range = {DATA_RANGE_PERCENTILES[0]:g}-{DATA_RANGE_PERCENTILES[1]:g} percentile "
              "range of the target; accuracy = % pixels within 10 % of that range) after a least-squares gain/offset fit of the prediction to the target.",
              "- FRC: " + report["settings"]["frc_note"],
              "- Invented detail: " + report["settings"]["invented_detail_note"],
              "- Trained on simulated pairs (docs/acquisition.md in the srunet repository); real-data accuracy needs the user's own "
              "pairs, which is what this report is for.", ""]
    return "\n".join(lines)
