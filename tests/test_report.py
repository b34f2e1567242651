"""Evaluation report: atomic, its JSON matches recomputation from the saved arrays, sane mask."""

import json

import numpy as np
import pytest
import tifffile
from scipy.ndimage import gaussian_filter

from srunet.evaluation import analysis, frc, report
from srunet.evaluation.consistency import consistency_map
from srunet.physics.optics import bin_to_lr
from srunet.evaluation.metrics import all_metrics, upsample_bicubic

LR_SIZE = 48


def make_pair(seed: int, size: int = LR_SIZE, repeat: bool = False):
    """Small noisy LR/HR pair: blobs on the HR grid (ISM blur), LR = extra blur + 2x2 bin;
    with ``repeat`` also second noise draws of both (independent Poisson noise)."""
    rng = np.random.default_rng(seed)
    obj = np.zeros((2 * size, 2 * size))
    y, x = rng.integers(8, 2 * size - 8, (2, 25))
    obj[y, x] = rng.uniform(50, 150, 25)
    hr_clean = gaussian_filter(obj, 1.4) * 10 + 2.0
    lr_clean = bin_to_lr(gaussian_filter(hr_clean, 1.3), binning="sum")
    draws = 2 if repeat else 1
    lrs, hrs = ([rng.poisson(clean).astype(np.float32) for _ in range(draws)]
                for clean in (lr_clean, hr_clean))
    return (f"field{seed}", lrs[0], hrs[0], *lrs[1:], *hrs[1:])


def predict(lr):
    """A stand-in model: bicubic upsampling of a lightly smoothed input."""
    return upsample_bicubic(gaussian_filter(lr, 0.7)).astype(np.float32)


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    out = tmp_path_factory.mktemp("eval") / "report"
    pairs = [make_pair(1), make_pair(2)]
    summary = report.evaluate_arrays(pairs, predict, out, model_name="test model")
    return out, summary, pairs


def test_report_layout_and_no_temp_leftovers(written):
    out, summary, pairs = written
    assert summary == out / "summary.md" and summary.is_file()
    data = json.loads((out / "report.json").read_text())
    assert set(data["images"]) == {p[0] for p in pairs}
    for name, record in data["images"].items():
        assert (out / record["figure"]).read_bytes()[:4] == b"\x89PNG"
        assert f"]({record['figure']})" in summary.read_text()
    assert [p.name for p in out.parent.iterdir()] == ["report"]  # temp folder renamed away


def test_json_numbers_match_recomputation(written):
    out, _, pairs = written
    data = json.loads((out / "report.json").read_text())
    for name, lr, hr in pairs:
        record = data["images"][name]
        saved = np.load(out / record["arrays"])
        np.testing.assert_array_equal(saved["lr"], lr)
        np.testing.assert_array_equal(saved["sr"], predict(lr))
        mask = saved["mask"]
        np.testing.assert_array_equal(mask, analysis.foreground_mask(hr))
        for label, image in (("model", saved["sr"]), ("bicubic", upsample_bicubic(lr))):
            for region, region_mask in (("whole", None), ("foreground", mask)):
                expected = all_metrics(hr, image, mask=region_mask)
                for key, value in expected.items():
                    assert record["metrics"][label][region][key] == pytest.approx(value, rel=1e-6)
        for key in ("lr", "sr", "hr", "sr_vs_hr"):
            resolution, crossed = frc.resolution_from_curve(
                saved[f"frc_{key}_freq_per_nm"], saved[f"frc_{key}_correlation"])
            assert record["frc"][key]["resolution_nm"] == pytest.approx(resolution)
            assert record["frc"][key]["sampling_limited"] == (not crossed)
        invented = frc.invented_detail(saved["sr"], hr)  # one draw: no repeats in these pairs
        for key in ("invented", "reproducible", "confirmed"):
            assert record["invented_detail"][key] == pytest.approx(invented[key], rel=1e-6, abs=1e-12)
        assert record["invented_detail"]["flagged"] == invented["flagged"]
        recomputed = consistency_map(lr, saved["sr"])
        assert record["consistency"]["sr"]["rsp"] == pytest.approx(recomputed["rsp"])
        np.testing.assert_allclose(saved["consistency"], recomputed["map"])
        np.testing.assert_allclose(saved["error"], saved["sr_fitted"] - hr, atol=1e-4)
    overall = data["overall"]
    psnrs = [data["images"][p[0]]["metrics"]["model"]["whole"]["psnr"] for p in pairs]
    assert overall["model"]["whole"]["psnr"] == pytest.approx(np.mean(psnrs))


