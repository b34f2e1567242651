"""Model card text and cover image of the srunet package (its numbers: ``record.py``).

Kept apart from ``package.py`` so the wording can be reviewed on its own. The card is
``card_template.md`` filled in: the numbers measured at build time (sample and training metrics,
tiling geometry) come from the record that the package also ships as ``metrics.json`` (so a
re-export reads them back from there, ``from_package``); every number about the training data
comes from ``srunet.physics.contract`` (the acquisition contract), never retyped.
"""

from __future__ import annotations

import string
import textwrap
from pathlib import Path

import numpy as np

from srunet.evaluation.uncertainty import Calibration
from srunet.model.record import METRIC_KEYS
from srunet.simulation.simulator import DATASET_DOMAINS
from srunet.physics import contract
from srunet.geometry import hr_slices
from srunet.normalization import EPS, MEAN_STD, method_of

# Who can run the package, and how that is known: the same table is in the repository README.
CONSUMERS = """\
| consumer | runs this package? | how we know |
|---|---|---|
| bioimageio.core (Python, `bioimageio predict`) | yes, all three weight formats, tiled, any image of at least 158 px (smaller ones as an xarray with named axes, which core pads) | `bioimageio test` passes with the newest core (0.11), with the zoo runner's pins (core 0.10.4, spec 0.5.10.2, onnxruntime 1.20.1; torch 2.13 in place of the runner's 2.5.1) and with core 0.9.6 (BiaPy's pin; spec 0.5.7.4, pydantic < 2.14): `test_model` passes for all three weight formats; tiled = whole-image prediction is tested by the srunet harness |
| deepImageJ / Fiji (JDLL) | expected with the **ONNX** weights; not run | not run (no Fiji here). The 4.0/2.0 axis scales give 2x and the right halo in JDLL's reading (read from JDLL's source); the torchscript file is declared PyTorch 2.13, above JDLL's engines (<= 2.0), so choose ONNX (opset 17 <= 18). Its zero-mean/unit-variance preprocessing is computed exactly like bioimageio.core's: a test emulates JDLL's arithmetic and meets deepImageJ's element-wise tolerance on the test tensors (`tests/test_consumers.py`) |
| BiaPy 3.7.1 | **not yet** | run as its users run it: its super-resolution workflow accepts only `div`/`scale_range` normalisation and this model uses zero-mean/unit-variance, so BiaPy stops at its configuration check. With that one check lifted, BiaPy's tiling gives bioimageio.core's output (to 5e-7 of the range). BiaPy finds zoo models only in the bioimage.io catalogue, needs `pydantic<2.14` beside bioimageio.core 0.9.6 and `DATA.REFLECT_TO_COMPLETE_SHAPE: False` for a 2x output. Use bioimageio.core, `srunet predict` or deepImageJ instead |
| napari (bioimageio plugin) | possibly, not run | the plugin runs bioimageio.core underneath; not run here (no display) |
| ilastik | **no**, no variant of this package can | its tiktorch operator gives the output the input's shape and crops it with input-grid coordinates, so a 2x output comes back silently mis-cropped, and no format-0.5 preprocessing step upsamples. A same-size variant (taking a nearest-neighbour 2x-upsampled image) would fit that shape rule, but ilastik normalises each tile with its own percentiles, so tiles would not match. Use bioimageio.core, `srunet predict` or deepImageJ |
"""


def _range(pair, unit: str = "", fmt: str = "g") -> str:
    return f"{pair[0]:{fmt}}-{pair[1]:{fmt}}{unit}"


