"""`srunet registry`: packages of tracked runs become registered versions with their lineage.

The runs are made with MlflowClient and the tags `srunet train` sets (a real training run would
add a minute and test nothing more here); the packages are the tiny session fixtures.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest

from srunet.cli import main
from srunet.files import file_sha256

NAME = "srunet-tiny"


def _report(path: Path) -> Path:
    """A minimal report.json as `srunet evaluate` writes it (only what registering reads)."""
    def table(psnr):
        return {"psnr": psnr, "ssim": 0.8, "nrmse": 0.1, "accuracy": 97.0}
    overall = {"model": {"whole": table(31.08), "foreground": table(24.0)},
               "bicubic": {"whole": table(28.05), "foreground": table(22.0)},
               "frc_sr_vs_hr_nm": 170.0, "frc_method": "two-image", "invented_detail": ["a"],
               "tta_mean_std": None}
    path.write_text(json.dumps({"overall": overall, "images": {}}))
    return path


@pytest.fixture(scope="module")
def registry(tmp_path_factory, tiny_package, tiny_zip):
    """A run folder with mlflow.db, two training runs (the second fine-tuned from the tiny
    package's weights), both packages registered: version 1 (folder) and 2 (zip)."""
    from mlflow import MlflowClient

    from srunet.store import default_tracking_uri, experiment_id

    run_dir = tmp_path_factory.mktemp("run")
    uri = default_tracking_uri(run_dir)
    client = MlflowClient(uri)
    experiment = experiment_id(client, "srunet", uri)
    weights_sha = file_sha256(Path(tiny_package).parent / "weights.pt")
    runs = []
    for index, extra in enumerate(({}, {"init_from_sha256": weights_sha})):
        run_id = client.create_run(experiment).info.run_id
        for key, value in {"git_commit": f"abc{index}", "data_sha256": f"d{index}" * 8,
                           "seed": "0", **extra}.items():
            client.set_tag(run_id, key, value)
        runs.append(run_id)
    stranger = client.create_run(experiment).info.run_id  # no srunet tags: not a training run
    report = _report(run_dir / "report.json")
    for argv in (["--package", str(Path(tiny_package).parent), "--run-id", runs[0],
                  "--alias", "champion", "--metrics", str(report), "--store", str(run_dir)],
                 ["--package", str(tiny_zip), "--run-id", runs[1], "--alias", "champion",
                  "--alias", "candidate", "--tracking-uri", uri]):
        assert main(["registry", "--name", NAME, *argv]) == 0
    return {"dir": run_dir, "uri": uri, "client": client, "runs": runs, "stranger": stranger,
            "report": report, "weights_sha": weights_sha, "tiny_zip": Path(tiny_zip)}


def test_two_versions_with_lineage_tags(registry):
    client = registry["client"]
    first, second = (client.get_model_version(NAME, str(v)) for v in (1, 2))
    assert (first.run_id, second.run_id) == tuple(registry["runs"])
    assert first.tags["run_id"] == registry["runs"][0]
    assert (first.tags["git_commit"], second.tags["git_commit"]) == ("abc0", "abc1")
    assert (first.tags["data_sha256"], second.tags["data_sha256"]) == ("d0" * 8, "d1" * 8)
    assert first.tags["weights_sha256"] == second.tags["weights_sha256"] == registry["weights_sha"]
    # version 2's run was fine-tuned from version 1's weights.pt
    assert first.tags["parent"] == "none" and "parent_sha256" not in first.tags
    assert second.tags["parent"] == f"{NAME}/1"
    assert second.tags["parent_sha256"] == registry["weights_sha"]
    # held-out metrics only where --metrics was given, under evaluate's metric names
    assert float(first.tags["heldout_model_psnr"]) == pytest.approx(31.08)
    assert float(first.tags["heldout_bicubic_psnr_fg"]) == pytest.approx(22.0)
    assert float(first.tags["heldout_psnr_gain"]) == pytest.approx(3.03)
    assert float(first.tags["heldout_frc_sr_vs_hr_nm"]) == pytest.approx(170.0)
    assert first.tags["heldout_report_sha256"] == file_sha256(registry["report"])
    assert not any(key.startswith("heldout_") for key in second.tags)
    # a zip given is registered byte for byte
    assert second.tags["package_sha256"] == file_sha256(registry["tiny_zip"])


def test_artifacts_hold_zip_and_rdf(registry, tmp_path):
    import mlflow

    client = registry["client"]
    for version in ("1", "2"):
        found = client.get_model_version(NAME, version)
        folder = f"package/{found.tags['package_sha256'][:12]}"
        assert found.source.endswith(folder)
        names = {Path(a.path).name for a in client.list_artifacts(found.run_id, folder)}
        assert names == {"package.zip", "rdf.yaml"}
        local = Path(mlflow.artifacts.download_artifacts(
            artifact_uri=found.source, dst_path=str(tmp_path / version),
            tracking_uri=registry["uri"]))
        assert file_sha256(local / "package.zip") == found.tags["package_sha256"]
        with zipfile.ZipFile(local / "package.zip") as archive:
            assert archive.namelist()[0] == "rdf.yaml"
            assert archive.read("rdf.yaml") == (local / "rdf.yaml").read_bytes()


def test_aliases_move_to_the_new_version(registry):
    model = registry["client"].get_registered_model(NAME)
    assert {alias: int(v) for alias, v in model.aliases.items()} == {"champion": 2, "candidate": 2}


def test_download_gives_a_loadable_package(registry, tmp_path, capsys):
    from srunet.model.predictor import load_model

    for ref, version in ((f"{NAME}@champion", 2), (f"{NAME}@1", 1)):
        out = tmp_path / f"v{version}"
        assert main(["registry", "--download", ref, "--out", str(out),
                     "--store", str(registry["dir"])]) == 0
        assert f"{out / 'package.zip'}" in capsys.readouterr().out
        assert sorted(p.name for p in out.iterdir()) == ["package.zip", "rdf.yaml",
                                                         "registry.json"]
        assert load_model(out / "package.zip").name
        info = json.loads((out / "registry.json").read_text())
        assert (info["name"], info["version"]) == (NAME, version)
        assert file_sha256(out / "package.zip") == info["tags"]["package_sha256"]
    # an existing download folder is replaced only on request
    argv = ["registry", "--download", f"{NAME}@2", "--out", str(tmp_path / "v1"),
            "--store", str(registry["dir"])]
    assert main(argv) == 2 and "--overwrite" in capsys.readouterr().err
    assert main(argv + ["--overwrite"]) == 0
    assert json.loads((tmp_path / "v1" / "registry.json").read_text())["version"] == 2
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp folders left


def _bad_inputs(registry, tmp_path):
    """(argv, words the one-line error must contain) for each bad input."""
    run, store = registry["runs"][0], str(registry["dir"])
    package = str(registry["tiny_zip"])
    (tmp_path / "not_a_report.json").write_text('{"images": {}}')
    (tmp_path / "empty").mkdir()
    ok = ["--package", package, "--run-id", run, "--name", NAME]
    return [
        (["--package", str(tmp_path / "missing.zip"), "--run-id", run, "--name", NAME,
          "--store", store], ["missing.zip", "does not exist"]),
        ([*ok[:2], "--run-id", "0123456789abcdef", "--name", NAME, "--store", store],
         ["0123456789abcdef", "is not in the MLflow store", "mlflow.db"]),
        ([*ok[:2], "--run-id", registry["stranger"], "--name", NAME, "--store", store],
         ["not a `srunet train` run", "data_sha256"]),
        ([*ok, "--store", str(tmp_path / "empty")], ["no MLflow store", "empty"]),
        ([*ok, "--store", store, "--metrics", str(tmp_path / "not_a_report.json")],
         ["not_a_report.json", "srunet evaluate"]),
        ([*ok, "--store", store, "--metrics", str(tmp_path / "none.json")],
         ["none.json", "does not exist"]),
        ([*ok, "--store", store, "--alias", "latest"], ["alias 'latest'"]),
        ([*ok[:4], "--name", "a/b", "--store", store], ["model name 'a/b'"]),
        ([*ok[:4], "--store", store], ["missing: --name"]),
        (["--download", f"{NAME}@nobody", "--out", str(tmp_path / "dl"), "--store", store],
         [f"{NAME}@nobody", "no such"]),
        (["--download", NAME, "--out", str(tmp_path / "dl"), "--store", store], ["NAME@ALIAS"]),
        (["--download", f"{NAME}@1", "--store", store], ["--out"]),
    ]


def test_bad_input_one_line_and_nothing_written(registry, tmp_path, capsys):
    client = registry["client"]

    def state():
        versions = sorted(int(v.version) for v in client.search_model_versions(f"name='{NAME}'"))
        files = [sorted(a.path for a in client.list_artifacts(r, "package"))
                 for r in registry["runs"]]
        return versions, files, client.get_registered_model(NAME).aliases

    before = state()
    for argv, words in _bad_inputs(registry, tmp_path):
        assert main(["registry", *argv]) == 2, argv
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1, err
        assert all(word in err for word in words), (words, err)
    assert state() == before
    assert not (tmp_path / "empty" / "mlflow.db").exists()  # no empty store created
    assert not (tmp_path / "dl").exists()