def test_foreground_mask_is_sane(written):
    out, _, pairs = written
    data = json.loads((out / "report.json").read_text())
    for name, _, hr in pairs:
        fraction = data["images"][name]["foreground_fraction"]
        assert 0.02 < fraction < 0.6
        mask = analysis.foreground_mask(hr)
        assert hr[mask].mean() > 3 * hr[~mask].mean()  # bright structure in, background out
    # a bright disk on a noisy dark background is recovered
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:64, :64]
    disk = (yy - 32) ** 2 + (xx - 30) ** 2 < 15**2
    image = rng.poisson(np.where(disk, 60.0, 5.0)).astype(float)
    mask = analysis.foreground_mask(image)
    assert (mask & disk).sum() / (mask | disk).sum() > 0.9


def test_refuses_to_overwrite_then_replaces(tmp_path):
    out = tmp_path / "report"
    pairs = [make_pair(3)]
    report.evaluate_arrays(pairs, predict, out)
    (out / "marker.txt").write_text("old report")
    with pytest.raises(FileExistsError, match="--overwrite"):
        report.evaluate_arrays(pairs, predict, out)
    assert (out / "marker.txt").exists()
    report.evaluate_arrays(pairs, predict, out, overwrite=True)
    assert not (out / "marker.txt").exists() and (out / "report.json").is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["report"]


def test_failed_run_leaves_nothing(tmp_path):
    def broken(lr):
        raise RuntimeError("model crashed")

    with pytest.raises(RuntimeError, match="crashed"):
        report.evaluate_arrays([make_pair(4)], broken, tmp_path / "report")
    with pytest.raises(ValueError, match=r"expected \(96, 96\)"):
        report.evaluate_arrays([make_pair(4)], lambda lr: lr, tmp_path / "report")
    assert list(tmp_path.iterdir()) == []


def test_bad_pairs_are_rejected(tmp_path):
    name, lr, hr = make_pair(5)
    with pytest.raises(ValueError, match=r"\(48, 48\) and HR \(90, 96\)"):
        report.evaluate_arrays([(name, lr, hr[:90])], predict, tmp_path / "r")
    with pytest.raises(ValueError, match="unique"):
        report.evaluate_arrays([(name, lr, hr), (name, lr, hr)], predict, tmp_path / "r")
    with pytest.raises(ValueError, match="identical"):
        report.evaluate_arrays([(name, lr, hr, lr.copy())], predict, tmp_path / "r")
    with pytest.raises(ValueError, match="'../x'"):
        report.evaluate_arrays([("../x", lr, hr)], predict, tmp_path / "r")


def test_two_realisations_and_tta(tmp_path):
    rng = np.random.default_rng(6)
    name, lr, hr = make_pair(6)
    lr2 = rng.poisson(np.clip(lr, 0, None)).astype(np.float32)  # stand-in second realisation
    summary = report.evaluate_arrays([(name, lr, hr, lr2)], predict, tmp_path / "val", tta=True)
    data = json.loads((summary.parent / "report.json").read_text())
    record = data["images"][name]
    assert record["frc"]["lr"]["method"] == record["frc"]["sr"]["method"] == "two-image"
    assert record["frc"]["hr"]["method"] == "single-image"
    assert record["uncertainty"]["mean_std"] >= 0
    assert (summary.parent / "figures" / "calibration.png").is_file()


def test_evaluate_pairs_tiffs_by_name(tmp_path):
    lr_dir, hr_dir = tmp_path / "lr", tmp_path / "hr"
    lr_dir.mkdir(), hr_dir.mkdir()
    for seed in (7, 8):
        name, lr, hr = make_pair(seed)
        tifffile.imwrite(lr_dir / f"{name}.tif", lr[None])  # singleton axis is dropped
        tifffile.imwrite(hr_dir / f"{name}.tiff", hr)
    # a plain predict callable stands in for the package, so this test checks report logic only
    summary = report.evaluate_folders(predict, lr_dir=lr_dir, hr_dir=hr_dir,
                                      out_dir=tmp_path / "out", model_name="fake.zip")
    data = json.loads(summary.with_name("report.json").read_text())
    assert sorted(data["images"]) == ["field7", "field8"] and data["model"] == "fake.zip"
    tifffile.imwrite(lr_dir / "orphan.tif", np.zeros((4, 4), np.float32))
    with pytest.raises(ValueError, match="orphan"):
        report.evaluate_folders(predict, lr_dir=lr_dir, hr_dir=hr_dir, out_dir=tmp_path / "out2")
    with pytest.raises(FileNotFoundError, match="nowhere"):
        report.evaluate_folders(predict, lr_dir=tmp_path / "nowhere", hr_dir=hr_dir,
                                out_dir=tmp_path / "out3")


def test_mlflow_logging(tmp_path):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    report.evaluate_arrays([make_pair(9)], predict, tmp_path / "report", tracking_uri=uri)
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name(report.EXPERIMENT)
    (run,) = client.search_runs([experiment.experiment_id])
    assert "model_psnr" in run.data.metrics and "bicubic_psnr_fg" in run.data.metrics
    assert {a.path for a in client.list_artifacts(run.info.run_id, "report")} >= {
        "report/report.json", "report/summary.md"}


