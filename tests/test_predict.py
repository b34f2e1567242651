"""predict_files / load_model: OME-TIFF output with half the pixel size, safe writes, clear errors."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import tifffile

from srunet.model.predict import predict_files
from srunet.model.predictor import load_model
from srunet.tiff import read_image


def _raw(shape=(70, 90), seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.poisson(200, shape) + 100).astype(np.uint16)


def _write_ome(path, image, pixel_um):
    tifffile.imwrite(path, image, ome=True, metadata={
        "axes": "YX", "PhysicalSizeX": pixel_um, "PhysicalSizeXUnit": "µm",
        "PhysicalSizeY": pixel_um, "PhysicalSizeYUnit": "µm"})
    return path


def _pixel_um(path) -> float:
    return read_image(path)[1]


def test_ome_output_has_half_pixel_size(tiny_package, tmp_path):
    source = _write_ome(tmp_path / "cell.ome.tif", _raw(), 0.1)
    [out] = predict_files([source], model=tiny_package, out_dir=tmp_path / "out")
    assert out == tmp_path / "out" / "cell_sr.ome.tif"
    with tifffile.TiffFile(out) as tif:
        assert tif.is_ome
        image = tif.asarray()
    assert image.shape == (140, 180) and image.dtype == np.float32
    assert _pixel_um(out) == pytest.approx(0.05)


def test_tiff_resolution_and_default_pixel_size(tiny_package, tmp_path):
    with_res = tmp_path / "res.tif"
    tifffile.imwrite(with_res, _raw(), resolution=(1e4 / 0.09, 1e4 / 0.09),
                     resolutionunit="CENTIMETER")
    bare = tmp_path / "bare.tif"
    tifffile.imwrite(bare, _raw()[None, :, :, None])  # singleton axes are dropped
    with pytest.warns(UserWarning, match="assuming 85 nm"):
        outs = predict_files([with_res, bare], model=tiny_package, out_dir=tmp_path / "out")
    assert _pixel_um(outs[0]) == pytest.approx(0.045)
    assert _pixel_um(outs[1]) == pytest.approx(0.0425)


def test_refuses_overwrite(tiny_package, tmp_path):
    source = _write_ome(tmp_path / "a.tif", _raw(), 0.085)
    out_dir = tmp_path / "out"
    [out] = predict_files([source], model=tiny_package, out_dir=out_dir)
    before = out.read_bytes()
    with pytest.raises(FileExistsError, match="a_sr.ome.tif"):
        predict_files([source], model=tiny_package, out_dir=out_dir)
    assert out.read_bytes() == before
    predict_files([source], model=tiny_package, out_dir=out_dir, overwrite=True)
    assert [p.name for p in out_dir.iterdir()] == ["a_sr.ome.tif"]  # no temp files left


@pytest.mark.parametrize("case", ["3d", "nan", "unreadable", "missing"])
def test_clear_input_errors(tiny_package, tmp_path, case):
    path = tmp_path / f"{case}.tif"
    if case == "3d":
        tifffile.imwrite(path, _raw((3, 40, 50)))
        error, match = ValueError, r"3d\.tif.*2-D.*\(3, 40, 50\)"
    elif case == "nan":
        image = _raw().astype(np.float32)
        image[5, 7] = np.nan
        tifffile.imwrite(path, image)
        error, match = ValueError, r"nan\.tif.*1 NaN/inf"
    elif case == "unreadable":
        path.write_text("not a tiff")
        error, match = ValueError, r"unreadable\.tif.*cannot read as TIFF"
    else:
        error, match = FileNotFoundError, "missing.tif"
    with pytest.raises(error, match=match):
        predict_files([path], model=tiny_package, out_dir=tmp_path / "out")
    assert not (tmp_path / "out").exists()  # inputs are checked before anything is written


def test_load_model_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_model(tmp_path / "nope.yaml")
    with pytest.raises(FileNotFoundError, match="no rdf.yaml"):
        load_model(tmp_path)
    bad = tmp_path / "rdf.yaml"
    bad.write_text("type: model\nformat_version: 0.5.12\nname: x\n")
    with pytest.raises(ValueError, match="not a valid bioimage.io description"):
        load_model(bad)


def test_load_model_accepts_folder_yaml_and_zip(tiny_package, tiny_zip):
    for source in (tiny_package, tiny_package.parent, tiny_zip):
        assert load_model(source).outputs[0].id == "output"


@pytest.mark.slow
def test_consistency_and_uncertainty_maps(tiny_package, tmp_path):
    source = _write_ome(tmp_path / "c.ome.tif", _raw(), 0.085)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        outs = predict_files([source], model=tiny_package, out_dir=tmp_path / "out",
                             consistency=True, uncertainty=True)
    assert [p.name for p in outs] == ["c_sr.ome.tif", "c_consistency.ome.tif",
                                      "c_tta_spread.ome.tif"]
    assert tifffile.imread(outs[1]).shape == (70, 90)
    assert _pixel_um(outs[1]) == pytest.approx(0.085)
    assert tifffile.imread(outs[2]).shape == (140, 180)
    assert _pixel_um(outs[2]) == pytest.approx(0.0425)


def test_wrong_model_leaves_no_empty_output_folder(tmp_path):
    source = _write_ome(tmp_path / "cell.ome.tif", _raw(), 0.085)
    with pytest.raises(FileNotFoundError, match="missing.yaml does not exist"):
        predict_files([source], model=tmp_path / "missing.yaml", out_dir=tmp_path / "out" / "sr")
    assert not (tmp_path / "out").exists()


def test_failed_prediction_removes_the_folder_it_created(tiny_package, tmp_path, monkeypatch):
    from srunet.model import predict as module

    source = _write_ome(tmp_path / "cell.ome.tif", _raw(), 0.085)

    def crash(self, image):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(module.Predictor, "__call__", crash)
    with pytest.raises(RuntimeError, match="out of memory"):
        predict_files([source], model=tiny_package, out_dir=tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("kind", ["constant", "near-empty"])
def test_flat_image_warns(tiny_package, tmp_path, kind):
    image = np.full((64, 64), 100, np.uint16)
    if kind == "near-empty":
        image[3, 5] = 4000  # one hot pixel in an empty frame
    source = _write_ome(tmp_path / f"{kind}.ome.tif", image, 0.085)
    with pytest.warns(UserWarning, match=rf"{kind}.ome.tif: the image is .*constant.*meaningless"):
        [out] = predict_files([source], model=tiny_package, out_dir=tmp_path / "out")
    assert out.is_file()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a real image raises no such warning
        predict_files([_write_ome(tmp_path / "ok.ome.tif", _raw(), 0.085)], model=tiny_package,
                      out_dir=tmp_path / "out2")


def test_pixel_size_far_from_the_contract_warns(tiny_package, tmp_path):
    from srunet.tiff import write_ome_tiff

    coarse = write_ome_tiff(tmp_path / "coarse.ome.tif", _raw(), 0.5)
    with pytest.warns(UserWarning) as caught:
        predict_files([coarse], model=tiny_package, out_dir=tmp_path / "out")
    [message] = [str(w.message) for w in caught if "pixel size" in str(w.message)]
    assert "coarse.ome.tif" in message and "500 nm" in message and "expects 85 nm" in message
    assert "Resample" in message and "Fine-tuning the release" in message
    assert "\n" not in message
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the contract's pixel size: no warning at all
        predict_files([write_ome_tiff(tmp_path / "fine.ome.tif", _raw(), 0.085)],
                      model=tiny_package, out_dir=tmp_path / "out2")


def test_evaluate_package_reports_uncertainty_and_calibration(tiny_package, make_pair, tmp_path):
    import json

    from srunet.cli import main

    lr_dir, hr_dir = tmp_path / "lr", tmp_path / "hr"
    lr_dir.mkdir(), hr_dir.mkdir()
    for seed in (3, 4):
        pair = make_pair(seed, lr_size=48)
        tifffile.imwrite(lr_dir / f"f{seed}.tif", pair["lr"])
        tifffile.imwrite(hr_dir / f"f{seed}.tif", pair["hr"])
    reports = {}
    for label, flag in (("tta", []), ("plain", ["--no-uncertainty"])):
        out = tmp_path / label
        assert main(["evaluate", "--model", str(tiny_package), "--lr", str(lr_dir),
                     "--hr", str(hr_dir), "--out", str(out), *flag]) == 0
        reports[label] = json.loads((out / "report.json").read_text())
    tta, plain = reports["tta"], reports["plain"]
    assert np.isfinite(tta["overall"]["tta_mean_std"]) and tta["overall"]["tta_mean_std"] > 0
    assert tta["overall"]["tta_calibration_ratio"] > 0
    assert (tmp_path / "tta" / tta["calibration_figure"]).is_file()
    assert sum(tta["calibration"]["counts"]) == 2 * 96 * 96  # every HR pixel of both images
    for record in tta["images"].values():
        assert record["uncertainty"]["calibration_ratio"] > 0
    assert plain["overall"]["tta_mean_std"] is None and "calibration" not in plain
    # the metrics are those of the plain prediction (what predict writes), spread or not
    for name in tta["images"]:
        assert tta["images"][name]["metrics"] == plain["images"][name]["metrics"]
