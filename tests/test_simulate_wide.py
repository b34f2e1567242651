"""Tests of the simulator's wide domain (srunet/simulation/wide.py, structures.py; #17) and of
the typed record of a pair's parameters (srunet/simulation/params.py)."""

from __future__ import annotations

import json
import math
import typing

import numpy as np
import pytest
import tifffile

from srunet.physics import contract
from srunet.physics import optics
from srunet.simulation.simulator import sample_params, simulate_dataset, simulate_pair
from test_simulate import SIZE, _fit_shift

# ------------------------------------------------------------------ wide domain (#17, training v3)
def test_bad_domain_is_a_clear_error(tmp_path):
    for call, choices in ((lambda: simulate_pair(1, hr_size=SIZE, domain="wild"), ""),
                          (lambda: sample_params(np.random.default_rng(0), domain="wild"), ""),
                          (lambda: simulate_dataset(tmp_path / "x", pairs=1, seed=0,
                                                    domain="wild"), ", 'mixed'")):
        with pytest.raises(ValueError, match=rf"domain must be one of \['contract', 'wide'"
                                             rf"{choices}\], got 'wild'"):
            call()
    assert not (tmp_path / "x").exists()


def test_wide_domain_is_deterministic_per_seed_and_differs_from_the_contract():
    a, b = (simulate_pair(21, hr_size=SIZE, domain="wide") for _ in range(2))
    for key in ("lr", "hr", "lr_clean", "hr_clean"):
        np.testing.assert_array_equal(a[key], b[key])
    assert a["params"] == b["params"] and a["params"]["domain"] == "wide"
    assert json.loads(json.dumps(a["params"])) == a["params"]  # JSON-safe, round-trips
    contract_pair = simulate_pair(21, hr_size=SIZE)
    assert not np.array_equal(a["hr_clean"], contract_pair["hr_clean"])
    assert "domain" not in contract_pair["params"]  # the contract's params are unchanged


def test_wide_draws_stay_inside_the_documented_ranges():
    from srunet.simulation import structures

    W, rng = contract.WIDE, np.random.default_rng(321)
    draws = [sample_params(rng, domain="wide") for _ in range(50)]
    for p in draws:
        json.dumps(p)
        for key in ("wavelength_scale", "pinhole_au", "ism_detector_au", "reassignment",
                    "rotation_deg", "qe", "read_noise_e", "gain_adu_per_e", "offset_adu",
                    "lr_peak_e", "hr_peak_photons", "haze_fraction", "haze_sigma_um",
                    "autofluorescence", "hr_haze_factor"):
            assert W[key][0] <= p[key] <= W[key][1], key
        assert W["shift_lr_px"][0] <= p["shift_magnitude_lr_px"] <= W["shift_lr_px"][1]
        assert math.hypot(*p["shift_lr_px"]) == pytest.approx(p["shift_magnitude_lr_px"])
        lr, hr = p["lr_psf"], p["hr_psf"]
        assert W["lr_fwhm_nm"][0] <= lr["fwhm_nm"] <= W["lr_fwhm_nm"][1]
        assert W["hr_fwhm_nm"][0] <= hr["fwhm_nm"] <= W["max_hr_over_lr_fwhm"] * lr["fwhm_nm"] + 1e-9
        for spec in (lr, hr):  # the drawn shape really has the drawn FWHM
            assert optics.measured_fwhm_nm(spec) == pytest.approx(spec["fwhm_nm"], rel=1e-3)
        recon = p["ism_reconstruction"]
        if recon == "reassignment":
            assert W["reassignment_tail_weight"][0] <= hr["tail_weight"] <= W["reassignment_tail_weight"][1]
            assert hr["ring_weight"] == 0
        else:
            assert W[f"{recon}_ring_weight"][0] <= hr["ring_weight"] <= W[f"{recon}_ring_weight"][1]
            assert W[f"{recon}_tail_weight"][0] <= hr["tail_weight"] <= W[f"{recon}_tail_weight"][1]
        content = p["content"]
        assert content["family"] in W["families"]
        if content["family"] == "texture" and content["source"] == "image":
            assert content["image"] in structures.TEXTURE_IMAGES
        if "overlay" in content:
            assert W["overlay_weight"][0] <= content["overlay"]["weight"] <= W["overlay_weight"][1]
    # the draw spans its ranges: every reconstruction and family, rotations of both signs,
    # shifts beyond the contract's 0.3 LR px, confocal PSFs beyond the contract's widest
    assert {p["ism_reconstruction"] for p in draws} == set(W["ism_reconstruction"])
    assert {p["content"]["family"] for p in draws} == set(W["families"])
    assert min(p["rotation_deg"] for p in draws) < -0.5 < 0.5 < max(p["rotation_deg"] for p in draws)
    assert max(p["shift_magnitude_lr_px"] for p in draws) > contract.REGISTRATION_SHIFT_LR_PX[1]
    assert min(p["pinhole_au"] for p in draws) < contract.PINHOLE_AU[0]
    assert any(p["hr_psf"]["ring_weight"] < 0 for p in draws)  # deconvolution ringing


