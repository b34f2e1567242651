"""BiaPy 3.7.1 on the committed package, as its users run it, against bioimageio.core.

    python bench/biapy_check.py                 # build .venv-biapy if needed, run, compare
    python bench/biapy_check.py --build-only    # only the venv (~4-7 min, ~6.7 GB)

1. ``.venv-biapy/`` (gitignored): torch 2.14.1 + torchvision 0.29.1 from the machine's wheel
   folder (CUDA builds; they run on the CPU), biapy 3.7.1 with its own pins (bioimageio.core
   0.9.6, xarray 2025.1, timm 1.0.14), plus ``pydantic<2.14`` (see :data:`PINS`).
2. A simulated confocal image (the training simulator's LR image, float32) in a folder, and a
   BiaPy configuration as its users write one: super-resolution workflow, upscaling (2, 2),
   ``MODEL.SOURCE: bmz`` with the package, test only, ``DATA.TEST.PADDING`` as large as BiaPy
   allows up to the package's input halo.
3. ``biapy --config`` through bench/biapy_run.py (which serves the catalogue entry BiaPy would
   download; see there). BiaPy 3.7.1 refuses the package: its super-resolution workflow accepts
   only ``div``/``scale_range`` normalisation and the package declares
   ``zero_mean_unit_variance``. The refusal is recorded, then the run is repeated with that one
   check lifted (a diagnostic) to measure what BiaPy's own tiling and normalisation compute.
4. The same image through bioimageio.core (``srunet.model.predictor.predict_image``): max and mean
   |BiaPy - core| on the interior (the input halo cropped from every border, where BiaPy
   reflects and core pads differently), relative to core's output range there.

Prints one JSON summary (also ``bench/biapy_work/summary.json``). The package is the root
rdf.yaml (or ``--rdf``), so this measures whatever the release is.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import tifffile
import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT / "tests"))  # the venv helpers tests/test_core096.py uses too
from consumer_venvs import build_venv, installed_versions  # noqa: E402

VENV = REPO_ROOT / ".venv-biapy"
WHEELS = "/opt/pypi-more/files"  # torch 2.14.1 / torchvision 0.29.1 for Python 3.11 lie here
# torchvision imports here only beside torch 2.14.1 + torchvision 0.29.1 (docs: ZOO-NOTES).
# pydantic<2.14: pip resolves pydantic 2.14.4 for biapy 3.7.1, and with it bioimageio.spec
# 0.5.7.4 fails to load ANY model that has files ("'index_key' is expected to be an integer
# or a string"), so BiaPy's BMZ import fails before it reads the RDF.
PINS = ("torch==2.14.1", "torchvision==0.29.1", "biapy==3.7.1", "pydantic<2.14")
WORK = REPO_ROOT / "bench" / "biapy_work"
REJECTED = "'DATA.NORMALIZATION.TYPE' in SR workflow needs to be in ['div','scale_range']"


def build_biapy_venv() -> Path:
    """Create (or reuse) ``.venv-biapy`` with :data:`PINS`; return its python."""
    return build_venv(VENV, PINS, find_links=WHEELS)


def package_geometry(rdf: Path) -> dict:
    """The package's smallest input block and its input halo, from its rdf.yaml."""
    descr = yaml.safe_load(rdf.read_text())
    y_in = next(a for a in descr["inputs"][0]["axes"] if a.get("id") == "y")
    y_out = next(a for a in descr["outputs"][0]["axes"] if a.get("id") == "y")
    size = y_in["size"]
    minimum = size["min"] if isinstance(size, dict) else int(size)
    halo = int(y_out.get("halo", 0) * y_out["scale"] / y_in["scale"])
    return {"min": minimum, "input_halo": halo}


def biapy_config(rdf: Path, image_dir: Path, padding: int, patch: int) -> dict:
    """A BiaPy test-only super-resolution configuration with the package as BMZ model."""
    return {
        "PROBLEM": {"TYPE": "SUPER_RESOLUTION", "NDIM": "2D",
                    "SUPER_RESOLUTION": {"UPSCALING": "(2,2)"}},
        # BiaPy replaces PATCH_SIZE and the normalisation with the RDF's (smallest input size,
        # its preprocessing); 'div' only passes BiaPy's first configuration check.
        # REFLECT_TO_COMPLETE_SHAPE (default True) makes BiaPy 3.7.1 crop the merged 2x output
        # to the INPUT's shape, keeping its bottom-right quarter (biapy/engine/
        # super_resolution.py lines 466-469: the crop ignores UPSCALING); off, it keeps it all.
        "DATA": {"PATCH_SIZE": f"({patch}, {patch}, 1)", "NORMALIZATION": {"TYPE": "div"},
                 "REFLECT_TO_COMPLETE_SHAPE": False,
                 "TEST": {"PATH": str(image_dir), "IN_MEMORY": True, "LOAD_GT": False,
                          "PADDING": f"({padding},{padding})"}},
        "MODEL": {"SOURCE": "bmz", "BMZ": {"SOURCE_MODEL_ID": str(rdf)}},
        "TRAIN": {"ENABLE": False},
        "TEST": {"ENABLE": True, "VERBOSE": False},
    }


