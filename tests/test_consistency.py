"""Physics consistency: the HR that produced an LR is consistent with it; wrong predictions are not."""

import math

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter
from scipy.ndimage import shift as nd_shift
from skimage.draw import line_aa

from srunet.evaluation.consistency import consistency_map
from srunet.physics.optics import bin_to_lr, degrade_to_lr
from srunet.physics import contract

FINE = 256  # fine-grid pixels per axis -> HR 128, LR 64
MARGIN = 24  # keep the object off the border, so every blur sees the same (zero) surroundings


def render_pair(seed: int = 0):
    """Noise-free LR/HR pair following ACQUISITION.md: object on the 21.25 nm grid, each PSF
    applied there, then box-summed to 42.5 nm (HR) and 85 nm (LR)."""
    rng = np.random.default_rng(seed)
    obj = np.zeros((FINE, FINE))
    for _ in range(60):  # puncta
        y, x = rng.integers(MARGIN, FINE - MARGIN, 2)
        obj[y, x] += 20 * rng.uniform(0.5, 1.5)
    for _ in range(8):  # filaments
        y0, x0, y1, x1 = rng.integers(MARGIN, FINE - MARGIN, 4)
        rows, cols, value = line_aa(y0, x0, y1, x1)
        obj[rows, cols] += 3 * value * rng.uniform(0.5, 1.5)
    confocal_fwhm, ism_fwhm = contract.PSF_FWHM_NM[contract.DEFAULT_SETTING]

    def acquire(fwhm_nm: float, pixel_nm: float) -> np.ndarray:
        blurred = gaussian_filter(obj, contract.fwhm_to_sigma(fwhm_nm) / contract.FINE_PIXEL_NM)
        factor = round(pixel_nm / contract.FINE_PIXEL_NM)
        size = FINE // factor
        return blurred.reshape(size, factor, size, factor).sum(axis=(1, 3))

    return acquire(confocal_fwhm, contract.LR_PIXEL_NM), acquire(ism_fwhm, contract.HR_PIXEL_NM)


@pytest.fixture(scope="module")
def pair():
    return render_pair()


def test_true_hr_is_consistent(pair):
    lr, hr = pair
    result = consistency_map(lr, hr)
    assert result["rsp"] > 0.99
    assert result["map"].shape == lr.shape and result["map"].dtype == np.float32
    assert result["rse"] < 1e-3 * np.ptp(lr)
    # intensity units differ by the 2x2 box-sum: the fitted gain finds the factor 4
    assert result["gain"] == pytest.approx(4.0, rel=0.01)


def test_shifted_prediction_scores_worse(pair):
    lr, hr = pair
    good = consistency_map(lr, hr)
    shifted = consistency_map(lr, np.roll(hr, 2, axis=1))  # 2 HR px = 85 nm
    assert shifted["rsp"] < good["rsp"] - 0.05
    assert shifted["rse"] > 100 * good["rse"]


def test_fake_structure_lights_up_where_it_is(pair):
    lr, hr = pair
    fake = hr.copy()
    fake[40:60, 70:72] += 0.5 * hr.max()  # a bright bar the object does not have
    result = consistency_map(lr, fake)
    assert result["rsp"] < consistency_map(lr, hr)["rsp"]
    region = np.zeros(lr.shape, dtype=bool)
    region[20:30, 35:36] = True  # the bar's LR pixels (HR rows 40-59, cols 70-71)
    assert result["map"][region].mean() > 20 * result["map"][~region].mean()


def test_binning_follows_pixel_convention():
    hr = np.zeros((4, 6))
    hr[2:4, 2:4] = 1.0  # exactly the HR block of LR pixel (1, 1)
    lr = bin_to_lr(hr, binning="sum")
    assert lr.shape == (2, 3) and lr[1, 1] == 4.0 and lr.sum() == 4.0
    assert bin_to_lr(hr)[1, 1] == 1.0
    assert degrade_to_lr(hr, sigma_nm=0.0)[1, 1] == 1.0


def test_default_sigma_is_the_contract_psf_difference(pair):
    lr, hr = pair
    default = consistency_map(lr, hr)
    explicit = consistency_map(lr, hr, sigma_nm=contract.psf_difference_sigma_nm())
    assert default["rse"] == explicit["rse"]
    assert consistency_map(lr, hr, sigma_nm=0.0)["rse"] > 10 * default["rse"]


@pytest.mark.parametrize("lr_shape, sr_shape, kwargs, match", [
    ((8, 8), (16, 18), {}, r"\(16, 18\)"),
    ((8,), (16,), {}, "2-D"),
    ((8, 8), (16, 16), {"sigma_nm": -1.0}, "-1.0"),
    ((8, 8), (16, 16), {"binning": "max"}, "max"),
])
def test_bad_input_is_echoed(lr_shape, sr_shape, kwargs, match):
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match=match):
        consistency_map(rng.random(lr_shape), rng.random(sr_shape), **kwargs)


@pytest.mark.parametrize("seed", [0, 3])
def test_simulator_pair_is_consistent(seed):
    from srunet.simulation import simulator as simulate

    sample = simulate.simulate_pair(seed, hr_size=128, noise=False)
    params = sample["params"]
    lr, hr = sample["lr_clean"], sample["hr_clean"]
    # Per-image PSFs are jittered (+-15 %) and the HR is misregistered by the drawn sub-pixel
    # shift (LR content sits at +shift LR px): undo both, as a perfect prediction would have them.
    sigma_nm = math.sqrt(params["lr_psf"]["sigma_nm"] ** 2 - params["hr_psf"]["sigma_nm"] ** 2)
    aligned = nd_shift(hr, [2 * s for s in params["shift_lr_px"]], mode="nearest")
    good = consistency_map(lr, aligned, sigma_nm=sigma_nm)
    assert good["rsp"] > 0.99
    # without either correction it is still consistent, only less exactly
    assert consistency_map(lr, hr)["rsp"] > 0.99
    shifted = consistency_map(lr, np.roll(aligned, 2, axis=1), sigma_nm=sigma_nm)
    assert shifted["rsp"] < good["rsp"] - 0.01 and shifted["rse"] > 5 * good["rse"]
    fake = aligned.copy()
    fake[40:60, 70:72] += 0.5 * aligned.max()
    result = consistency_map(lr, fake, sigma_nm=sigma_nm)
    region = np.zeros(lr.shape, dtype=bool)
    region[20:30, 35:36] = True
    assert result["map"][region].mean() > 10 * result["map"][~region].mean()