@pytest.mark.slow
def test_end_to_end_through_a_real_package(tmp_path):
    import torch

    from srunet.model.package import build_package
    from srunet.model.predict import evaluate_package
    from srunet.model.unet import SRUNet
    from srunet.model.checkpoint import save_checkpoint

    torch.manual_seed(0)
    checkpoint = save_checkpoint(tmp_path / "model.pt", {
        "model_kwargs": {"depth": 2, "base_channels": 8},
        "model_state": SRUNet(depth=2, base_channels=8).state_dict(),
        "normalization": {"method": "mean_std", "eps": 1e-6},
        "config": {}})
    package = build_package(checkpoint, tmp_path / "package", run_test=False,
                            sample=dict(zip(("lr", "hr"), make_pair(11, size=128)[1:])))
    lr_dir, hr_dir = tmp_path / "lr", tmp_path / "hr"
    lr_dir.mkdir(), hr_dir.mkdir()
    name, lr, hr = make_pair(10, size=80)  # odd size on purpose
    tifffile.imwrite(lr_dir / f"{name}.tif", lr)
    tifffile.imwrite(hr_dir / f"{name}.tif", hr)
    summary = evaluate_package(package, lr_dir=lr_dir, hr_dir=hr_dir, out_dir=tmp_path / "out")
    data = json.loads(summary.with_name("report.json").read_text())
    record = data["images"][name]
    assert record["hr_shape"] == [160, 160]
    assert np.isfinite(record["metrics"]["model"]["whole"]["psnr"])


def test_evaluate_uses_second_realisations_for_two_image_frc(tmp_path):
    from srunet.simulation.simulator import simulate_dataset

    data = tmp_path / "sim"
    simulate_dataset(data, pairs=2, seed=5, workers=1, hr_size=96, repeats=True)
    summary = report.evaluate_folders(predict, lr_dir=data / "lr", hr_dir=data / "hr",
                              out_dir=tmp_path / "out", lr_repeat_dir=data / "lr_repeat",
                              hr_repeat_dir=data / "hr_repeat")
    written = json.loads(summary.with_name("report.json").read_text())
    assert written["overall"]["frc_method"] == "two-image"
    assert {r["invented_detail"]["method"] for r in written["images"].values()} == {"two draws"}
    with pytest.raises(ValueError, match="both"):
        report.evaluate_folders(predict, lr_dir=data / "lr", hr_dir=data / "hr", out_dir=tmp_path / "o2",
                        lr_repeat_dir=data / "lr_repeat")


def _rotation_biased(lr):
    """A non-equivariant stand-in model: its output depends on the input's orientation."""
    out = predict(lr)
    return out + 0.05 * np.ptp(out) * np.linspace(0, 1, out.shape[1])[None, :]


def test_summary_explains_flags_and_uncertainty_is_relative(tmp_path):
    from srunet.physics import contract

    summary = report.evaluate_arrays([make_pair(7)], _rotation_biased, tmp_path / "r", tta=True)
    text = summary.read_text()
    data = json.loads((summary.parent / "report.json").read_text())
    ratio = data["overall"]["tta_calibration_ratio"]
    assert "### What the flags mean and what to do" in text
    assert f"finer than the {contract.ISM_RESOLUTION_LIMIT_NM:.0f} nm" in text
    assert "do not interpret structures smaller" in text  # the action, not only the finding
    assert "**relative** map" in text and f"about {ratio:.0f}-fold" in text
    assert "ships no calibrated error bar" in text  # raw spread only: no interval claimed
    assert (summary.parent / "calibration.json").is_file() and "`calibration.json`" in text


def test_figure_has_scale_bars_unit_colour_bars_and_no_empty_cells(tmp_path):
    from matplotlib.figure import Figure
    from mpl_toolkits.axes_grid1.anchored_artists import AnchoredSizeBar

    from srunet.evaluation import figures

    captured = {}
    original = Figure.savefig

    def keep(self, *args, **kwargs):  # inspect the figure the report draws
        captured["fig"] = self
        return original(self, *args, **kwargs)

    name, lr, hr = make_pair(8)
    error = predict(lr) - hr
    freq = np.linspace(0, 0.0117, 20)
    for std in (None, np.abs(error) * 0.1):
        Figure.savefig = keep
        try:
            figures.pair_figure(tmp_path / "f.png", lr=lr, bicubic=hr, sr=hr, hr=hr, error=error,
                                consistency=np.abs(lr - lr.mean()), title=name, std=std,
                                std_ratio=6.8, frc_curves={"LR": (freq, np.exp(-freq * 300))})
        finally:
            Figure.savefig = original
        fig = captured["fig"]
        images = [ax for ax in fig.axes if ax.images and ax.get_label() != "<colorbar>"]
        assert len(images) == (7 if std is not None else 6)
        for ax in images:
            bars = [a for a in ax.artists if isinstance(a, AnchoredSizeBar)]
            assert len(bars) == 1 and "µm" in bars[0].txt_label.get_text(), ax.get_title()
        colour_bars = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]
        labels = [ax.get_ylabel() for ax in colour_bars]
        assert all(labels) and any("target units" in lab for lab in labels)
        if std is not None:
            assert any("underestimates" in lab and "~7-fold" in lab for lab in labels)
        # layout: the axes cover the figure width in both rows (no empty grid cell)
        for row in ({ax for ax in fig.axes if ax.get_position().y0 > 0.5},
                    {ax for ax in fig.axes if ax.get_position().y0 <= 0.5}):
            right = max(ax.get_position().x1 for ax in row)
            left = min(ax.get_position().x0 for ax in row)
            assert left < 0.08 and right > 0.9, (left, right)
        assert any("share one grey scale" in text.get_text() for text in fig.texts)  # legend


