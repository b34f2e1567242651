"""Model card text and cover image of the srunet bioimage.io package.

Kept apart from ``package.py`` so the wording can be reviewed on its own. Every number about the
training data comes from ``srunet.contract`` (the acquisition contract), never retyped.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from srunet import contract
from srunet.evaluation.figures import side_by_side

CITATIONS = (
    ("Ronneberger, Fischer & Brox (2015). U-Net: Convolutional Networks for Biomedical Image "
     "Segmentation. MICCAI.", "10.1007/978-3-319-24574-4_28"),
    ("Shi et al. (2016). Real-Time Single Image and Video Super-Resolution Using an Efficient "
     "Sub-Pixel Convolutional Neural Network. CVPR.", "10.1109/CVPR.2016.207"),
    ("Müller & Enderlein (2010). Image Scanning Microscopy. Physical Review Letters 104, 198101.",
     "10.1103/PhysRevLett.104.198101"),
)


def _range(pair, unit: str = "", fmt: str = "g") -> str:
    return f"{pair[0]:{fmt}}-{pair[1]:{fmt}}{unit}"


def training_data_text() -> str:
    """Honest description of the simulated training pairs, numbers from the contract."""
    confocal, ism = contract.PSF_FWHM_NM[contract.DEFAULT_SETTING]
    return f"""\
**The default weights were trained on physically simulated image pairs, not on real
microscope data.** The simulation follows the project's acquisition contract:

- input ("LR"): spinning-disk confocal, {contract.LR_PIXEL_NM:g} nm pixels, lateral PSF FWHM
  ~{confocal:g} nm at {contract.DEFAULT_SETTING} (+-{100 * contract.FWHM_JITTER:g} % per image,
  pinhole {_range(contract.PINHOLE_AU, ' AU')}); sCMOS noise: Poisson with QE
  {_range(contract.QE)}, read noise {_range(contract.READ_NOISE_E, ' e- rms')}, offset
  ~{contract.OFFSET_ADU:g} ADU, peak signal {_range(contract.LR_PEAK_E, ' e-')} (log-uniform);
  out-of-focus haze {_range([100 * f for f in contract.HAZE_FRACTION], ' %')} of the object
  blurred by a {_range(contract.HAZE_SIGMA_UM, ' um')} Gaussian plus
  {100 * contract.AUTOFLUORESCENCE:g} % flat autofluorescence.
- target ("HR"): ISM (pixel reassignment), {contract.HR_PIXEL_NM:g} nm pixels (exactly half),
  PSF FWHM ~{ism:g} nm, reassignment factor {_range(contract.REASSIGNMENT)}; photon-counting
  Poisson noise with peak {_range(contract.HR_PEAK_PHOTONS, ' photons')}; a third of the haze.
- objects rendered on a {contract.FINE_PIXEL_NM:g} nm grid and box-integrated to both pixel
  sizes; LR pixel (i, j) covers HR pixels (2i..2i+1, 2j..2j+1); sub-pixel misregistration of
  {_range(contract.REGISTRATION_SHIFT_LR_PX, ' LR px')} between the two.
- content: kidney-cortex-like local views (tubule walls, brush border, membranes, actin,
  nuclei, vesicles, podocyte foot processes) mixed with generic filaments, puncta and blobs.

