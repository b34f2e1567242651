"""Pair registration and QC (``srunet pairs``): known transforms are recovered, bad pairs are
rejected with a message naming the file and the measurement, output is all-or-nothing."""

import json

import numpy as np
import pytest
import tifffile
from scipy import ndimage

from srunet.cli import main
from srunet.tiff import read_image, write_ome_tiff
from srunet import registration as P
from srunet.simulation.simulator import simulate_pair

LR_UM, HR_UM = 0.085, 0.0425


@pytest.fixture(scope="module")
def sim():
    return {seed: simulate_pair(seed, hr_size=192) for seed in (1, 2, 3)}


def transform_hr(hr, angle=0.0, scale=1.0, shift_lr=(0.0, 0.0)):
    """Resample ``hr`` so its binned image is bin2(hr) moved by the inverse of
    (angle, scale, shift_lr) in warp()'s model (shift in LR px)."""
    centre = (np.array(hr.shape, float) - 1) / 2
    m = P._matrix(angle, scale)
    offset = centre - m @ centre + 2 * np.asarray(shift_lr)
    return ndimage.affine_transform(hr.astype(float), m, offset, order=3, mode="nearest")


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_simulated_misregistration_is_recovered(sim, seed):
    pair = sim[seed]
    angle, scale, shift, corr = P.estimate(pair["lr"], pair["hr"])
    # The simulator displaces LR content by +shift_lr_px relative to HR: x_b = u - shift.
    np.testing.assert_allclose(shift, -np.array(pair["params"]["shift_lr_px"]), atol=0.1)
    # 96x96 noisy LR px: 0.3 degrees moves the corners by < 0.25 px
    assert abs(angle) < 0.3 and abs(scale - 1) < 0.005 and corr > 0.9


@pytest.mark.parametrize("angle, scale, shift", [
    (0.0, 1.0, (1.3, -2.7)), (3.0, 1.0, (0.0, 0.0)), (0.0, 1.03, (0.0, 0.0)),
    (-2.0, 0.98, (0.4, 0.6))])
def test_known_transforms_are_recovered(sim, angle, scale, shift):
    lr, hr = sim[1]["lr"], sim[1]["hr"]
    _, _, base, _ = P.estimate(lr, hr)
    est_angle, est_scale, est_shift, _ = P.estimate(lr, transform_hr(hr, angle, scale, shift))
    assert est_angle == pytest.approx(-angle, abs=0.05)
    assert est_scale == pytest.approx(1 / scale, abs=0.002)
    # Composition of the applied inverse transform with the pair's own misregistration.
    m_inv = np.linalg.inv(P._matrix(angle, scale))
    np.testing.assert_allclose(est_shift, m_inv @ (base - np.asarray(shift)), atol=0.1)


def test_resampled_hr_lands_on_the_exact_2x_grid(sim, tmp_path):
    """LR = 2x2 binning of a known HR image; the raw HR is shifted and rotated. The registered
    HR must equal the known one under the LR crop (pixel convention of srunet.geometry)."""
    truth = sim[2]["hr_clean"].astype(np.float64)
    lr = P.bin2(truth)
    raw = transform_hr(truth, 1.5, 1.0, (0.37, -1.21))
    write_ome_tiff(tmp_path / "lr.tif", lr.astype(np.float32), LR_UM)
    write_ome_tiff(tmp_path / "hr.tif", raw.astype(np.float32), HR_UM)
    qc, lr_out, hr_out, _ = P.register_pair("x", tmp_path / "lr.tif", tmp_path / "hr.tif")
    assert qc.status == "ok", qc.reason
    y0, y1, x0, x1 = qc.crop_lr
    np.testing.assert_array_equal(lr_out, lr[y0:y1, x0:x1].astype(np.float32))
    assert hr_out.shape == (2 * lr_out.shape[0], 2 * lr_out.shape[1])
    expected = truth[2 * y0:2 * y1, 2 * x0:2 * x1]
    error = np.abs(hr_out - expected).mean() / np.ptp(expected)
    assert error < 0.01, error
    assert qc.correlation_after > 0.999 and qc.overlap > 0.9
    assert qc.gain == pytest.approx(1.0, abs=0.01)