def test_every_structure_family_renders_a_non_empty_object():
    from srunet.simulation import structures

    shape = (192, 192)
    contents = [{"family": "kidney", "scene": "tubule", "stains": {"WGA": 1.0}, "generic_weight": 0.0},
                {"family": "cytoskeleton"}, {"family": "vesicles"},
                {"family": "texture", "source": "powerlaw"}, {"family": "texture", "source": "blobs"}]
    contents += [{"family": "texture", "source": "image", "image": name, "mode": mode}
                 for name, mode in zip(structures.TEXTURE_IMAGES, 5 * list(structures.IMAGE_MODES))]
    for k, content in enumerate(contents):
        obj, info = structures.render(np.random.default_rng(k), shape, content)
        json.dumps(info)
        assert obj.shape == shape and obj.min() >= 0 and np.isfinite(obj).all(), content
        assert np.percentile(obj, 99) > 5 * max(np.percentile(obj, 10), 1e-6) or obj.std() > 0.1 * obj.mean(), content
        h = shape[0] // 4 * 4
        bright = np.percentile(obj[:h, :h].reshape(h // 4, 4, h // 4, 4).sum((1, 3)), 99.8)
        assert 0.5 < bright < 2.0, content  # bright end ~1 per LR pixel, as the phantom
    with pytest.raises(ValueError, match="unknown structure family 'nebula'"):
        structures.render(np.random.default_rng(0), shape, {"family": "nebula"})


def test_training_textures_exclude_the_foreign_heldout_images():
    import re
    from pathlib import Path

    from srunet.simulation import structures

    source = (Path(__file__).resolve().parents[1] / "bench" / "foreign_heldout.py").read_text()
    foreign = set(re.findall(r"data\.(\w+)\(", source))
    assert foreign and foreign <= set(structures.HELDOUT_IMAGES)
    assert not set(structures.TEXTURE_IMAGES) & set(structures.HELDOUT_IMAGES)


def test_signed_ring_psf_keeps_its_fwhm_and_unit_mass():
    spec = optics.psf_spec(120.0, tail_weight=0.03, ring_weight=-0.08)
    assert optics.measured_fwhm_nm(spec) == pytest.approx(120.0, rel=1e-3)
    o = optics.otf((128, 128), spec)
    assert o[0, 0] == pytest.approx(1.0)
    r = spec["ring_radius_nm"]
    assert optics.psf_profile(r, spec) < 0  # a dark ring: the ringing of a deconvolution
    with pytest.raises(ValueError, match="invalid PSF"):
        optics.psf_spec(120.0, ring_weight=-0.3)


def test_rotation_moves_lr_content_about_the_field_centre():
    # Point sources away from the centre; equal tiny PSFs. LR content at c + R (p - c) + shift.
    margin, n = 32, 4 * 48 + 64
    obj = np.zeros((n, n))
    points = [(margin + 20, margin + 30), (margin + 150, margin + 170), (margin + 40, margin + 160)]
    for y, x in points:
        obj[y, x] = 1.0
    psf = optics.psf_spec(150.0)
    angle, shift = 1.0, (0.2, -0.1)
    c = optics.blur_and_bin(obj, psf, psf, shift, 2000.0, margin, rotation_deg=angle)
    plain = optics.blur_and_bin(obj, psf, psf, shift, 2000.0, margin)
    np.testing.assert_allclose(plain["hr_focus"], c["hr_focus"])  # HR is untouched
    lr = c["lr_focus"]
    centre_fine = np.array([(n - 2 * margin) / 2.0] * 2)  # field centre, continuous fine coords
    rot = optics.rotation_matrix(angle)
    for y, x in points:
        p = np.array([y - margin + 0.5, x - margin + 0.5])  # the pixel centre in field coords
        expect_fine = centre_fine + rot @ (p - centre_fine) + 4 * np.array(shift)
        expect = expect_fine / 4 - 0.5  # LR index coords
        iy, ix = np.round(expect).astype(int)
        win = lr[iy - 3:iy + 4, ix - 3:ix + 4]
        yy, xx = np.mgrid[iy - 3:iy + 4, ix - 3:ix + 4]
        found = np.array([(win * yy).sum(), (win * xx).sum()]) / win.sum()
        np.testing.assert_allclose(found, expect, atol=0.03)
        assert np.linalg.norm(rot @ (p - centre_fine) - (p - centre_fine)) / 4 > 0.3  # it matters


@pytest.mark.parametrize("seed", [33, 34])
def test_wide_pair_alignment_with_zero_shift_and_rotation(seed):
    # Gaussian PSFs of the drawn widths, so that "binned HR blurred by the PSF difference" is
    # an exact model of the LR; everything else (content, haze, camera) as drawn.
    drawn = sample_params(np.random.default_rng(np.random.SeedSequence(seed).spawn(2)[0]),
                          128, "wide")
    gauss = {k: optics.psf_spec(drawn[k]["fwhm_nm"]) for k in ("lr_psf", "hr_psf")}
    still = {**gauss, "shift_lr_px": [0.0, 0.0], "shift_magnitude_lr_px": 0.0, "rotation_deg": 0.0}
    pair = simulate_pair(seed, hr_size=128, noise=False, domain="wide", overrides=still)
    p = pair["params"]
    lr = pair["lr_clean"] - p["offset_adu"]
    binned = optics.box_sum(pair["hr_clean"].astype(np.float64), 2)
    blur = math.sqrt(p["lr_psf"]["sigma_nm"] ** 2 - p["hr_psf"]["sigma_nm"] ** 2) / contract.LR_PIXEL_NM
    np.testing.assert_allclose(_fit_shift(binned, lr, blur=blur), [0, 0], atol=0.05)
    shift = [0.3, -0.35]  # near the wide domain's 0.5 LR px
    moved = simulate_pair(seed, hr_size=128, noise=False, domain="wide",
                          overrides={**gauss, "rotation_deg": 0.0, "shift_lr_px": shift})
    found = _fit_shift(binned, moved["lr_clean"] - p["offset_adu"], blur=blur)
    np.testing.assert_allclose(found, shift, atol=0.05)


def test_wide_dataset_records_domain_and_parameters(tmp_path):
    manifest = json.loads(simulate_dataset(tmp_path / "w", pairs=2, seed=60, workers=1, hr_size=SIZE,
                                           domain="wide").read_text())
    assert manifest["domain"] == "wide"
    for entry in manifest["pairs"]:
        assert entry["domain"] == "wide" and entry["params"]["domain"] == "wide"
        pair = simulate_pair(entry["seed"], hr_size=SIZE, domain="wide")
        assert entry["params"] == json.loads(json.dumps(pair["params"]))
        np.testing.assert_array_equal(tifffile.imread(tmp_path / "w" / entry["hr"]), pair["hr"])


def test_mixed_dataset_alternates_domains_pair_for_pair(tmp_path):
    manifest = json.loads(simulate_dataset(tmp_path / "m", pairs=2, seed=61, workers=1, hr_size=SIZE,
                                           domain="mixed").read_text())
    assert manifest["domain"] == "mixed"
    assert [e["domain"] for e in manifest["pairs"]] == ["wide", "contract"]  # seeds 61, 62
    for entry in manifest["pairs"]:  # each pair is the single-domain dataset's pair, byte for byte
        pair = simulate_pair(entry["seed"], hr_size=SIZE, domain=entry["domain"])
        np.testing.assert_array_equal(tifffile.imread(tmp_path / "m" / entry["lr"]), pair["lr"])
    with pytest.raises(ValueError, match="'mixed'"):
        simulate_pair(0, hr_size=SIZE, domain="mixed")  # a dataset's choice, not a pair's


def test_emccd_noise_has_the_excess_noise_factor_of_two():
    rng = np.random.default_rng(5)
    photons, qe, em, gain, offset = 20.0, 0.9, 100.0, 0.05, 500.0
    adu = optics.emccd_noise(np.full((256, 256), photons), qe=qe, em_gain=em, read_noise_e=20.0,
                             gain=gain, offset=offset, rng=rng).astype(float)
    mean_e = qe * photons
    assert adu.mean() == pytest.approx(mean_e * em * gain + offset, rel=0.01)
    # Var = F^2 * mean_e * (em gain)^2 with F^2 = 2, plus read noise, all times gain^2
    assert adu.var() == pytest.approx(gain**2 * (2 * mean_e * em**2 + 20.0**2), rel=0.05)


def test_robustness_instruments_lie_outside_the_wide_domain():
    """bench/robustness_heldout.py's default instruments can never be drawn by wide training."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "bench" / "robustness_heldout.py"
    spec = importlib.util.spec_from_file_location("robustness_heldout", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.SEED >= contract.TRAINING_SEED_LIMIT + 24  # after the own held-out set too
    rng = np.random.default_rng(8)
    for name in bench.DEFAULT_INSTRUMENTS:
        overrides = {k: v for k, v in bench.INSTRUMENTS[name].items() if k != "em_gain"}
        for _ in range(5):
            params = {**sample_params(rng, 64, "wide"), **bench.INSTRUMENTS[name]}
            assert bench.outside_wide(params), name
        assert set(overrides) <= set(sample_params(rng, 64, "wide")), name  # all are real keys
    for _ in range(20):  # and wide draws are inside, so the check can tell
        assert bench.outside_wide(sample_params(rng, 64, "wide")) == []


@pytest.mark.parametrize("domain", ["contract", "wide"])
def test_drawn_parameters_are_the_typed_record(domain):
    """Every key the simulator draws is a typed, described field of PairParams, and every
    draw validates against it (so the record and the simulator cannot drift apart)."""
    from srunet.simulation.params import PairParams, PsfSpec, check_params
    from srunet.simulation.simulator import sample_params

    seen = set()
    for seed in range(25):
        params = sample_params(np.random.default_rng(seed), 256, domain)
        assert check_params(params) is params
        seen |= set(params)
    assert seen <= set(PairParams.__annotations__)
    for record in (PairParams, PsfSpec):
        for name, hint in typing.get_type_hints(record, include_extras=True).items():
            about = [m.description for m in getattr(hint, "__metadata__", ()) if
                     getattr(m, "description", None)]
            assert about, f"{record.__name__}.{name} has no description"


def test_overrides_of_the_wrong_type_name_key_and_value():
    with pytest.raises(ValueError, match=r"pinhole_au[\s\S]*given: 'wide open'"):
        simulate_pair(7, hr_size=64, overrides={"pinhole_au": "wide open"})
