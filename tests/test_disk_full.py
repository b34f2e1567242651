"""A disk that fills during a write is named as such, with the file, and leaves no partial file.

On a real full disk where the machine allows mounting a small tmpfs (root, as in CI); else by
reproducing the exact short write numpy reports ("N requested and M written", no errno).
"""

from __future__ import annotations

import subprocess

import numpy as np
import pytest

from srunet import tiff


@pytest.fixture
def small_disk(tmp_path):
    """A 256 kB filesystem, or None where mounting is not permitted."""
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)],
                          capture_output=True)
    if done.returncode != 0:
        yield None
        return
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def _short_write(*args, **kwargs):
    raise OSError("262144 requested and 262088 written")


def test_full_disk_is_named_with_the_file(small_disk, tmp_path, monkeypatch):
    image = np.random.default_rng(0).integers(0, 60000, (1024, 1024), dtype=np.uint16)  # 2 MB
    folder = small_disk
    if folder is None:
        folder = tmp_path
        monkeypatch.setattr(tiff.tifffile, "imwrite", _short_write)
    target = folder / "big.ome.tif"
    with pytest.raises(OSError, match="disk full") as caught:
        tiff.write_ome_tiff(target, image, 0.085)
    assert str(target) in str(caught.value)
    assert "free some space" in str(caught.value)
    assert list(folder.iterdir()) == []  # neither the file nor its temporary copy


def test_other_os_errors_pass_through(tmp_path, monkeypatch):
    def refused(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tiff.tifffile, "imwrite", refused)
    with pytest.raises(PermissionError, match="Permission denied"):
        tiff.write_ome_tiff(tmp_path / "x.tif", np.zeros((4, 4), np.uint16), 0.085)