def _wide_text(domain: str) -> str:
    """The pairs drawn beyond the contract (``--domain wide|mixed``), numbers from ``contract.WIDE``."""
    w = contract.WIDE
    share = "Half of the pairs (odd seeds, `--domain mixed`) were" if domain == "mixed" else \
        "The pairs were"
    families = ", ".join(f"{name} {100 * p:.0f} %" for name, p in w["families"].items())
    recon = ", ".join(f"{name} {100 * p:.0f} %" for name, p in w["ism_reconstruction"].items())
    text = (f"{share} drawn beyond the contract (domain randomisation, `srunet simulate "
            f"--domain wide`; docs/acquisition.md, \"Wide domain\"), so that the model covers "
            f"more microscopes than the nominal one: emission wavelength / NA "
            f"{_range(w['wavelength_scale'])} x the default, pinhole {_range(w['pinhole_au'], ' AU')}, "
            f"confocal FWHM {_range(w['lr_fwhm_nm'], ' nm')} with wide tails or side lobes in "
            f"{100 * w['non_gaussian_probability']:g} % of the images; ISM detectors of "
            f"{_range(w['ism_detector_au'], ' AU')} reconstructed by {recon}; LR/HR "
            f"misregistration up to {w['shift_lr_px'][1]:g} LR px and rotations up to "
            f"+-{w['rotation_deg'][1]:g} degrees; cameras with gain "
            f"{_range(w['gain_adu_per_e'], ' ADU/e-')}, offset {_range(w['offset_adu'], ' ADU')}, "
            f"read noise {_range(w['read_noise_e'], ' e-')}, peak signal "
            f"{_range(w['lr_peak_e'], ' e-')}; haze up to {100 * w['haze_fraction'][1]:g} %; "
            f"structures: {families}.")
    return "\n" + textwrap.fill(text, width=96, break_on_hyphens=False) + "\n"


def training_data_text(domain: str = "contract") -> str:
    """Honest description of the simulated training pairs, numbers from the contract.

    ``domain``: how the pairs were drawn (``srunet simulate --domain``): "contract" (the v2
    release), "mixed" or "wide" add the ranges drawn beyond the contract.
    """
    if domain not in DATASET_DOMAINS:
        raise ValueError(f"training domain must be one of {list(DATASET_DOMAINS)}, got {domain!r}")
    confocal, ism = contract.PSF_FWHM_NM[contract.DEFAULT_SETTING]
    wide = "" if domain == "contract" else _wide_text(domain)
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
{wide}
Accuracy on real confocal/ISM pairs is **not** established by this training. Check it on your
own pairs (`srunet evaluate --model rdf.yaml --lr LR_DIR --hr HR_DIR --out REPORT`) and, for real
use, fine-tune these weights on your own pairs with the srunet training module: register them
(`srunet pairs RAW --out DIR`, DIR then holds `lr/` and `hr/` TIFF pairs on the exact 2x grid),
run `srunet train --recipe finetune --data DIR` (starts from the released `weights.pt`,
`train.init_from: release`; on simulated cases 95 % of the final gain came within the first minute on 2 CPU
cores, and 4 crops of 80x80 px from a microscope outside the contract lifted it from below
bicubic to +2 dB), then `srunet package --checkpoint BEST.pt --out PKG`."""


def _input_output_text(normalization: dict) -> str:
    """The card's input/output items for the checkpoint's normalisation (srunet.normalization)."""
    if method_of(normalization) == MEAN_STD:
        return f"""\
- input `input`: one 2-D single-channel image, axes batch, channel, y, x, **raw camera values**:
  the package normalises it itself (`zero_mean_unit_variance` over y and x, eps {EPS:g}),
  which bioimage.io tools and deepImageJ compute identically.
- output `output`: exactly twice the input height and width, in the input's *normalised*
  units (the network was trained to predict the ISM image on the input's intensity scale).
  **To get the input's camera units back**, multiply by the input image's standard deviation
  (population, plus {EPS:g}) and add its mean: `out * (std + {EPS:g}) + mean`.
  `srunet predict` does this for you."""
    low, high = normalization["lr_percentiles"]
    return f"""\
- input `input`: one 2-D single-channel image, axes batch, channel, y, x, **raw camera values**:
  the package normalises it itself (`scale_range`, per image, percentiles {low:g} and {high:g},
  the training numbers).
- output `output`: exactly twice the input height and width, on the normalised intensity scale
  (about 0 at background, 1 at bright structures); not photon counts."""


VERSION_HISTORY = """\
- **v3** (srunet 0.3): the v2 network and normalisation, its weights fine-tuned for 6,840
  steps (weights of the best validation, step 5,500) on 2,400 simulated pairs of which half
  are drawn beyond the acquisition contract (other wavelengths and NAs, pinholes, ISM
  detectors and reconstructions, cameras, haze and structure families; see Training data;
  `training/v3_mixed.yaml` in the srunet repository). Through bioimageio.core on the
  project's held-out sets: +3.33 dB PSNR over bicubic on the simulated phantoms (v2: +3.29,
  worst image +0.91 vs +0.80), +2.96 dB on structures the phantom generator never made (v2:
  +2.72), +3.33 dB on instruments outside every training range (v2: +3.13; 2 of 24 images
  below bicubic, v2: 3). Ships a calibrated error bar (`srunet predict --uncertainty`).
  Training the wider network from scratch on the wide domain alone lost 1.2 dB on the
  phantoms and was not released.