Accuracy on real confocal/ISM pairs is **not** established by this training. Check it on your
own pairs (`srunet evaluate --model rdf.yaml --lr LR_DIR --hr HR_DIR --out REPORT`) and, for real
use, retrain on registered real pairs: `srunet train --data DIR` (DIR with `lr/` and `hr/`
TIFF pairs, HR exactly 2x the LR size), or fine-tune these weights on them by adding
`train.init_from=weights.pt` (this package's state-dict file), then
`srunet package --checkpoint BEST.pt --out PKG`."""


def readme_text(*, name: str, checkpoint: dict, input_halo: int, grid: int, min_size: int,
                metrics: dict | None) -> str:
    """The package's README.md (``documentation``), including a ``# Validation`` section.

    Parameters
    ----------
    name : str
        Model name as in the description.
    checkpoint : dict
        Loaded srunet checkpoint (model kwargs, normalization, training metrics).
    input_halo, grid, min_size : int
        Tiling geometry in input pixels, as declared in the description.
    metrics : dict or None
        ``{"model": all_metrics(...), "bicubic": all_metrics(...)}`` on the packaged sample pair.
    """
    low, high = checkpoint["normalization"]["lr_percentiles"]
    kwargs = ", ".join(f"{k}={v!r}" for k, v in checkpoint["model_kwargs"].items())
    if metrics:
        rows = "\n".join(
            f"| {key} | {metrics['model'][key]:.4g} | {metrics['bicubic'][key]:.4g} |"
            for key in ("psnr", "ssim", "nrmse", "accuracy"))
        table = ("Metrics on the packaged simulated sample pair (one image; gain/offset fitted "
                 "to the ISM target first, see `srunet.evaluation.metrics`):\n\n"
                 "| metric | this model | bicubic 2x |\n|---|---|---|\n" + rows)
    else:
        table = "No sample metrics were computed for this build."
    train_metrics = checkpoint.get("metrics") or {}
    if "val_psnr" in train_metrics and "val_bicubic_psnr" in train_metrics:
        rows = "\n".join(
            f"| {key} | {train_metrics[f'val_{key}']:.4g} | {train_metrics[f'val_bicubic_{key}']:.4g} |"
            for key in ("psnr", "ssim", "nrmse", "accuracy")
            if f"val_{key}" in train_metrics and f"val_bicubic_{key}" in train_metrics)
        train_line = ("Mean over the training run's validation images (simulated, held out by "
                      f"image; checkpoint step {checkpoint.get('step', '?')}):\n\n"
                      "| metric | this model | bicubic 2x |\n|---|---|---|\n" + rows)
    else:
        train_line = "The checkpoint records no training validation metrics."
    return f"""\
# {name}

2x super-resolution for fluorescence microscopy: a **spinning-disk confocal** image
({contract.LR_PIXEL_NM:g} nm pixels) in, an **ISM**-like image ({contract.HR_PIXEL_NM:g} nm pixels,
twice the pixel density per axis) out. A UNet ({kwargs}) with a sub-pixel convolution head and
a residual over the bilinear 2x upsampling of the input.

## Input and output

- input `input`: one 2-D single-channel image, axes batch, channel, y, x, **raw camera values**:
  the package normalises it itself (`scale_range`, per image, percentiles {low:g} and {high:g},
  the training numbers). Any size works in bioimage.io tools that tile; block sizes are
  {min_size} + n x {grid} input pixels.
- output `output`: exactly twice the input height and width, on the normalised intensity scale
  (about 0 at background, 1 at bright structures); not photon counts.
- halo: {input_halo} input pixels ({2 * input_halo} output pixels) per side, covering the
  network's receptive field, so tiled prediction matches whole-image prediction.
- axis `scale` is written as 4.0 (input) and 2.0 (output) without a unit: this encodes the 2x
  ratio so that both bioimage.io (v0.5 meaning) and deepImageJ/JDLL (v0.4 meaning) compute the
  2x output size and the right halo. Physical pixel sizes are {contract.LR_PIXEL_NM:g} nm and
  {contract.HR_PIXEL_NM:g} nm.

## Training data

{training_data_text()}

# Validation

{table}

{train_line}

Checked at build time: the torchscript and ONNX weights reproduce the PyTorch state-dict
weights on odd image sizes, and `bioimageio.core`'s test passes for all three weight formats.
The project's own harness (`tests/test_package.py`) also checks that tiled prediction equals
whole-image prediction, that the halo covers the measured receptive field, and that blocks
leave no seams. None of this says the output is *right* for your microscope: a model that
claims detail finer than ~{contract.ISM_RESOLUTION_LIMIT_NM:g} nm FWHM is inventing it. Compare
against real ISM images of your own samples before drawing conclusions.

## Use

- Python: `srunet predict IMAGE.tif --model rdf.yaml --out OUT/` (writes OME-TIFF with half the
  pixel size) or `bioimageio predict`.
- deepImageJ / Fiji: if the torchscript weights do not load in your engine (JDLL runs PyTorch
  <= 2.0; these were saved with a newer PyTorch, traced, not scripted: in a check by the
  srunet developers such a file loaded and reproduced in PyTorch 2.0.1), select the **ONNX**
  weights (opset <= 18).
  Tiling is allowed; keep tiles at {min_size} + n x {grid} pixels.
- ilastik: not supported, it forces output size = input size.

## Limitations

Trained on simulation only; single channel; 2-D; one optical setting family (NA 1.2-1.4,
488-561 nm excitation). Out-of-focus haze, sample type and noise levels far from the training
ranges give unreliable output. Use `srunet predict --consistency --uncertainty` to get a
physics-consistency map and a test-time-augmentation uncertainty map beside each output, and
`srunet evaluate` (Fourier ring correlation) to see whether outputs claim finer detail than ISM.

Tiling: the UNet's 2x2 max pooling makes the result depend slightly on where a block starts
modulo {grid} input pixels. `srunet predict` pads images to that grid, and bioimage.io blocking
of images whose size lies on the declared size grid ({min_size} + n x {grid}) starts every block
on it: both are exact. Tools that start tiles at other offsets can show faint joins.
"""


def write_cover(path: Path, *, lr: np.ndarray, bicubic: np.ndarray, sr: np.ndarray,
                hr: np.ndarray) -> Path:
    """Write a 2:1 PNG cover, panels LR | bicubic | SR (this model) | ISM target (centre crop)."""
    # Zoom on the centre (at most 64 LR px) so the 2x gain is visible at thumbnail size.
    crop = min(64, *lr.shape)
    y0, x0 = (lr.shape[0] - crop) // 2, (lr.shape[1] - crop) // 2
    lr = lr[y0:y0 + crop, x0:x0 + crop]
    bicubic, sr, hr = (im[2 * y0:2 * (y0 + crop), 2 * x0:2 * (x0 + crop)]
                       for im in (bicubic, sr, hr))
    panels = (("confocal input", lr), ("bicubic 2x", bicubic), ("srunet 2x", sr),
              ("ISM target", hr))
    return side_by_side(path, panels, panel_inches=2.5,
                        title="srunet: spinning-disk confocal -> ISM, 2x per axis (simulated pair)")
