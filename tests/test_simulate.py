"""Tests of the paired confocal/ISM simulator (srunet/simulation/simulator.py, optics.py, phantom.py)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import tifffile
import scipy.ndimage
import scipy.optimize

from srunet.physics import contract
from srunet.physics import optics
from srunet.simulation import phantom
from srunet.simulation.simulator import (add_hr_noise, add_lr_noise, sample_params, simulate_dataset,
                                      simulate_pair)

SIZE = 64  # HR px: fast


def _fit_shift(reference: np.ndarray, moving: np.ndarray, blur: float = 0.0) -> np.ndarray:
    """Displacement (dy, dx) of ``moving`` relative to ``reference`` by least squares.

    ``moving ~ a * shift(blur(reference)) + c``; borders are ignored. (skimage's
    phase_cross_correlation is biased towards 0 on small, non-periodic, smooth images.)
    """
    ref = scipy.ndimage.gaussian_filter(reference, blur) if blur else reference
    inner = (slice(4, -4), slice(4, -4))

    def cost(d):
        model = scipy.ndimage.shift(ref, d, order=3, mode="nearest")[inner].ravel()
        design = np.stack([model, np.ones_like(model)], 1)
        target = moving[inner].ravel()
        coef = np.linalg.lstsq(design, target, rcond=None)[0]
        return float(np.sum((design @ coef - target) ** 2))

    return scipy.optimize.minimize(cost, [0.0, 0.0], method="Nelder-Mead",
                                   options={"xatol": 1e-4, "fatol": 1e-12}).x


def _object(seed: int, n_fine: int) -> np.ndarray:
    content = {"scene": "tubule", "stains": {"WGA": 1.0}, "generic_weight": 0.5}
    return phantom.render_object(np.random.default_rng(seed), (n_fine, n_fine), content)[0]


def test_shapes_dtypes_and_params_are_json():
    pair = simulate_pair(1, hr_size=SIZE)
    assert pair["hr"].shape == (SIZE, SIZE) and pair["lr"].shape == (SIZE // 2, SIZE // 2)
    assert pair["hr_clean"].shape == pair["hr"].shape and pair["lr_clean"].shape == pair["lr"].shape
    assert pair["lr"].dtype == np.uint16 and pair["hr"].dtype == np.uint16
    assert pair["lr_clean"].dtype == np.float32 and pair["hr_clean"].dtype == np.float32
    params = json.loads(json.dumps(pair["params"]))
    assert params["hr_size"] == SIZE and "scene" in params["content"]
    with pytest.raises(ValueError, match="even"):
        simulate_pair(1, hr_size=63)
    with pytest.raises(ValueError, match="seed"):
        simulate_pair(-1, hr_size=SIZE)


def test_lr_is_exact_box_sum_of_hr_with_equal_psf_and_no_shift():
    margin, obj = 16, _object(0, 2 * SIZE + 32)
    psf = optics.psf_spec(170.0, tail_weight=0.05, ring_weight=0.02)
    c = optics.blur_and_bin(obj, psf, psf, (0.0, 0.0), 2000.0, margin)
    assert c["hr_focus"].shape == (SIZE, SIZE) and c["lr_focus"].shape == (SIZE // 2, SIZE // 2)
    np.testing.assert_allclose(c["lr_focus"], optics.box_sum(c["hr_focus"], 2), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(c["lr_haze"], optics.box_sum(c["hr_haze"], 2), rtol=1e-10, atol=1e-12)


def test_pixel_convention_point_source():
    # A point in fine pixel (4i+1, 4j+2) must land in HR pixel (2i, 2j+1) and LR pixel (i, j).
    margin, n = 16, 2 * SIZE + 32
    obj = np.zeros((n, n))
    i, j = 5, 9
    obj[margin + 4 * i + 1, margin + 4 * j + 2] = 1.0
    tiny = optics.psf_spec(2.0)  # ~delta PSF
    c = optics.blur_and_bin(obj, tiny, tiny, (0.0, 0.0), 1500.0, margin)
    assert np.unravel_index(np.argmax(c["hr_focus"]), c["hr_focus"].shape) == (2 * i, 2 * j + 1)
    assert np.unravel_index(np.argmax(c["lr_focus"]), c["lr_focus"].shape) == (i, j)
    assert c["lr_focus"].sum() == pytest.approx(1.0, rel=1e-4)
    assert c["hr_focus"].sum() == pytest.approx(1.0, rel=1e-4)


def test_shift_moves_lr_content_by_plus_shift():
    margin, obj = 32, _object(3, 4 * SIZE + 64)
    psf = optics.psf_spec(180.0)
    shift = (0.25, -0.15)
    c = optics.blur_and_bin(obj, psf, psf, shift, 2000.0, margin)
    binned = optics.box_sum(c["hr_focus"], 2)
    np.testing.assert_allclose(_fit_shift(binned, c["lr_focus"]), shift, atol=0.01)


def test_clean_pair_is_consistent_with_the_drawn_registration():
    pair = simulate_pair(5, hr_size=128, noise=False)
    p = pair["params"]
    lr = pair["lr_clean"] - p["offset_adu"]
    binned = optics.box_sum(pair["hr_clean"].astype(np.float64), 2)
    # the LR PSF is wider: blur the binned HR by the (Gaussian) difference, in LR pixels
    extra = math.sqrt(max(p["lr_psf"]["sigma_nm"] ** 2 - p["hr_psf"]["sigma_nm"] ** 2, 0.0))
    found = _fit_shift(binned, lr, blur=extra / contract.LR_PIXEL_NM)
    np.testing.assert_allclose(found, p["shift_lr_px"], atol=0.05)
    assert np.corrcoef(lr.ravel(), binned.ravel())[0, 1] > 0.9


def test_determinism_and_independent_noise_stream():
    a, b = simulate_pair(7, hr_size=SIZE), simulate_pair(7, hr_size=SIZE)
    for key in ("lr", "hr", "lr_clean", "hr_clean"):
        np.testing.assert_array_equal(a[key], b[key])
    assert a["params"] == b["params"]
    c = simulate_pair(8, hr_size=SIZE)
    assert not np.array_equal(a["hr_clean"], c["hr_clean"])
    clean = simulate_pair(7, hr_size=SIZE, noise=False)
    np.testing.assert_array_equal(clean["lr_clean"], a["lr_clean"])
    np.testing.assert_array_equal(clean["lr"], a["lr_clean"])


def test_overrides_replace_drawn_parameters_and_keep_the_content():
    """A microscope outside the contract (bench/finetune.py): its PSFs replace the drawn ones,
    the object and every other parameter stay those of the seed."""
    drawn = simulate_pair(7, hr_size=SIZE, noise=False)
    wide = optics.psf_spec(400.0)
    other = simulate_pair(7, hr_size=SIZE, noise=False, overrides={"lr_psf": wide, "pinhole_au": 0.5})
    assert other["params"]["lr_psf"] == wide and other["params"]["pinhole_au"] == 0.5
    rest = {k: v for k, v in drawn["params"].items() if k not in ("lr_psf", "pinhole_au")}
    assert rest == {k: other["params"][k] for k in rest}
    np.testing.assert_array_equal(drawn["hr_clean"], other["hr_clean"])  # same object, same HR PSF

    def roughness(image):  # neighbour-difference energy per unit variance: lower when blurrier
        return np.mean(np.diff(image, axis=1) ** 2) / np.var(image)

    assert roughness(other["lr_clean"]) < 0.8 * roughness(drawn["lr_clean"])
    with pytest.raises(ValueError, match=r"unknown parameter\(s\) \['pinhole'\]"):
        simulate_pair(7, hr_size=SIZE, overrides={"pinhole": 0.5})


def test_realisations_are_independent_and_reproducible():
    one = simulate_pair(11, hr_size=SIZE)
    two = simulate_pair(11, hr_size=SIZE, realisations=2)
    assert len(two["lr_repeats"]) == 2 and len(two["hr_repeats"]) == 2
    np.testing.assert_array_equal(two["lr_repeats"][0], one["lr"])
    np.testing.assert_array_equal(two["hr"], one["hr"])
    assert not np.array_equal(two["lr_repeats"][0], two["lr_repeats"][1])
    assert not np.array_equal(two["hr_repeats"][0], two["hr_repeats"][1])
    rng = np.random.default_rng(0)
    extra_lr = add_lr_noise(one["lr_clean"], one["params"], rng)
    extra_hr = add_hr_noise(one["hr_clean"], one["params"], rng)
    assert extra_lr.dtype == np.uint16 and extra_hr.shape == one["hr"].shape
    # Noise is unbiased: averaging the residuals of many pixels gives ~0.
    assert abs(float(np.mean(extra_hr - one["hr_clean"]))) < 0.05 * float(one["hr_clean"].mean()) + 1


def test_noise_statistics():
    rng = np.random.default_rng(1)
    dark = optics.scmos_noise(np.zeros((256, 256)), qe=0.8, read_noise_e=1.2, gain=2.0,
                              offset=contract.OFFSET_ADU, rng=rng).astype(float)
    assert dark.mean() == pytest.approx(contract.OFFSET_ADU, abs=0.05)
    assert dark.std() == pytest.approx(1.2 * 2.0, rel=0.05)
    lit = optics.scmos_noise(np.full((256, 256), 250.0), qe=0.8, read_noise_e=1.2, gain=2.0,
                             offset=contract.OFFSET_ADU, rng=rng).astype(float)
    assert lit.mean() == pytest.approx(0.8 * 2.0 * 250 + contract.OFFSET_ADU, rel=0.005)
    assert lit.var() == pytest.approx(2.0**2 * (0.8 * 250 + 1.2**2), rel=0.05)
    counts = optics.photon_counting_noise(np.full((256, 256), 40.0), rng).astype(float)
    assert counts.mean() == pytest.approx(40.0, rel=0.01)
    assert counts.var() == pytest.approx(counts.mean(), rel=0.05)
    # In a whole pair the LR never goes far below the camera offset.
    pair = simulate_pair(2, hr_size=SIZE)
    sigma = pair["params"]["read_noise_e"] * pair["params"]["gain_adu_per_e"]
    assert pair["lr"].min() >= contract.OFFSET_ADU - 6 * sigma - 1


def test_psf_fwhm_defaults_and_otf_consistency():
    assert optics.confocal_fwhm_factor(contract.DEFAULT_PINHOLE_AU) == pytest.approx(1.0)
    assert optics.confocal_fwhm_factor(0.8) < 1.0 < optics.confocal_fwhm_factor(2.0) < 1.15
    assert optics.ism_fwhm_factor(contract.DEFAULT_REASSIGNMENT, 139.0) == pytest.approx(1.0)
    assert 1.0 <= optics.ism_fwhm_factor(0.5, 139.0) < 1.02
    for spec in (optics.psf_spec(192.0), optics.psf_spec(192.0, 0.08, 3.0, 0.04)):
        assert optics.measured_fwhm_nm(spec) == pytest.approx(192.0, rel=1e-3)
        n = 256
        o = optics.otf((n, n), spec)
        assert o[0, 0] == pytest.approx(1.0)
        psf = np.fft.fftshift(np.fft.irfft2(o, s=(n, n)))
        row = psf[n // 2] / psf[n // 2, n // 2]
        x = (np.arange(n) - n // 2) * contract.FINE_PIXEL_NM
        right = np.interp(0.5, row[n // 2:][::-1], x[n // 2:][::-1])  # decreasing side
        assert 2 * right == pytest.approx(192.0, rel=0.02)


def test_sampler_stays_inside_the_contract():
    rng = np.random.default_rng(123)
    draws = [sample_params(rng) for _ in range(50)]
    j = contract.FWHM_JITTER
    for p in draws:
        lo, hi = contract.HR_FIELD_PX
        assert lo <= p["hr_size"] <= hi and p["hr_size"] % 16 == 0 and p["lr_size"] * 2 == p["hr_size"]
        conf0, ism0 = contract.PSF_FWHM_NM[p["setting"]]
        assert contract.PINHOLE_AU[0] <= p["pinhole_au"] <= contract.PINHOLE_AU[1]
        assert contract.REASSIGNMENT[0] <= p["reassignment"] <= contract.REASSIGNMENT[1]
        base_lr = conf0 * optics.confocal_fwhm_factor(p["pinhole_au"])
        base_hr = ism0 * optics.ism_fwhm_factor(p["reassignment"], ism0)
        assert base_lr * (1 - j) <= p["lr_psf"]["fwhm_nm"] <= base_lr * (1 + j)
        assert base_hr * (1 - j) <= p["hr_psf"]["fwhm_nm"] <= base_hr * (1 + j)
        assert p["hr_psf"]["fwhm_nm"] < p["lr_psf"]["fwhm_nm"]
        for key in ("lr_psf", "hr_psf"):
            assert optics.measured_fwhm_nm(p[key]) == pytest.approx(p[key]["fwhm_nm"], rel=1e-3)
        assert math.hypot(*p["shift_lr_px"]) == pytest.approx(p["shift_magnitude_lr_px"])
        for key, bounds in (("shift_magnitude_lr_px", contract.REGISTRATION_SHIFT_LR_PX),
                            ("qe", contract.QE), ("read_noise_e", contract.READ_NOISE_E),
                            ("gain_adu_per_e", contract.LR_GAIN_ADU_PER_E),
                            ("lr_peak_e", contract.LR_PEAK_E), ("hr_peak_photons", contract.HR_PEAK_PHOTONS),
                            ("haze_fraction", contract.HAZE_FRACTION), ("haze_sigma_um", contract.HAZE_SIGMA_UM)):
            assert bounds[0] <= p[key] <= bounds[1], key
        assert p["offset_adu"] == contract.OFFSET_ADU
        assert p["autofluorescence"] == contract.AUTOFLUORESCENCE
        assert p["hr_haze_factor"] == contract.HR_HAZE_FACTOR
        assert p["content"]["scene"] in ("tubule", "glomerulus", "generic")
        json.dumps(p)
    settings = [p["setting"] for p in draws]
    assert settings.count(contract.DEFAULT_SETTING) > len(draws) / 2  # mostly the default
    assert len({p["content"]["scene"] for p in draws}) == 3


def test_dataset_writes_ome_tiff_and_manifest_independent_of_workers(tmp_path):
    one = simulate_dataset(tmp_path / "one", pairs=3, seed=40, workers=1, hr_size=SIZE)
    two = simulate_dataset(tmp_path / "two", pairs=3, seed=40, workers=2, hr_size=SIZE)
    m1, m2 = json.loads(one.read_text()), json.loads(two.read_text())
    assert m1 == m2
    assert m1["master_seed"] == 40 and m1["contract"] == "ACQUISITION.md"
    assert "srunet_simulator_version" in m1
    assert [e["name"] for e in m1["pairs"]] == ["s000040", "s000041", "s000042"]
    for entry in m1["pairs"]:
        assert {"name", "lr", "hr", "seed", "params"} <= set(entry)
        for key, px in (("lr", contract.LR_PIXEL_NM), ("hr", contract.HR_PIXEL_NM)):
            a, b = one.parent / entry[key], two.parent / entry[key]
            np.testing.assert_array_equal(tifffile.imread(a), tifffile.imread(b))
            with tifffile.TiffFile(a) as tif:
                assert f'PhysicalSizeX="{px / 1000}"' in tif.ome_metadata
                assert tif.pages[0].dtype == np.uint16
        assert tifffile.imread(one.parent / entry["hr"]).shape == (SIZE, SIZE)
        assert tifffile.imread(one.parent / entry["lr"]).shape == (SIZE // 2, SIZE // 2)
    pair = simulate_pair(41, hr_size=SIZE)
    np.testing.assert_array_equal(tifffile.imread(one.parent / "lr" / "s000041.tif"), pair["lr"])
    # refuses to overwrite; replaces atomically with the flag; leaves no temp folders behind
    with pytest.raises(FileExistsError, match="overwrite"):
        simulate_dataset(tmp_path / "one", pairs=1, seed=0, workers=1, hr_size=SIZE)
    simulate_dataset(tmp_path / "one", pairs=1, seed=0, workers=1, hr_size=SIZE, overwrite=True)
    assert sorted(p.name for p in (tmp_path / "one" / "hr").iterdir()) == ["s000000.tif"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one", "two"]


@pytest.mark.parametrize("kwargs", [dict(pairs=0, seed=0), dict(pairs=1, seed=-1),
                                    dict(pairs=1, seed=0, workers=0), dict(pairs=1.5, seed=0)])
def test_dataset_argument_validation(tmp_path, kwargs):
    with pytest.raises(ValueError):
        simulate_dataset(tmp_path / "x", **kwargs)
    assert not (tmp_path / "x").exists()


def test_dataset_repeats_are_a_second_noise_realisation(tmp_path):
    plain = simulate_dataset(tmp_path / "plain", pairs=1, seed=11, workers=1, hr_size=64).parent
    twice = simulate_dataset(tmp_path / "twice", pairs=1, seed=11, workers=1, hr_size=64,
                             repeats=True).parent
    name = "s000011.tif"
    pair = simulate_pair(11, hr_size=64, realisations=2)
    for kind in ("lr", "hr"):
        first = tifffile.imread(twice / kind / name)
        assert np.array_equal(first, tifffile.imread(plain / kind / name))  # unchanged
        second = tifffile.imread(twice / f"{kind}_repeat" / name)
        assert np.array_equal(second, pair[f"{kind}_repeats"][1])  # realisation 1 of the field
        assert not np.array_equal(second, first)
    assert not (plain / "lr_repeat").exists()


# Today's output of the contract domain, pinned before the wide domain was added (#17): the
# committed release's sample pair and every benchmark's seeds depend on it staying bit-identical.
PINNED_CONTRACT = {  # seed, hr_size: sha256 of lr, hr, lr_repeat, hr_repeat bytes; lr_clean[5, 7]; hr_clean[10, 13]
    (3, 64): ("a4108289243913203477d0fcb40da0b77a8ecc9eacca5f095ed5ac1958ae094a",
              107.22386932373047, 76.95549774169922),
    (900001, 96): ("1cfa2b927a6e5ae7887ca2638a930a1e296b49e2d8b756fe0a27e99f77a5515b",
                   141.5968017578125, 195.67657470703125),
}


@pytest.mark.parametrize("seed, size", sorted(PINNED_CONTRACT))
def test_contract_domain_output_is_pinned(seed, size):
    import hashlib

    digest, lr_value, hr_value = PINNED_CONTRACT[(seed, size)]
    pair = simulate_pair(seed, hr_size=size, realisations=2)
    h = hashlib.sha256()
    for image in (pair["lr"], pair["hr"], pair["lr_repeats"][1], pair["hr_repeats"][1]):
        h.update(image.tobytes())
    assert h.hexdigest() == digest
    assert float(pair["lr_clean"][5, 7]) == lr_value and float(pair["hr_clean"][10, 13]) == hr_value
