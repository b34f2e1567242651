"""The wheel carries the default model, and `srunet predict` finds it after a plain install.

The wheel is built from a copy of the source tree (so no build/ folder lands in the checkout),
installed with ``pip install --target`` (a regular, non-editable install; its folder is put
first on PYTHONPATH so it shadows the editable install), and run from an unrelated folder.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
SOURCES = ("pyproject.toml", "README.md", "srunet", "model", "training", "evaluation")
RELEASE = "srunet/model/release/"
REQUIRED = ("rdf.yaml", "weights.pt", "weights_torchscript.pt", "weights.onnx", "unet.py",
            "test_input.npy", "test_output.npy", "README.md", "cover.png", "metrics.json")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    src = tmp_path_factory.mktemp("src")
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".release.build-*", "*.egg-info")
    for name in SOURCES:
        path = REPO_ROOT / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=ignore)
        else:
            shutil.copy2(path, src / name)
    out = tmp_path_factory.mktemp("wheel")
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps",
                             "--no-build-isolation", "-q", str(src), "-w", str(out)],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    (path,) = out.glob("srunet-*.whl")
    return path


@pytest.mark.slow
def test_wheel_holds_the_default_model(wheel):
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        for name in REQUIRED:
            assert RELEASE + name in names, f"{name} missing from {wheel.name}"
        assert "srunet/training/publication.yaml" in names
        assert "srunet/model/card_template.md" in names  # `srunet package` renders the card
        rdf = yaml.safe_load(archive.read(RELEASE + "rdf.yaml"))
        sources = [rdf["weights"][f]["source"] for f in rdf["weights"]]
        sources += [rdf["weights"]["pytorch_state_dict"]["architecture"]["source"]]
        hashes = [rdf["weights"][f]["sha256"] for f in rdf["weights"]]
        hashes += [rdf["weights"]["pytorch_state_dict"]["architecture"]["sha256"]]
        for tensor in rdf["inputs"] + rdf["outputs"]:
            sources.append(tensor["test_tensor"]["source"])
            hashes.append(tensor["test_tensor"]["sha256"])
        for source, sha in zip(sources, hashes):
            assert "/" not in source, f"{source}: the wheel's rdf.yaml must use plain names"
            digest = hashlib.sha256(archive.read(RELEASE + source)).hexdigest()
            assert digest == sha, f"{source}: sha256 in rdf.yaml does not match the wheel's file"


@pytest.mark.slow
def test_predict_after_plain_install_from_any_folder(wheel, tmp_path):
    import tifffile

    target = tmp_path / "site"
    result = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q",
                             "--target", str(target), str(wheel)],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    rng = np.random.default_rng(0)
    tifffile.imwrite(elsewhere / "in.tif", (rng.random((160, 168)) * 1000 + 100).astype(np.uint16))
    env = dict(os.environ, PYTHONPATH=str(target))
    script = ("import sys, srunet, srunet.cli as c, srunet.commands as m; "
              f"assert srunet.__file__.startswith({str(target)!r}), srunet.__file__; "
              "print('MODEL', m.default_model()); "
              # the fine-tuning recipe and its release weights, from the wheel (no checkout)
              "from srunet.training.config import load_config, recipe_path; "
              "w = load_config(recipe_path('finetune')).train.init_from; "
              f"assert str(w).startswith({str(target)!r}) and w.is_file(), w; "
              "sys.exit(c.main(['predict', 'in.tif', '--out', 'out']))")
    run = subprocess.run([sys.executable, "-c", script], cwd=elsewhere, env=env,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    assert str(target) in run.stdout  # the installed copy's model, not the checkout's
    (output,) = (elsewhere / "out").glob("*.tif")
    assert tifffile.imread(output).squeeze().shape == (320, 336)