def test_constant_image_is_named(tmp_path):
    lr_dir, hr_dir = tmp_path / "lr", tmp_path / "hr"
    lr_dir.mkdir()
    hr_dir.mkdir()
    _, lr, hr = make_pair(9)
    tifffile.imwrite(lr_dir / "flat.tif", np.full_like(lr, 7))
    tifffile.imwrite(hr_dir / "flat.tif", hr)
    with pytest.raises(ValueError, match=r"lr/flat.tif: the image is constant .*'flat'"):
        report.evaluate_folders(predict, lr_dir=lr_dir, hr_dir=hr_dir, out_dir=tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_report_flags_an_added_texture_and_says_why(tmp_path):
    """A model that adds a fixed fine texture (the same for every noise draw) is flagged; the
    same model without it is not; summary.md states the definition and the threshold."""
    from srunet.physics import contract

    rng = np.random.default_rng(5)
    radius = np.hypot(np.fft.fftfreq(2 * LR_SIZE)[:, None], np.fft.fftfreq(2 * LR_SIZE)[None, :])
    texture = np.real(np.fft.ifft2(np.fft.fft2(rng.normal(size=radius.shape)) * (radius > 0.33)))
    texture /= texture.std()

    def textured(lr):
        out = predict(lr)
        return out + 0.1 * np.maximum(gaussian_filter(out, 2) - out.mean(), 0) * texture

    pairs = [make_pair(seed, repeat=True) for seed in (21, 22)]
    flagged = {}
    for label, model in (("plain", predict), ("textured", textured)):
        summary = report.evaluate_arrays(pairs, model, tmp_path / label)
        data = json.loads(summary.with_name("report.json").read_text())
        flagged[label] = data["overall"]["invented_detail"]
    assert flagged == {"plain": [], "textured": ["field21", "field22"]}
    text = summary.read_text()
    assert "hold invented detail beyond the ISM limit: field21, field22" in text
    assert f"beyond 1/{contract.ISM_RESOLUTION_LIMIT_NM:.0f} nm" in text  # the definition
    assert f"above {data['settings']['invented_detail_threshold']:g}" in text
    assert "bench/flag_controls.py" in text  # where the threshold came from


def test_folder_report_with_tta_scores_the_plain_prediction(tmp_path):
    lr_dir, hr_dir = tmp_path / "lr", tmp_path / "hr"
    lr_dir.mkdir(), hr_dir.mkdir()
    name, lr, hr = make_pair(12)
    tifffile.imwrite(lr_dir / f"{name}.tif", lr)
    tifffile.imwrite(hr_dir / f"{name}.tif", hr)
    summaries = {tta: report.evaluate_folders(_rotation_biased, lr_dir=lr_dir, hr_dir=hr_dir,
                                              out_dir=tmp_path / str(tta), tta=tta)
                 for tta in (False, True)}
    data = {tta: json.loads(s.with_name("report.json").read_text()) for tta, s in summaries.items()}
    assert data[True]["images"][name]["metrics"] == data[False]["images"][name]["metrics"]
    with np.load(tmp_path / "True" / data[True]["images"][name]["arrays"]) as saved:
        np.testing.assert_array_equal(saved["sr"], _rotation_biased(lr).astype(np.float32))
        std = abs(data[True]["images"][name]["target_fit"]["gain"]) * saved["tta_std"]
        expected = np.sqrt(np.mean(saved["error"].astype(float) ** 2) / np.mean(std.astype(float) ** 2))
    ratio = data[True]["images"][name]["uncertainty"]["calibration_ratio"]
    assert ratio == pytest.approx(expected, rel=1e-6) and ratio == pytest.approx(
        data[True]["overall"]["tta_calibration_ratio"], rel=1e-6)  # one image: pooled = per image