- **v2** (srunet 0.2): phase-free UNet (dilated convolutions at the input resolution instead of
  pooling, so a block may start at any pixel with the same result), ICNR-initialised sub-pixel
  head followed by a fixed [1, 2, 1] anti-imaging low-pass, zero-mean/unit-variance input
  normalisation computed alike by every consumer, output trained in the input's units (see
  Input and output), halo = the measured receptive radius of the weights. Trained from random
  weights on 800 simulated pairs (`training/kidney.yaml` in the srunet repository): +3.29 dB
  PSNR over bicubic on the project's simulated held-out phantoms (v1: +3.02 dB), +2.72 dB on
  held-out simulations of structures the phantom generator never made. Two-image FRC still
  flags most outputs as beyond the ISM limit (correlated content near the output's Nyquist
  frequency, most likely from the bilinear residual branch; see Limitations).
- **v1** (srunet 0.1): max-pooling UNet (depth 3, 24 channels) with a plain PixelShuffle head,
  percentile (`scale_range`) normalisation; output depended on the block position modulo 8
  pixels and its 2x head left spectral images that FRC flagged. Trained in two stages on
  simulated pairs; +3.02 dB PSNR over bicubic on the project's own simulated held-out set."""


def _architecture_note(grid: int) -> str:
    if grid != 1:
        return ""
    return (" The UNet is phase-free: its levels stay at the input resolution and widen their "
            "view with dilated convolutions instead of pooling, and a fixed low-pass after the "
            "sub-pixel head removes the spectral images a 2x head leaves above the input's "
            "Nyquist frequency.")


CORE_DEFAULT_N = 10  # bioimageio.core 0.11's default blocksize parameter (`--blockwise`)


def _sizes_text(min_size: int, step: int, halo: int) -> str:
    """What sizes each consumer takes (bioimageio.core 0.11, JDLL's TileMaker, srunet)."""
    if step == 1:
        return (f"blocks of at least {min_size} input pixels per side, halo included (each keeps "
                f"{min_size - 2 * halo} px or more beyond the halo); bioimage.io tools that tile "
                "take any image of at least that size, and `srunet predict` and deepImageJ pad "
                "smaller ones.")
    default = min_size + CORE_DEFAULT_N * step
    return f"""blocks of {min_size} + n x {step} input pixels per side, halo included (every multiple
  of {step} from {min_size} on); the smallest keeps {min_size - 2 * halo} px beyond the halo, n = 1, 2 keep {min_size + step - 2 * halo} and {min_size + 2 * step - 2 * halo}.
  `srunet predict` pads any image to that grid, and deepImageJ pads images smaller than its tile
  (down to a third of the tile side). bioimageio.core (0.11) takes an image of another size
  only as an xarray with named axes (`bioimageio predict` on a file, or a numpy array, must be
  {min_size} + n x {step} px: pad or crop it), and its blockwise prediction needs a block no
  larger than the image: its default (`--blockwise`, n = {CORE_DEFAULT_N}) is {default} px, so run
  images smaller than that without `--blockwise`, or with a smaller n."""


def _tiling_note(grid: int, min_size: int, step: int) -> str:
    if grid == 1:
        return (f"Tiling: the network is shift-equivariant (no pooling), so a block of at least "
                f"{min_size} input pixels may start anywhere: tiles placed at any offset by any "
                "tool agree with the whole-image prediction to float rounding, given the halo.")
    return (f"Tiling: the UNet's 2x2 max pooling makes the result depend slightly on where a "
            f"block starts modulo {grid} input pixels. `srunet predict` pads images to that "
            f"grid, and bioimage.io blocking of images whose size lies on the declared size grid "
            f"({min_size} + n x {step}) starts every block on it: both are exact. Tools that "
            "start tiles at other offsets can show faint joins.")


