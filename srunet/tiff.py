"""TIFF/OME-TIFF in and out, and LR/HR folders paired by file name: the one place for both.

Reading gives one 2-D plane (singleton axes dropped) as float32 with its pixel size from
OME-XML or the TIFF resolution tags; training opens images memory-mapped instead (``open_image``)
so a dataset larger than RAM trains. Writing is atomic (temp file, then rename) and uncompressed,
so written images can be memory-mapped again.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tifffile

from srunet.files import full_disk_named

SUFFIXES = (".ome.tiff", ".ome.tif", ".tiff", ".tif")  # longest first: stem() strips one


@dataclass(frozen=True)
class PairFiles:
    """An LR image and the HR image of the same name."""

    name: str
    lr: Path
    hr: Path


def stem(path: str | os.PathLike) -> str:
    """File name without its TIFF suffix (``a.ome.tif`` -> ``a``)."""
    name = Path(path).name
    for suffix in SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return Path(path).stem


def _is_tiff(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith((".tif", ".tiff"))


def find_pairs(lr_dir, hr_dir) -> list[PairFiles]:
    """Pair ``lr_dir/NAME.tif`` with ``hr_dir/NAME.tif`` by name (manifest order if present).

    Raises
    ------
    FileNotFoundError
        If a folder does not exist.
    ValueError
        If a name has no partner (both lists are named) or the folders hold no TIFF.
    """
    lr_dir, hr_dir = Path(lr_dir), Path(hr_dir)
    for folder in (lr_dir, hr_dir):
        if folder.exists() and not folder.is_dir():
            raise NotADirectoryError(f"{folder} is a file, not a folder; pass the folder that "
                                     "holds the .tif images (e.g. DATA/lr and DATA/hr)")
        if not folder.is_dir():
            raise FileNotFoundError(f"data folder {folder} does not exist")

    def stems(folder: Path) -> dict[str, Path]:
        return {stem(p): p for p in sorted(folder.iterdir()) if _is_tiff(p)}

    lr_files, hr_files = stems(lr_dir), stems(hr_dir)
    missing_hr = sorted(set(lr_files) - set(hr_files))
    missing_lr = sorted(set(hr_files) - set(lr_files))
    if missing_hr or missing_lr:
        raise ValueError(
            f"unpaired images: in {lr_dir} without HR: {missing_hr[:5]}; in {hr_dir} without LR: "
            f"{missing_lr[:5]}. LR and HR files must share their names"
        )
    if not lr_files:
        raise ValueError(f"no .tif/.tiff images in {lr_dir}")
    names = sorted(lr_files)
    manifest = lr_dir.parent / "manifest.json"
    if manifest.is_file():  # keep the simulator's order, so splits are stable across machines
        listed = [item["name"] for item in json.loads(manifest.read_text()).get("pairs", [])]
        if sorted(listed) == names:
            names = listed
    return [PairFiles(n, lr_files[n], hr_files[n]) for n in names]


def open_image(path) -> np.ndarray:
    """Memory-map a TIFF if possible (else read it), squeezed to 2-D (y, x); dtype as stored."""
    try:
        image = tifffile.memmap(path, mode="r")
    except Exception:  # compressed or tiled TIFF: cannot be mapped
        try:
            image = tifffile.imread(path)
        except Exception as error:
            raise ValueError(f"cannot read {path} as TIFF: {error}") from error
    image = np.squeeze(image)
    if image.ndim != 2:
        raise ValueError(f"{path}: expected a 2-D image (y, x), got shape {image.shape}")
    return image


def _ome_pixel_size(xml: str) -> float | None:
    """PhysicalSizeX of the first OME Pixels element, in micrometres (None if absent)."""
    units = {"µm": 1.0, "um": 1.0, "nm": 1e-3, "mm": 1e3, "m": 1e6, "Å": 1e-4}
    pixels = re.search(r"<(?:\w+:)?Pixels\b[^>]*>", xml)
    if pixels is None:
        return None
    attrs = dict(re.findall(r'(\w+)="([^"]*)"', pixels.group(0)))
    if "PhysicalSizeX" not in attrs:
        return None
    unit = attrs.get("PhysicalSizeXUnit", "µm")
    if unit not in units:
        return None
    return float(attrs["PhysicalSizeX"]) * units[unit]


def _resolution_pixel_size(tif: tifffile.TiffFile) -> float | None:
    """Pixel size (um) from the TIFF XResolution tag (inch, cm, or ImageJ micron units)."""
    page = tif.pages[0]
    if "XResolution" not in page.tags:
        return None
    num, den = page.tags["XResolution"].value
    per_unit = num / den if den else 0.0
    unit = int(page.tags["ResolutionUnit"].value) if "ResolutionUnit" in page.tags else 1
    ij_unit = (tif.imagej_metadata or {}).get("unit", "")
    scale = {2: 25400.0, 3: 1e4}.get(unit)  # inch, cm -> um
    if scale is None and ij_unit in ("micron", "um", "µm", "\\u00B5m"):
        scale = 1.0
    return scale / per_unit if scale and per_unit > 0 else None


def read_image(path) -> tuple[np.ndarray, float | None]:
    """Read a 2-D TIFF/OME-TIFF plane and its pixel size (um, None if the file has none).

    Raises
    ------
    FileNotFoundError
        If ``path`` is not a file.
    ValueError
        If it is not a readable TIFF, not one 2-D plane, or holds NaN/inf; the message names
        the file and says how to fix it.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        with tifffile.TiffFile(path) as tif:
            data = tif.asarray()
            axes = tif.series[0].axes if tif.series else "?"
            pixel_um = _ome_pixel_size(tif.ome_metadata) if tif.ome_metadata else None
            if pixel_um is None:
                pixel_um = _resolution_pixel_size(tif)
    except Exception as error:  # noqa: BLE001 - re-raised with the file named
        raise ValueError(f"{path}: cannot read as TIFF ({type(error).__name__}: {error})") from error
    image = np.squeeze(data)
    if image.ndim != 2:
        raise ValueError(f"{path}: expected one 2-D plane (y, x) after dropping singleton axes, "
                         f"got shape {data.shape} (axes '{axes}'); split channels, z-slices or "
                         "time points into separate 2-D files first")
    if not np.all(np.isfinite(image)):
        raise ValueError(f"{path}: contains {int(np.sum(~np.isfinite(image)))} NaN/inf pixels; "
                         "fix or mask them before prediction")
    return image.astype(np.float32), pixel_um


