"""The committed release is a generated artifact: one source per fact, rebuilt byte for byte.

- The card (``model/release/README.md``) is ``model/card_template.md`` rendered with the
  numbers in ``model/release/metrics.json``; a re-export reads them back from that file.
- The root ``rdf.yaml`` is ``model/release/rdf.yaml`` with its file references re-rooted
  under ``model/release/`` (``package.root_rdf``), nothing else.
- ``srunet package --release --checkpoint rdf.yaml`` rebuilds every file bit-identically.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from srunet.model import package
from srunet.model.record import (METRICS_FILE, card_record, read_record, training_metrics,
                                 write_record)

REPO_ROOT = Path(__file__).resolve().parent.parent
RELEASE = REPO_ROOT / "model" / "release"
PREFIX = "model/release/"
REGENERATE = ("regenerate the release with `srunet package --release --checkpoint rdf.yaml "
              "--overwrite` and commit it")


def _hashed_files(data) -> list[tuple[str, str]]:
    """Every (source, sha256) pair in a loaded rdf.yaml."""
    found = []
    if isinstance(data, dict):
        if isinstance(data.get("source"), str) and "sha256" in data:
            found.append((data["source"], data["sha256"]))
        for value in data.values():
            found += _hashed_files(value)
    elif isinstance(data, list):
        for item in data:
            found += _hashed_files(item)
    return found


def test_root_rdf_is_the_release_rdf_rerooted(tmp_path):
    """Same content except the file paths, same sha256s (those of the files), and exactly
    the bytes the generator writes from the release's own rdf.yaml."""
    from srunet.files import file_sha256
    from srunet.model.zoo_format import map_file_references, reroot_rdf

    root = yaml.safe_load((REPO_ROOT / "rdf.yaml").read_text(encoding="utf-8"))
    release = yaml.safe_load((RELEASE / "rdf.yaml").read_text(encoding="utf-8"))
    rerooted = []

    def strip(path: str) -> str:
        assert path.startswith(PREFIX), f"root rdf.yaml references {path} outside {PREFIX}"
        rerooted.append(path)
        return path[len(PREFIX):]

    assert map_file_references(root, strip) == release, REGENERATE
    assert len(rerooted) == 11  # docs, cover, metrics, 2 x 2 tensors, 3 weights, architecture
    hashed = _hashed_files(release)
    assert len(hashed) == 9  # every file but the docs and cover (plain strings in 0.5.10)
    for source, sha in hashed:
        assert file_sha256(RELEASE / source) == sha, f"{source}: sha256 is stale; {REGENERATE}"
    written = reroot_rdf(RELEASE / "rdf.yaml", tmp_path / "rdf.yaml", "model/release")
    assert written.read_bytes() == (REPO_ROOT / "rdf.yaml").read_bytes(), REGENERATE


def test_reroot_refuses_a_release_with_paths(tmp_path):
    from srunet.model.zoo_format import reroot_rdf

    rdf = tmp_path / "rdf.yaml"
    rdf.write_text("type: model\ndocumentation: docs/README.md\n", encoding="utf-8")
    with pytest.raises(ValueError, match="docs/README.md"):
        reroot_rdf(rdf, tmp_path / "root.yaml", "model/release")


def test_card_is_the_template_rendered_from_metrics_json():
    """The committed card holds no number that metrics.json (or the rdf) does not."""
    from srunet.model import card
    from srunet.model.from_package import checkpoint_from_package
    from srunet.model.package import project_publication

    record = read_record(RELEASE / METRICS_FILE)
    text = card.readme_text(name=yaml.safe_load((RELEASE / "rdf.yaml").read_text())["name"],
                            checkpoint=checkpoint_from_package(RELEASE / "rdf.yaml"),
                            record=record, publication=project_publication())
    assert text == (RELEASE / "README.md").read_text(encoding="utf-8"), REGENERATE
    step = record["training_validation"]["step"]
    assert f"checkpoint step {step}" in text
    assert f"| psnr | {record['sample_pair']['model']['psnr']:.4g} |" in text


