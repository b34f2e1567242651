"""Figures and the Markdown summary of the evaluation report (matplotlib, no pyplot state)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from srunet import contract

METRIC_LABELS = {"psnr": "PSNR (dB)", "ssim": "SSIM", "nrmse": "NRMSE", "accuracy": "accuracy (%)"}


def _display_range(image: np.ndarray) -> tuple[float, float]:
    low, high = np.percentile(image, (0.5, 99.5))
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


def pair_figure(path, *, lr, bicubic, sr, hr, error, consistency, frc_curves: dict,
                title: str, std=None) -> Path:
    """One PNG per image. Top: LR | bicubic | SR | HR | |error|; bottom: consistency map,
    FRC curves (and the TTA std map when given).

    ``bicubic`` and ``sr`` should already be fitted (gain/offset) to ``hr`` so that the three HR
    panels share one display range, taken from the target.
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(15, 6.4), dpi=90)
    grid = fig.add_gridspec(2, 5, height_ratios=(1, 1))
    vmin, vmax = _display_range(hr)
    panels = [("LR input (85 nm px)", lr, _display_range(lr), "gray"),
              ("bicubic", bicubic, (vmin, vmax), "gray"),
              ("SR (model)", sr, (vmin, vmax), "gray"),
              ("HR target (42.5 nm px)", hr, (vmin, vmax), "gray"),
              ("|SR - HR| (fitted)", np.abs(error), (0.0, _display_range(np.abs(error))[1]), "magma")]
    for column, (label, image, (low, high), cmap) in enumerate(panels):
        ax = fig.add_subplot(grid[0, column])
        shown = ax.imshow(image, cmap=cmap, vmin=low, vmax=high, interpolation="nearest")
        ax.set_title(label, fontsize=9)
        ax.set_axis_off()
        if column == 4:
            fig.colorbar(shown, ax=ax, fraction=0.046)
    ax = fig.add_subplot(grid[1, 0])
    shown = ax.imshow(consistency, cmap="magma", interpolation="nearest")
    ax.set_title("consistency error (LR grid)", fontsize=9)
    ax.set_axis_off()
    fig.colorbar(shown, ax=ax, fraction=0.046)
    ax = fig.add_subplot(grid[1, 1:3])
    for label, (freq, corr) in frc_curves.items():
        ax.plot(np.asarray(freq) * 1000.0, corr, label=label, lw=1)
    ax.axhline(1 / 7, color="0.5", ls="--", lw=1, label="1/7")
    ax.axvline(1000.0 / contract.ISM_RESOLUTION_LIMIT_NM, color="red", ls=":", lw=1,
               label=f"ISM limit ({contract.ISM_RESOLUTION_LIMIT_NM:.0f} nm)")
    ax.set_xlabel("spatial frequency (1/um)")
    ax.set_ylabel("FRC")
    ax.set_ylim(-0.2, 1.05)
    ax.legend(fontsize=7)
    ax.set_title("Fourier ring correlation", fontsize=9)
    if std is not None:
        ax = fig.add_subplot(grid[1, 3])
        shown = ax.imshow(std, cmap="viridis", interpolation="nearest")
        ax.set_title("TTA std (model units)", fontsize=9)
        ax.set_axis_off()
        fig.colorbar(shown, ax=ax, fraction=0.046)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def _fmt(value, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "**yes**" if value else "no"
    return f"{value:.{digits}g}" if isinstance(value, float) else str(value)


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
              f"ISM limit {contract.ISM_RESOLUTION_LIMIT_NM:.0f} nm; an output finer than that "
              "(beyond the tolerance) claims resolution beyond the ISM limit. 'SR vs HR' correlates "
              "the prediction with the target (independent noise): the finest detail the two agree on. "
              "Consistency: SR blurred by the confocal-vs-ISM PSF difference and binned 2x2 "
              "against the real LR (Pearson `rsp`, 1 = consistent); the target HR is scored the "
              "same way as a reference.", "",
              "| image | FRC LR (nm) | FRC SR (nm) | FRC HR (nm) | FRC SR vs HR (nm) | beyond ISM limit "
              "| rsp SR | rsp HR |"
              + (" TTA std |" if overall.get("tta_mean_std") is not None else ""),
              "|---|---|---|---|---|---|---|---|" + ("---|" if overall.get("tta_mean_std") is not None else "")]
    for name, record in images.items():
        frc = record["frc"]

        def res(key):
            value = frc[key]["resolution_nm"]
            return ("<=" if frc[key]["sampling_limited"] else "") + _fmt(value, 4)

        cells = [name, res("lr"), res("sr"), res("hr"), res("sr_vs_hr"), _fmt(record["beyond_ism_limit"]),
                 _fmt(record["consistency"]["sr"]["rsp"], 4),
                 _fmt(record["consistency"]["hr"]["rsp"], 4)]
        if record.get("uncertainty"):
            cells.append(_fmt(record["uncertainty"]["mean_std"], 3))
        lines.append("| " + " | ".join(cells) + " |")
    if overall["beyond_ism_limit"]:
        lines += ["", f"**Warning:** {len(overall['beyond_ism_limit'])} output(s) "
                  "claim resolution beyond the ISM limit: "
                  + ", ".join(overall["beyond_ism_limit"]) + ". Inspect them for invented detail."]
        if any(images[n]["frc"]["sr"]["method"] == "single-image" for n in overall["beyond_ism_limit"]):
            lines += ["Single-image FRC of an interpolated or network output sees its correlated noise "
                      "as detail; give a second LR realisation of the field (two-image FRC) to confirm."]
    if report.get("calibration_figure"):
        lines += ["", f"TTA calibration (error/std = {_fmt(overall['tta_calibration_ratio'])}):", "",
                  f"![calibration]({report['calibration_figure']})"]
    lines += ["", "## Images", ""]
    for name, record in images.items():
        lines += [f"![{name}]({record['figure']})", ""]
    lines += ["## Definitions", "",
              f"- Foreground: {report['settings']['foreground_mask']}",
              "- Metrics: PSNR/SSIM/NRMSE/accuracy of `srunet.evaluation.metrics.all_metrics` (data "
              "range = 0.2-99.8 percentile range of the target; accuracy = % pixels within 10 % of "
              "that range) after a least-squares gain/offset fit of the prediction to the target.",
              "- FRC: " + report["settings"]["frc_note"],
              "- Trained on simulated pairs (ACQUISITION.md); real-data accuracy needs the user's own "
              "pairs, which is what this report is for.", ""]
    return "\n".join(lines)
