"""Write ``rdf.yaml`` so that both the newest bioimageio.spec and the zoo's runner read it.

The bioimage.io upload runner pins bioimageio.core 0.10.4 with bioimageio.spec 0.5.10.2.
Format 0.5.12 (spec 0.5.12) writes ``covers`` and ``documentation`` as ``{source, sha256}``
objects, which spec 0.5.10.2 rejects ("Input should be a valid string"); spec 0.5.12 in turn
rejects plain strings in a format-0.5.12 file, but reads a format-0.5.10 file with plain
strings and converts it without a warning. So the description is built with the newest spec,
saved with its own saver, and then rewritten here as format 0.5.10 with those two fields as
plain file names. Both readers are tested (tests/test_zoo_runner.py); nothing else in the file
differs between the two formats for this model.
"""

from __future__ import annotations

import os
import stat
import tempfile
import zipfile
from pathlib import Path

from ruyaml import YAML  # what bioimageio.spec reads and writes YAML 1.2 with (its dependency)

# The runner's spec (0.5.10.2) reads format_version <= 0.5.10; the newest reads it too.
RUNNER_FORMAT_VERSION = "0.5.10"


def _plain_source(entry):
    return entry["source"] if isinstance(entry, dict) else entry


def make_runner_compatible(rdf: Path) -> Path:
    """Rewrite a saved ``rdf.yaml`` in place (atomically) as format 0.5.10 (module docstring).

    Returns
    -------
    Path
        ``rdf``.
    """
    rdf = Path(rdf)
    # Round trip with ruyaml (YAML 1.2, as the spec reads it): PyYAML writes YAML 1.1 and
    # would leave e.g. a hash like "12e45..." unquoted, which YAML 1.2 reads as a number.
    io = YAML(typ="rt")
    io.width = 100
    data = io.load(rdf.read_text(encoding="utf-8"))
    if data.get("type") != "model":
        raise ValueError(f"{rdf} is not a model description (type {data.get('type')!r})")
    data["format_version"] = RUNNER_FORMAT_VERSION
    if "covers" in data:
        data["covers"] = [_plain_source(cover) for cover in data["covers"]]
    if data.get("documentation") is not None:
        data["documentation"] = _plain_source(data["documentation"])
    fd, tmp = tempfile.mkstemp(dir=rdf.parent, prefix=f".{rdf.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            io.dump(data, handle)
        os.chmod(tmp, stat.S_IMODE(rdf.stat().st_mode))  # mkstemp's 0600 would hide it
        os.replace(tmp, rdf)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return rdf


def zip_folder(folder: Path, out: Path) -> Path:
    """Zip a folder package (``rdf.yaml`` and its files, flat) into ``out``.

    Deflated; ``rdf.yaml`` first, so readers that peek at the first entry find it.
    """
    folder, out = Path(folder), Path(out)
    names = sorted(p.name for p in folder.iterdir() if p.is_file())
    if "rdf.yaml" not in names:
        raise FileNotFoundError(f"{folder} has no rdf.yaml to zip")
    names.remove("rdf.yaml")
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name in ["rdf.yaml", *names]:
            archive.write(folder / name, arcname=name)
    return out
