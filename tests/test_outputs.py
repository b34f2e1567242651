"""Every command checks its output location before working and fails in one line.

We often run as root, who can write into read-only folders: the filesystem case is then skipped
and the same path is exercised by making the write probe fail (``srunet.files.probe_writable``).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile

from srunet import files
from srunet.cli import main
from srunet.files import check_output_dir, check_output_file, not_writable_error

ROOT_USER = hasattr(os, "geteuid") and os.geteuid() == 0
# < 1 s unloaded. The bound catches work done before the check (a simulation, a training data
# load, MLflow retrying a read-only store for ~2 minutes), with room for a busy machine.
FAIL_FAST_S = 30


def _commands(out: Path, tmp_path: Path) -> dict[str, list[str]]:
    """Each command with ``out`` as its output; inputs need not exist (outputs are checked first)."""
    return {
        "simulate": ["simulate", str(out), "--pairs", "1"],
        "train": ["train", "--data", str(tmp_path / "data"), "--out", str(out)],
        "package": ["package", "--checkpoint", str(tmp_path / "x.pt"), "--out", str(out)],
        "predict": ["predict", str(tmp_path / "x.tif"), "--out", str(out)],
        "evaluate": ["evaluate", "--lr", str(tmp_path), "--hr", str(tmp_path), "--out", str(out)],
    }


def _fails_fast(argv, capsys, *expected) -> str:
    start = time.perf_counter()
    assert main(argv) == 2
    elapsed = time.perf_counter() - start
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err  # one line, no traceback, no retry warnings
    for text in expected:
        assert text in err, err
    assert elapsed < FAIL_FAST_S, f"{argv[0]} took {elapsed:.1f} s to fail"
    return err


@pytest.mark.parametrize("command", ["simulate", "train", "package", "predict", "evaluate"])
def test_output_that_is_a_file(command, tmp_path, capsys):
    out = tmp_path / "taken"
    out.write_text("not a folder")
    argv = _commands(out, tmp_path)[command] + ["--overwrite"] * (command in ("simulate", "package", "evaluate"))
    _fails_fast(argv, capsys, str(out), "is a file, not a folder")
    assert out.read_text() == "not a folder"


@pytest.mark.parametrize("command", ["simulate", "train", "package", "predict", "evaluate"])
def test_unwritable_output_by_probe(command, tmp_path, capsys, monkeypatch):
    def refuse(folder):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(files, "probe_writable", refuse)
    out = tmp_path / "new" / "out"
    err = _fails_fast(_commands(out, tmp_path)[command], capsys, str(out), "Permission denied",
                      "choose a folder you can write to")
    assert "Traceback" not in err
    assert not out.exists() and not (tmp_path / "new").exists()


@pytest.mark.skipif(ROOT_USER, reason="running as root: root writes into read-only folders, so "
                    "the probe-based test above covers this path")
@pytest.mark.parametrize("command", ["simulate", "train", "predict", "evaluate"])
def test_read_only_folder_on_disk(command, tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        _fails_fast(_commands(locked / "out", tmp_path)[command], capsys, "Permission denied")
        assert not any(locked.iterdir())
    finally:
        locked.chmod(0o755)


def test_not_writable_message_is_one_actionable_line(tmp_path):
    error = not_writable_error("report folder", tmp_path / "a" / "b", tmp_path, "Permission denied")
    text = str(error)
    assert isinstance(error, PermissionError) and "\n" not in text
    assert str(tmp_path / "a" / "b") in text and f"({tmp_path} is where it would be created)" in text
    assert "Permission denied" in text and "chmod" in text


def test_real_probe_leaves_nothing(tmp_path):
    check_output_dir(tmp_path / "x" / "y")
    assert list(tmp_path.iterdir()) == []  # nothing created, probe file removed


def test_existing_and_blocked_paths(tmp_path):
    full = tmp_path / "full"
    full.mkdir()
    (full / "f").write_text("x")
    with pytest.raises(FileExistsError, match="--overwrite"):
        check_output_dir(full)
    check_output_dir(full, overwrite=True)
    check_output_dir(full, may_exist=True)
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    with pytest.raises(NotADirectoryError, match="blocker is a file, not a folder"):
        check_output_dir(blocker / "sub" / "out")
    with pytest.raises(IsADirectoryError, match="is a folder, not a file"):
        check_output_file(full)
    with pytest.raises(FileExistsError, match="--overwrite"):
        check_output_file(full / "f")
    with pytest.raises(OSError, match="not enough space"):
        check_output_dir(tmp_path / "big", need_bytes=1 << 62)


def test_package_overwrite_onto_a_file_or_folder(tmp_path, capsys):
    target = tmp_path / "pkg.zip"
    target.mkdir()
    _fails_fast(["package", "--checkpoint", "x.pt", "--out", str(target), "--overwrite"], capsys,
                "is a folder, not a file")


def test_train_into_read_only_checkpoints_by_probe(tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    real = files.probe_writable

    def refuse_checkpoints(folder):
        if Path(folder).name == "checkpoints":
            raise PermissionError(13, "Permission denied")
        real(folder)

    monkeypatch.setattr(files, "probe_writable", refuse_checkpoints)
    _fails_fast(["train", "--data", str(tmp_path), "--out", str(run)], capsys,
                "checkpoint folder", str(run / "checkpoints"))


def test_misleading_messages_fixed(tmp_path, capsys):
    from srunet.model.checkpoint import load_checkpoint
    from srunet.tiff import find_pairs

    lr_file = tmp_path / "lr.tif"
    tifffile.imwrite(lr_file, np.ones((8, 8), np.uint16))
    with pytest.raises(NotADirectoryError, match="is a file, not a folder"):
        find_pairs(lr_file, tmp_path)
    text = tmp_path / "notes.pt"
    text.write_text("epoch 3 looked good\n")
    with pytest.raises(ValueError, match=r"not a PyTorch file \(it starts with b'epoc'\).*srunet train"):
        load_checkpoint(text)
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match="is empty"):
        load_checkpoint(empty)