def _atomic_imwrite(path, data: np.ndarray, **kwargs) -> Path:
    """``tifffile.imwrite`` beside ``path`` under a temporary name, then renamed into place."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with full_disk_named(path, "TIFF file"):
            tifffile.imwrite(tmp, data, **kwargs)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_tensor_tiff(path, tensor: np.ndarray) -> Path:
    """Write an array of any rank as a plain TIFF (no metadata), atomically: the zoo package's
    sample tensors, whose axes the package description names."""
    return _atomic_imwrite(path, np.asarray(tensor))


def write_ome_tiff(path, image: np.ndarray, pixel_um: float) -> Path:
    """Write a 2-D OME-TIFF (dtype kept, uncompressed) with its pixel size, atomically.

    The pixel size goes into OME-XML and the TIFF resolution tags (for readers that ignore
    OME-XML). The file is written beside ``path`` under a temporary name and renamed.
    """
    return _atomic_imwrite(
        path, np.asarray(image), ome=True, photometric="minisblack",
        metadata={"axes": "YX", "PhysicalSizeX": pixel_um, "PhysicalSizeXUnit": "µm",
                  "PhysicalSizeY": pixel_um, "PhysicalSizeYUnit": "µm"},
        resolution=(1e4 / pixel_um, 1e4 / pixel_um), resolutionunit="CENTIMETER")