def run_biapy(python: Path, rdf: Path, config: Path, out: Path, lift: bool) -> dict:
    """One ``biapy`` run; its outcome, wall time and the last lines of its log."""
    command = [str(python), str(REPO_ROOT / "bench" / "biapy_run.py"), str(rdf)]
    command += ["--lift-sr-normalization-check"] * lift
    command += ["--", "--config", str(config), "--result_dir", str(out), "--name", "srunet",
                "--run_id", "1"]
    start = time.monotonic()
    done = subprocess.run(command, capture_output=True, text=True)
    seconds = time.monotonic() - start
    log = (done.stdout + done.stderr).replace("\r", "\n").splitlines()
    (out / "biapy.log").parent.mkdir(parents=True, exist_ok=True)
    (out / "biapy.log").write_text("\n".join(log))
    errors = [line for line in log if "Error" in line]
    return {"returncode": done.returncode, "seconds": round(seconds, 1),
            "error": errors[-1] if errors else None, "log": str(out / "biapy.log")}


def compare(biapy_out: np.ndarray, core_out: np.ndarray, halo: int) -> dict:
    """|BiaPy - core| on the interior, ``2 * halo`` output px in from every border."""
    crop = (slice(2 * halo, -2 * halo),) * 2
    a, b = np.asarray(biapy_out, np.float64)[crop], np.asarray(core_out, np.float64)[crop]
    span = float(b.max() - b.min())
    diff = np.abs(a - b)
    return {"interior_output_px": list(a.shape), "core_output_range": span,
            "max_abs_diff": float(diff.max()), "mean_abs_diff": float(diff.mean()),
            "max_abs_diff_relative": float(diff.max() / span),
            "mean_abs_diff_relative": float(diff.mean() / span)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--build-only", action="store_true", help="build .venv-biapy and stop")
    parser.add_argument("--rdf", type=Path, default=REPO_ROOT / "rdf.yaml",
                        help="package to run (default: the repository's rdf.yaml)")
    parser.add_argument("--size", type=int, default=256, help="test image side, input px")
    parser.add_argument("--padding", type=int, default=None,
                        help="DATA.TEST.PADDING (default: the input halo, or BiaPy's maximum "
                             "for the package's smallest block if that is smaller)")
    args = parser.parse_args()

    start = time.monotonic()
    python = build_biapy_venv()
    summary = {"venv_ready_seconds": round(time.monotonic() - start, 1),
               "versions": installed_versions(python, ("biapy", "bioimageio.core",
                                                       "bioimageio.spec", "torch", "torchvision",
                                                       "pydantic", "xarray"))}
    if args.build_only:
        print(json.dumps(summary, indent=1))
        return

    from srunet.model.predictor import load_model, predict_image
    from srunet.simulation.simulator import simulate_pair

    rdf = args.rdf.resolve()
    geometry = package_geometry(rdf)
    # BiaPy's patch is the RDF's smallest input size, and its padding must stay below half a
    # patch (biapy/data/data_2D_manipulation.py, crop_data_with_overlap, lines 183-189).
    if args.size < geometry["min"]:  # BiaPy's patch is the RDF's min (see biapy_config)
        parser.error(f"--size {args.size} is below the package's smallest input "
                     f"({geometry['min']} px), which BiaPy uses as its patch; BiaPy 3.7.1 "
                     "then needs REFLECT_TO_COMPLETE_SHAPE, whose crop loses 3/4 of a 2x output")
    padding = args.padding if args.padding is not None else \
        min(geometry["input_halo"], geometry["min"] // 2 - 1)
    image = simulate_pair(0, hr_size=2 * max(args.size, 256))["lr"][: args.size, : args.size]
    image = image.astype(np.float32)  # float input: BiaPy would round its output to the dtype
    image_dir = WORK / "lr"
    image_dir.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(image_dir / "confocal.tif", image)
    config = WORK / "config.yaml"
    config.write_text(yaml.safe_dump(biapy_config(rdf, image_dir, padding, geometry["min"]),
                                     sort_keys=False))
    kept = geometry["min"] - 2 * padding  # input px each patch contributes, per axis
    summary.update({"rdf": str(rdf), "image_px": list(image.shape), "padding": padding,
                    "biapy_patches": math.ceil(args.size / kept) ** 2,
                    **geometry, "config": str(config)})

    runs = {}
    for lift in (False, True):
        out = WORK / ("lifted" if lift else "as_is")
        shutil.rmtree(out, ignore_errors=True)
        runs["lifted" if lift else "as_is"] = run_biapy(python, rdf, config, out, lift)
        if runs["as_is"]["returncode"] == 0:
            break  # BiaPy accepted the package: no diagnostic needed
    summary["runs"] = runs
    summary["refused_by_sr_normalization_check"] = REJECTED in (runs["as_is"]["error"] or "")
    accepted = "lifted" if "lifted" in runs else "as_is"
    outputs = sorted((WORK / accepted).rglob("per_image/confocal.tif"))
    if runs[accepted]["returncode"] == 0 and outputs:
        biapy_out = np.squeeze(tifffile.imread(outputs[0]))
        start = time.monotonic()
        core_out = predict_image(load_model(rdf), image)
        summary["core_seconds"] = round(time.monotonic() - start, 1)
        assert biapy_out.shape == core_out.shape, (biapy_out.shape, core_out.shape)
        summary["comparison"] = compare(biapy_out, core_out, geometry["input_halo"])
    (WORK / "summary.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