def test_card_record_round_trip(tmp_path):
    """What a re-export reads back from metrics.json is what the checkpoint said; the card
    shows it and leaves no placeholder unfilled."""
    from srunet.model import card

    metrics = {"val_psnr": 30.123456, "val_bicubic_psnr": 27.0, "val_ssim": 0.8,
               "val_bicubic_ssim": 0.7}
    checkpoint = {"model_kwargs": {"depth": 2}, "step": 7, "normalization": {"method": "mean_std"},
                  "metrics": {**metrics, "val_loss": 0.1, "val_nrmse": 0.2}}  # no bicubic nrmse
    record = card_record(checkpoint=checkpoint, input_halo=47, min_size=160, step=32,
                         grid=1, sample_metrics=None)
    path = write_record(tmp_path / METRICS_FILE, record)
    assert training_metrics(read_record(path)) == (metrics, 7)
    text = card.readme_text(name="x", checkpoint=checkpoint, record=record)
    assert "| psnr | 30.12 | 27 |" in text and "| ssim | 0.8 | 0.7 |" in text
    assert "nrmse" not in text.split("checkpoint step 7")[1].split("Checked at build")[0]
    assert "$" not in text and "(sizes 160 + n x 32)" in text
    assert "halo: 47 input pixels (94 output pixels)" in text


def test_bad_metrics_json_names_the_file(tmp_path):
    path = tmp_path / METRICS_FILE
    path.write_text('{"schema": 1, "tiling": {}}', encoding="utf-8")
    with pytest.raises(ValueError, match=r"metrics.json.*missing \['sample_pair'"):
        read_record(path)


@pytest.mark.slow
def test_release_rebuilds_bit_identically_from_its_weights(tmp_path):
    """`srunet package --release --checkpoint rdf.yaml`, without its bioimageio test (the
    release harness runs that), into a scratch root: every file is byte-identical."""
    from srunet.model.from_package import checkpoint_from_package
    from srunet.model.package import export_release

    export_release(checkpoint_from_package(REPO_ROOT / "rdf.yaml"), tmp_path, run_test=False)
    names = sorted(p.name for p in RELEASE.iterdir() if not p.name.startswith((".", "__")))
    assert sorted(p.name for p in (tmp_path / "model" / "release").iterdir()) == names
    differ = [name for name in names
              if (tmp_path / "model" / "release" / name).read_bytes() != (RELEASE / name).read_bytes()]
    if (tmp_path / "rdf.yaml").read_bytes() != (REPO_ROOT / "rdf.yaml").read_bytes():
        differ.append("rdf.yaml (root)")
    assert differ == [], f"rebuilt release differs in {differ}: {REGENERATE}"


@pytest.mark.slow
def test_export_release_layout(tiny_checkpoint, tmp_path, make_pair):
    """export_release writes rdf.yaml at the root pointing into model/release/, and it passes."""
    rdf = package.export_release(tiny_checkpoint, tmp_path, run_test=True, sample=make_pair(2))
    assert rdf == tmp_path / "rdf.yaml"
    # The release's own rdf.yaml (what the wheel ships) is the root one with plain file names.
    inner = tmp_path / "model" / "release" / "rdf.yaml"
    assert inner.read_text() == rdf.read_text().replace("model/release/", "")
    assert "model/release/weights.onnx" in rdf.read_text()
    assert "format_version: 0.5.10" in rdf.read_text()  # the zoo runner's spec reads it
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model", "rdf.yaml"]  # no leftovers
    with pytest.raises(FileExistsError):
        package.export_release(tiny_checkpoint, tmp_path, run_test=False, sample=make_pair(2))


@pytest.mark.slow
def test_reexport_from_package_is_byte_identical(tiny_package, tmp_path, make_pair):
    """`srunet package --checkpoint rdf.yaml` with the same sample: every file of the package
    (weights in three formats, tensors, card, metrics.json, cover, rdf.yaml) comes out the same."""
    from srunet.model.from_package import checkpoint_from_package

    checkpoint = checkpoint_from_package(tiny_package)
    # as after a training run in the same process (the trainer sets it on CPU): the traced
    # code must not depend on it
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        again = package.build_package(checkpoint, tmp_path / "again", run_test=False, sample=make_pair(1))
    finally:
        torch.use_deterministic_algorithms(False)
    names = sorted(p.name for p in tiny_package.parent.iterdir())
    assert sorted(p.name for p in again.parent.iterdir()) == names
    differ = [n for n in names
              if (again.parent / n).read_bytes() != (tiny_package.parent / n).read_bytes()]
    assert differ == []
