"""The calibrated error bar end to end: evaluate fits one, package ships it, predict writes sigma.

One chain on the tiny random-weights package (its numbers are meaningless, the plumbing is
not): ``srunet evaluate`` writes ``calibration.json``; ``evaluate --calibration`` measures its
coverage on other pairs; ``srunet package --calibration --calibration-check`` stores both in
``metrics.json`` and the card; ``predict --uncertainty`` then writes ``NAME_sigma.ome.tif``
equal to the calibration applied to the TTA spread in camera units; a re-export from the
package's rdf.yaml carries the error bar over.
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import tifffile

from srunet.cli import main
from srunet.evaluation.uncertainty import apply_calibration, load_calibration, tta_std
from srunet.model.from_package import checkpoint_from_package
from srunet.model.predict import predict_files
from srunet.model.predictor import Predictor, load_model
from srunet.model.record import package_error_bar


def _pairs(root, make_pair, seeds):
    (root / "lr").mkdir(parents=True), (root / "hr").mkdir()
    for seed in seeds:
        pair = make_pair(seed, lr_size=48)
        tifffile.imwrite(root / "lr" / f"f{seed}.tif", pair["lr"])
        tifffile.imwrite(root / "hr" / f"f{seed}.tif", pair["hr"])
    return root


def test_evaluate_package_predict_chain(tiny_package, tiny_checkpoint, make_pair, tmp_path,
                                        capsys):
    fit_data = _pairs(tmp_path / "fit", make_pair, (5, 6))
    check_data = _pairs(tmp_path / "check", make_pair, (7,))
    report = tmp_path / "fit_report"
    assert main(["evaluate", "--model", str(tiny_package), "--lr", str(fit_data / "lr"),
                 "--hr", str(fit_data / "hr"), "--out", str(report)]) == 0
    fitted = load_calibration(report / "calibration.json")
    assert fitted.images == 2 and fitted.pixels == 2 * 96 * 96
    assert fitted.coverage == pytest.approx(0.90, abs=2e-3)
    assert json.loads((report / "report.json").read_text())["error_bar"] is None  # none shipped
    assert "ships no calibrated error bar" in (report / "summary.md").read_text()

    checked = tmp_path / "check_report"
    assert main(["evaluate", "--model", str(tiny_package), "--lr", str(check_data / "lr"),
                 "--hr", str(check_data / "hr"), "--out", str(checked),
                 "--calibration", str(report / "calibration.json")]) == 0
    measured = json.loads((checked / "report.json").read_text())
    bar = measured["error_bar"]
    assert bar["calibration"] == fitted.model_dump() and 0 <= bar["coverage"] <= 1
    assert bar["coverage"] == measured["overall"]["error_bar_coverage"]
    assert measured["images"]["f7"]["error_bar"]["coverage"] == pytest.approx(bar["coverage"])
    assert (checked / bar["figure"]).read_bytes()[:4] == b"\x89PNG"
    assert len(bar["bins"]["coverage"]) == 10 and bar["curve"]["z"][0] == 0.5

    package = tmp_path / "calibrated"
    assert main(["package", "--checkpoint", str(tiny_checkpoint), "--out", str(package),
                 "--no-test", "--calibration", str(checked / "calibration.json"),
                 "--calibration-check", f"test={checked}"]) == 2  # a report of another bar
    assert "measured the error bar" in capsys.readouterr().err and not package.exists()
    assert main(["package", "--checkpoint", str(tiny_checkpoint), "--out", str(package),
                 "--no-test", "--calibration", str(report / "calibration.json"),
                 "--calibration-check", f"test={checked}"]) == 0
    shipped = package_error_bar(load_model(package / "rdf.yaml"))
    assert shipped.model_dump(exclude={"checks"}) == fitted.model_dump(exclude={"checks"})
    assert shipped.checks["test"].coverage == bar["coverage"]
    card = (package / "README.md").read_text()
    assert "## Error bar" in card and f"{100 * bar['coverage']:.1f} %" in card

    image = make_pair(8, lr_size=48)["lr"] * 3.0 + 50.0  # another camera scale
    source = tmp_path / "img.tif"
    tifffile.imwrite(source, image)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # no pixel size in the file
        outs = predict_files([source], model=package / "rdf.yaml", out_dir=tmp_path / "out",
                             uncertainty=True)
    assert [p.name for p in outs] == ["img_sr.ome.tif", "img_sigma.ome.tif"]
    with Predictor(package / "rdf.yaml") as predictor:
        expected = apply_calibration(shipped, tta_std(predictor, image)[1],
                                     predictor.output_scale(image))
    np.testing.assert_allclose(tifffile.imread(outs[1]), expected, rtol=1e-5)

    rebuilt = checkpoint_from_package(package / "rdf.yaml")
    assert rebuilt["error_bar"] == shipped.model_dump()


def test_uncalibrated_package_writes_the_spread_and_says_so(tiny_package, make_pair, tmp_path):
    source = tmp_path / "img.tif"
    tifffile.imwrite(source, make_pair(9, lr_size=48)["lr"])
    with pytest.warns(UserWarning, match="ships no calibrated error bar"):
        outs = predict_files([source], model=tiny_package, out_dir=tmp_path / "out",
                             uncertainty=True)
    assert [p.name for p in outs] == ["img_sr.ome.tif", "img_tta_spread.ome.tif"]
    assert package_error_bar(load_model(tiny_package)) is None


def test_package_calibration_errors_name_the_file(tiny_checkpoint, tmp_path, capsys):
    bad = tmp_path / "calibration.json"
    bad.write_text(json.dumps({"form": "floor", "spread_factor": 2.0}))
    base = ["package", "--checkpoint", str(tiny_checkpoint), "--out", str(tmp_path / "p"),
            "--no-test"]
    assert main(base + ["--calibration", str(bad)]) == 2
    err = capsys.readouterr().err
    assert f"{bad} is not an srunet calibration" in err and "floor" in err
    assert main(base + ["--calibration-check", "test=x"]) == 2
    assert "--calibration-check needs --calibration" in capsys.readouterr().err
    assert main(base + ["--calibration", str(bad), "--calibration-check", "x"]) == 2
    assert "expected NAME=REPORT_DIR" in capsys.readouterr().err