def _write(folder, name, lr, hr, lr_um=LR_UM, hr_um=HR_UM):
    (folder / "lr").mkdir(parents=True, exist_ok=True)
    (folder / "hr").mkdir(parents=True, exist_ok=True)
    for sub, image, um in (("lr", lr, lr_um), ("hr", hr, hr_um)):
        path = folder / sub / f"{name}.tif"
        if um is None:  # no pixel size in the file
            tifffile.imwrite(path, np.asarray(image, np.float32))
        else:
            write_ome_tiff(path, np.asarray(image, np.float32), um)


def test_cli_registers_good_pairs_and_rejects_bad_ones(sim, tmp_path, capsys):
    raw, out = tmp_path / "raw", tmp_path / "registered"
    lr1, hr1 = sim[1]["lr"], sim[1]["hr"]
    _write(raw, "good", lr1, transform_hr(hr1, 1.0, 1.0, (2.0, 1.0)))
    _write(raw, "other_field", lr1, sim[3]["hr"])
    clipped = np.minimum(hr1, np.percentile(hr1, 90))
    _write(raw, "saturated", lr1, clipped)
    nan = hr1.astype(np.float32)
    nan[5, 7] = np.nan
    _write(raw, "has_nan", lr1, nan)
    _write(raw, "same_pixel_size", lr1, hr1, hr_um=LR_UM)
    _write(raw, "scale_off", lr1, transform_hr(hr1, 0.0, 1.1), lr_um=None, hr_um=None)

    assert main(["pairs", str(raw), "--out", str(out)]) == 0
    err = capsys.readouterr().err
    reasons = {line.split("'")[1]: line for line in err.splitlines() if line.startswith("rejected")}
    assert set(reasons) == {"other_field", "saturated", "has_nan", "same_pixel_size", "scale_off"}
    assert "correlation after registration" in reasons["other_field"]
    assert "saturated" in reasons["saturated"] and "re-acquire" in reasons["saturated"]
    assert "NaN" in reasons["has_nan"] and "has_nan.tif" in reasons["has_nan"]
    assert "wrong scale" in reasons["same_pixel_size"] and "ratio 1.000" in reasons["same_pixel_size"]
    assert "wrong scale" in reasons["scale_off"]
    assert sorted(p.name for p in (out / "lr").iterdir()) == ["good.tif"]
    lr, lr_um = read_image(out / "lr" / "good.tif")
    hr, hr_um = read_image(out / "hr" / "good.tif")
    assert hr.shape == (2 * lr.shape[0], 2 * lr.shape[1]) and hr_um == pytest.approx(lr_um / 2)
    marker = json.loads((out / P.MARKER).read_text())
    assert marker["accepted"] == ["good"] and len(marker["rejected"]) == 5
    rows = {r["name"]: r for r in json.loads((out / "qc.json").read_text())}
    assert rows["good"]["rotation_deg"] == pytest.approx(-1.0, abs=0.05)
    assert (out / "qc.csv").read_text().count("\n") == 7
    assert (out / "figures" / "good.png").stat().st_size > 1000
    assert P.unregistered_note(out / "lr") is None
    note = P.unregistered_note(raw / "lr")
    assert "srunet pairs" in note and str(raw) in note and "\n" not in note

    # An existing output is never replaced without --overwrite; nothing half-written is left.
    assert main(["pairs", str(raw), "--out", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    bad = tmp_path / "bad"
    _write(bad, "other_field", lr1, sim[3]["hr"])
    assert main(["pairs", str(bad), "--out", str(tmp_path / "none")]) == 2
    assert "no pair could be registered" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad", "raw", "registered"]