TEMPLATE = Path(__file__).with_name("card_template.md")


def _error_bar_text(bar: dict | None) -> str:
    """The card's error-bar section (empty without a calibration, so such cards are unchanged)."""
    if not bar:
        return ""
    c = Calibration.model_validate(bar)
    rows = "\n".join(f"| {name} | {check.data} | {check.images} | {100 * check.coverage:.1f} % |"
                      for name, check in sorted(c.checks.items()))
    return ERROR_BAR_TEMPLATE.format(
        a=f"{c.spread_factor:.4g}", b=f"{c.floor:.4g}", z=f"{c.z:g}", level=f"{100 * c.level:.0f}",
        data=c.data, images=c.images, fit=f"{100 * c.coverage:.1f}", checks=rows or
        "| (none recorded) | | | |", eps=f"{EPS:g}")


ERROR_BAR_TEMPLATE = """

## Error bar (`srunet predict --uncertainty`)

`srunet predict --uncertainty` writes `NAME_sigma.ome.tif` beside each output: a per-pixel
standard error in the output's camera units, sigma = sqrt(({a} x s)^2 + ({b} x d)^2), where s
is the spread (standard deviation) of the 8 rotated/flipped test-time-augmented predictions and
d the input image's standard deviation (+ {eps}, the normalisation scale), both in camera units.
(On the package's raw, normalised output use s in those units and d = 1.) The output +-{z} sigma
should contain what an **independent ISM acquisition of the same field** records (mapped onto
the output's scale by a least-squares gain and offset) in {level} % of the pixels: sigma was
fitted to the error against noisy ISM targets, so it includes the target's own noise, and it
is an interval for another acquisition, not for the noise-free specimen. It holds on average
over pixels (errors are correlated in space), not for every single pixel, and only at +-{z}
sigma: the errors have heavier tails than a Gaussian, so wider intervals cover less than the
Gaussian share (the coverage plot of `srunet evaluate` shows by how much).

Fitted on {data} ({images} images; {fit} % at +-{z} sigma there). Coverage at +-{z} sigma measured on
pairs it was not fitted on:

| pairs | what | images | coverage |
|---|---|---|---|
{checks}

On structures or instruments unlike the training data the coverage can fall well below {level} %.
Measure it on your own pairs: `srunet evaluate --model rdf.yaml --lr LR --hr HR --out REPORT`
reports the coverage of this error bar and writes `REPORT/calibration.json`, an error bar
fitted on your pairs; `srunet package --checkpoint rdf.yaml --calibration
REPORT/calibration.json --out PKG` ships it (`--calibration-check NAME=OTHER_REPORT` records
its coverage on other pairs, evaluated with `srunet evaluate --calibration`)."""


def _metrics_table(pair: dict) -> str:
    return "| metric | this model | bicubic 2x |\n|---|---|---|\n" + "\n".join(
        f"| {key} | {pair['model'][key]:.4g} | {pair['bicubic'][key]:.4g} |"
        for key in METRIC_KEYS if key in pair["model"])  # JSON keys come back sorted


def _template() -> string.Template:
    text = TEMPLATE.read_text(encoding="utf-8")
    if text.startswith("<!--"):  # the template's own comment is not part of the card
        text = text[text.index("-->") + len("-->"):].lstrip("\n")
    return string.Template(text)


