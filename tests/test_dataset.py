"""Tile dataset: pixel alignment of LR/HR tiles, determinism, splits, clear errors on bad pairs."""

import numpy as np
import pytest
import tifffile

from srunet.geometry import lr_to_hr
from srunet.tiff import find_pairs
from srunet.training import dataset as ds
from srunet.training.config import DataConfig


def box_sum(hr):
    return hr.reshape(hr.shape[0] // 2, 2, hr.shape[1] // 2, 2).sum(axis=(1, 3))


def write_pairs(root, count=3, lr_shape=(48, 40), seed=0):
    """Pairs whose LR is exactly the 2x2 box-sum of a random HR: alignment is checkable."""
    rng = np.random.default_rng(seed)
    (root / "lr").mkdir(parents=True)
    (root / "hr").mkdir()
    for k in range(count):
        hr = rng.integers(0, 1000, size=(2 * lr_shape[0], 2 * lr_shape[1])).astype(np.float32)
        tifffile.imwrite(root / "hr" / f"img{k}.tif", hr)
        tifffile.imwrite(root / "lr" / f"img{k}.tif", box_sum(hr))
    return root


def percentiles(pair, method="percentiles"):
    """Data config normalising LR and HR by the percentiles ``pair``."""
    return DataConfig(normalization=method, lr_percentiles=pair, hr_percentiles=pair)


@pytest.fixture
def pairs(tmp_path):
    root = write_pairs(tmp_path / "data")
    return find_pairs(root / "lr", root / "hr")


def test_lr_to_hr_is_the_2x_mapping():
    assert lr_to_hr(3, 5, 16, 8) == (6, 10, 32, 16)
    with pytest.raises(ValueError, match="non-negative integer"):
        lr_to_hr(-1, 0, 4, 4)


@pytest.mark.parametrize("transform", range(8))
def test_tiles_are_aligned_to_the_pixel(pairs, transform):
    image = ds.ImagePair.load(pairs[0], percentiles((0, 100)), 16)
    image.lr_range = image.hr_range = (0.0, 1.0)  # identity normalisation: raw values
    for y, x in [(0, 0), (7, 13), (32, 24)]:
        lr, hr = image.tile(y, x, 16, transform)
        assert lr.shape == (16, 16) and hr.shape == (32, 32)
        assert np.array_equal(box_sum(hr), lr), (y, x, transform)
    # a one-pixel HR offset would break the equality: the test can fail
    hr_shifted = image.hr[1:33, 0:32]
    assert not np.array_equal(box_sum(np.asarray(hr_shifted)), np.asarray(image.lr[0:16, 0:16]))


def test_images_are_memory_mapped(pairs):
    image = ds.ImagePair.load(pairs[0], percentiles((1, 99.8)), 16)
    assert isinstance(image.lr, np.memmap) and isinstance(image.hr, np.memmap)


def test_normalisation_uses_the_declared_percentiles(pairs):
    image = ds.ImagePair.load(pairs[0], percentiles((1, 99.8)), 16)
    low, high = np.percentile(np.asarray(image.lr, dtype=np.float32), (1, 99.8))
    assert image.lr_range == pytest.approx((low, high))


def test_dataset_is_deterministic_per_seed(pairs):
    images = ds.load_images(pairs, percentiles((1, 99.8)), 16)
    a = ds.TileDataset(images, 16, seed=3)
    b = ds.TileDataset(images, 16, seed=3)
    c = ds.TileDataset(images, 16, seed=4)
    specs = [a.spec(i) for i in range(32)]
    assert specs == [b.spec(i) for i in range(32)]
    assert specs != [c.spec(i) for i in range(32)]
    assert np.array_equal(a[5][0].numpy(), b[5][0].numpy())
    # tile k depends on (seed, k) only: asked in any order, or far along a run, it is the same
    assert [b.spec(i) for i in reversed(range(32))] == specs[::-1]
    assert a.spec(10**9) == b.spec(10**9) and a.spec(10**9) != a.spec(10**9 + 1)
    assert {a.spec(i)[3] for i in range(200)} == set(range(8))  # all 8 dihedral transforms


def test_step_tiles_split_ranks_and_resume_without_changing_the_sequence():
    """Tile index of step s, rank r, slot j is s*B*world + r*B + j: two ranks of batch B
    together draw exactly one process's batches of 2B, and a sampler started at step s draws
    what one started at 0 draws from step s on."""
    from itertools import islice

    def steps(sampler, count, batch):
        items = list(islice(iter(sampler), count * batch))
        return [items[k * batch:(k + 1) * batch] for k in range(count)]

    single = steps(ds.StepTiles(0, 8), 5, 8)
    rank0 = steps(ds.StepTiles(0, 4, rank=0, world=2), 5, 4)
    rank1 = steps(ds.StepTiles(0, 4, rank=1, world=2), 5, 4)
    assert [r0 + r1 for r0, r1 in zip(rank0, rank1)] == single
    assert steps(ds.StepTiles(3, 8), 2, 8) == single[3:5]
    assert steps(ds.StepTiles(3, 4, rank=1, world=2), 2, 4) == rank1[3:5]


def test_normalization_record_round_trip():
    """The typed normalisation entry writes the dicts every checkpoint holds and reads v1's."""
    from srunet.normalization import EPS, Normalization, input_range, method_of

    assert Normalization().to_dict() == {"method": "mean_std", "eps": EPS}
    v1 = {"lr_percentiles": [1.0, 99.8], "hr_percentiles": [1.0, 99.8]}  # no method: v1
    record = Normalization.from_dict(v1)
    assert record.method == method_of(v1) == "percentiles"
    assert record.to_dict() == {"method": "percentiles", **v1}
    assert Normalization.from_dict(record.to_dict()) == record
    image = np.arange(1000, dtype=np.float32).reshape(25, 40)
    assert input_range(image, v1) == pytest.approx(tuple(np.percentile(image, (1.0, 99.8))))
    mean, high = input_range(image, {"method": "mean_std", "eps": EPS})
    assert mean == pytest.approx(image.mean()) and high - mean == pytest.approx(image.std() + EPS)
    with pytest.raises(ValueError, match="unknown normalization method 'minmax'"):
        Normalization.from_dict({"method": "minmax"})
    with pytest.raises(ValueError, match=r"unknown keys \['low'\]"):
        Normalization.from_dict({"method": "mean_std", "low": 0})
    with pytest.raises(ValueError, match="needs lr_percentiles"):
        Normalization("percentiles")


def test_foreground_sampling_prefers_signal(tmp_path):
    (tmp_path / "lr").mkdir()
    (tmp_path / "hr").mkdir()
    hr = np.zeros((256, 256), np.float32) + 1.0
    hr[:64, :64] = 1000.0  # signal only in one corner
    tifffile.imwrite(tmp_path / "hr" / "a.tif", hr)
    tifffile.imwrite(tmp_path / "lr" / "a.tif", box_sum(hr))
    images = ds.load_images(find_pairs(tmp_path / "lr", tmp_path / "hr"), percentiles((1, 99.8)), 16)
    tiles = ds.TileDataset(images, 16, seed=0, foreground_fraction=0.9)
    corner = np.mean([y < 32 and x < 32 for _, y, x, _ in map(tiles.spec, range(400))])
    assert corner > 0.6  # uniform sampling would give ~(32/113)^2 = 8 %


def test_split_is_by_image_and_seeded(pairs):
    train, val = ds.split_by_image(pairs, 0.34, seed=1)
    assert len(val) == 1 and len(train) == 2
    assert not {p.name for p in train} & {p.name for p in val}
    assert ds.split_by_image(pairs, 0.34, seed=1) == (train, val)


def test_bad_pairs_raise_clear_errors(tmp_path):
    root = write_pairs(tmp_path / "d", count=2)
    tifffile.imwrite(root / "hr" / "img1.tif", np.ones((95, 80), np.float32) * 3)
    pairs = find_pairs(root / "lr", root / "hr")
    with pytest.raises(ValueError, match=r"img1\.tif.*exactly 2x"):
        ds.ImagePair.load(pairs[1], percentiles((1, 99)), 16)

    tifffile.imwrite(root / "hr" / "img1.tif", np.full((96, 80), 7, np.float32))
    with pytest.raises(ValueError, match=r"img1\.tif is constant"):
        ds.ImagePair.load(pairs[1], percentiles((1, 99)), 16)

    bad = np.ones((96, 80), np.float32)
    bad[3, 4] = np.nan
    tifffile.imwrite(root / "hr" / "img1.tif", bad)
    with pytest.raises(ValueError, match=r"img1\.tif contains NaN"):
        ds.ImagePair.load(pairs[1], percentiles((1, 99)), 16)

    (root / "hr" / "img1.tif").unlink()
    with pytest.raises(ValueError, match=r"without HR: \['img1'\]"):
        find_pairs(root / "lr", root / "hr")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        find_pairs(root / "nope", root / "hr")


def test_mean_std_normalisation_puts_the_target_into_the_input_units(tmp_path):
    """mean_std: LR becomes zero mean / unit variance (as zoo consumers compute it), and the HR
    target is mapped so that degrading it to the LR grid gives back the normalised LR."""
    from scipy.ndimage import gaussian_filter

    from srunet.physics.optics import degrade_to_lr

    rng = np.random.default_rng(3)
    hr = (gaussian_filter(rng.random((96, 80)), 3.0) * 400 + 20).astype(np.float32)  # photons
    lr = (degrade_to_lr(hr) * 2.5 + 100.0).astype(np.float32)  # camera ADU: gain and offset
    (tmp_path / "lr").mkdir(), (tmp_path / "hr").mkdir()
    tifffile.imwrite(tmp_path / "lr" / "a.tif", lr)
    tifffile.imwrite(tmp_path / "hr" / "a.tif", hr)
    (files,) = find_pairs(tmp_path / "lr", tmp_path / "hr")
    image = ds.ImagePair.load(files, DataConfig(normalization="mean_std"), 16)
    lr_n = (lr - image.lr_range[0]) / (image.lr_range[1] - image.lr_range[0])
    assert abs(lr_n.mean()) < 1e-5 and abs(lr_n.std() - 1) < 1e-4
    hr_n = (hr - image.hr_range[0]) / (image.hr_range[1] - image.hr_range[0])
    np.testing.assert_allclose(degrade_to_lr(hr_n), lr_n, atol=1e-3)
    with pytest.raises(ValueError, match="same field"):
        ds.target_range(lr, -hr, image.lr_range, tmp_path / "hr" / "a.tif")