def readme_text(*, name: str, checkpoint: dict, record: dict, publication=None) -> str:
    """The package's README.md (``documentation``): ``card_template.md`` filled in.

    Parameters
    ----------
    name : str
        Model name as in the description.
    checkpoint : dict
        Loaded srunet checkpoint (model kwargs and normalisation).
    record : dict
        The card's numbers (``srunet.model.record.card_record``, the package's ``metrics.json``).
    publication : srunet.model.publication.Publication, optional
        Its ``training_data`` (else the simulator's description) and ``cite`` list.
    """
    tiling = record["tiling"]
    grid, min_size, step = tiling["grid"], tiling["min"], tiling["step"]
    training = (publication.training_data if publication and publication.training_data
                else training_data_text(publication.training_domain if publication
                                        else "contract"))
    cite = "\n".join(
        f"- {c.text} " + (f"https://doi.org/{c.doi}" if c.doi else c.url)
        for c in (publication.cite if publication else []))
    if record["sample_pair"]:
        table = ("Metrics on the packaged simulated sample pair (one image; gain/offset fitted "
                 "to the ISM target first, see `srunet.evaluation.metrics`):\n\n"
                 + _metrics_table(record["sample_pair"]))
    else:
        table = "No sample metrics were computed for this build."
    validation = record["training_validation"]
    if validation:
        at = "?" if validation.get("step") is None else validation["step"]
        train_line = ("Mean over the training run's validation images (simulated, held out by "
                      f"image; checkpoint step {at}):\n\n" + _metrics_table(validation))
    else:
        train_line = "The checkpoint records no training validation metrics."
    return _template().substitute(
        name=name, lr_pixel_nm=f"{contract.LR_PIXEL_NM:g}", hr_pixel_nm=f"{contract.HR_PIXEL_NM:g}",
        ism_limit_nm=f"{contract.ISM_RESOLUTION_LIMIT_NM:g}",
        kwargs=", ".join(f"{k}={v!r}" for k, v in checkpoint["model_kwargs"].items()),
        architecture_note=_architecture_note(grid),
        input_output=_input_output_text(checkpoint["normalization"]),
        size_grid="" if step == 1 else f" (sizes {min_size} + n x {step})", min_size=min_size,
        sizes=_sizes_text(min_size, step, tiling["input_halo"]),
        input_halo=tiling["input_halo"], output_halo=tiling["output_halo"],
        training_data=training, sample_metrics=table, training_metrics=train_line,
        error_bar=_error_bar_text(record.get("error_bar")),
        consumers=CONSUMERS, tiling_note=_tiling_note(grid, min_size, step),
        version_history=VERSION_HISTORY, citations=cite)


def write_cover(path: Path, *, lr: np.ndarray, sr: np.ndarray) -> Path:
    """Write the 2:1 PNG cover (1000 x 500 px): confocal input | srunet 2x, 1 um scale bars.

    Both panels show the same field (centre crop of at most 64 LR px), so the scale bar is as
    long on both; pixel sizes come from ``srunet.physics.contract``. Labels sit inside the panels so
    the image stays exactly 2:1 (the site cuts thumbnails to 2:1).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from mpl_toolkits.axes_grid1.anchored_artists import AnchoredSizeBar

    crop = min(64, *lr.shape)
    y0, x0 = (lr.shape[0] - crop) // 2, (lr.shape[1] - crop) // 2
    panels = (("confocal input", lr[y0:y0 + crop, x0:x0 + crop], contract.LR_PIXEL_NM),
              ("srunet 2x", sr[hr_slices(y0, x0, crop, crop)],
               contract.HR_PIXEL_NM))
    figure = plt.figure(figsize=(8, 4), dpi=125)
    for index, (label, image, pixel_nm) in enumerate(panels):
        axes = figure.add_axes((index / 2, 0, 0.5, 1))
        low, high = np.percentile(image, (0.5, 99.8))
        axes.imshow(image, cmap="magma", vmin=low, vmax=high, interpolation="nearest")
        axes.set_axis_off()
        axes.text(0.03, 0.97, f"{label} ({pixel_nm:g} nm px)", transform=axes.transAxes,
                  color="white", fontsize=13, va="top", ha="left")
        axes.add_artist(AnchoredSizeBar(axes.transData, 1000.0 / pixel_nm, "1 µm",
                                        "lower right", pad=0.6, color="white", frameon=False,
                                        size_vertical=max(1.0, 40.0 / pixel_nm),
                                        fontproperties={"size": 13}))
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp.png")
    figure.savefig(tmp, dpi=125)
    plt.close(figure)
    tmp.replace(path)  # atomic: a cover is never half-written
    return path
