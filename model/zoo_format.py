"""Write a package's files so that every reader accepts them and a rebuild is byte-identical.

``rdf.yaml`` for both the newest bioimageio.spec and the zoo's runner:

The bioimage.io upload runner pins bioimageio.core 0.10.4 with bioimageio.spec 0.5.10.2.
Format 0.5.12 (spec 0.5.12) writes ``covers`` and ``documentation`` as ``{source, sha256}``
objects, which spec 0.5.10.2 rejects ("Input should be a valid string"); spec 0.5.12 in turn
rejects plain strings in a format-0.5.12 file, but reads a format-0.5.10 file with plain
strings and converts it without a warning. So the description is built with the newest spec,
saved with its own saver, and then rewritten here as format 0.5.10 with those two fields as
plain file names. Both readers are tested (tests/test_zoo_runner.py); nothing else in the file
differs between the two formats for this model.

Byte-identical rebuilds (``srunet package --release`` from the release's own weights must
reproduce it): :func:`reproducible_torchscript` removes what ``torch.jit.save`` writes that
depends on the build and not on the model, :func:`reroot_rdf` derives the repository root's
``rdf.yaml`` from the release's own (one source), and :func:`zip_folder` writes fixed
timestamps.
"""

from __future__ import annotations

import io
import os
import stat
import tempfile
import zipfile
from pathlib import Path

import torch
from ruyaml import YAML  # what bioimageio.spec reads and writes YAML 1.2 with (its dependency)

# The runner's spec (0.5.10.2) reads format_version <= 0.5.10; the newest reads it too.
RUNNER_FORMAT_VERSION = "0.5.10"


# Fields whose string value is a file of the package (besides any "source"): in format 0.5.10
# ``documentation`` is a plain string and ``covers`` a list of them (make_runner_compatible).
_FILE_FIELDS = ("documentation", "covers")


def _plain_source(entry):
    return entry["source"] if isinstance(entry, dict) else entry


def _yaml() -> YAML:
    # Round trip with ruyaml (YAML 1.2, as the spec reads it): PyYAML writes YAML 1.1 and
    # would leave e.g. a hash like "12e45..." unquoted, which YAML 1.2 reads as a number.
    io_ = YAML(typ="rt")
    io_.width = 100
    return io_


def _atomic_write(path: Path, write) -> None:
    """Write ``path`` through a temporary file beside it; keeps an existing file's mode."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            write(handle)
        mode = stat.S_IMODE(path.stat().st_mode) if path.exists() else 0o644
        os.chmod(tmp, mode)  # mkstemp's 0600 would hide it
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def make_runner_compatible(rdf: Path) -> Path:
    """Rewrite a saved ``rdf.yaml`` in place (atomically) as format 0.5.10 (module docstring).

    Returns
    -------
    Path
        ``rdf``.
    """
    rdf = Path(rdf)
    yaml = _yaml()
    data = yaml.load(rdf.read_text(encoding="utf-8"))
    if data.get("type") != "model":
        raise ValueError(f"{rdf} is not a model description (type {data.get('type')!r})")
    data["format_version"] = RUNNER_FORMAT_VERSION
    if "covers" in data:
        data["covers"] = [_plain_source(cover) for cover in data["covers"]]
    if data.get("documentation") is not None:
        data["documentation"] = _plain_source(data["documentation"])
    _atomic_write(rdf, lambda handle: yaml.dump(data, handle))
    return rdf


def map_file_references(data, change):
    """``data`` (a loaded rdf.yaml, changed in place) with ``change(path)`` applied to every
    file reference: any ``source`` string, ``documentation`` and each of ``covers``."""
    if isinstance(data, dict):
        for key, value in data.items():
            if isinstance(value, str) and (key == "source" or key in _FILE_FIELDS):
                data[key] = change(value)
            elif key == "covers" and isinstance(value, list):
                data[key] = [change(v) if isinstance(v, str) else map_file_references(v, change)
                             for v in value]
            else:
                map_file_references(value, change)
    elif isinstance(data, list):
        for item in data:
            map_file_references(item, change)
    return data


def reroot_rdf(release_rdf: Path, out: Path, prefix: str) -> Path:
    """Write ``out``: the description ``release_rdf`` with every file reference prefixed by
    ``prefix`` (e.g. ``model/release``), so ``out`` may live ``prefix`` above the files.

    The only difference between the two files is the paths (hashes, text, order are copied),
    which makes the release folder's ``rdf.yaml`` the one source of the root one.
    """
    release_rdf, out = Path(release_rdf), Path(out)
    yaml = _yaml()
    data = yaml.load(release_rdf.read_text(encoding="utf-8"))
    for path in _references(data):
        if "/" in path or "://" in path:
            raise ValueError(f"{release_rdf} references {path!r}; a release rdf.yaml names its "
                             "files plainly (they lie beside it)")
    prefix = prefix.strip("/")
    map_file_references(data, lambda path: f"{prefix}/{path}")
    _atomic_write(out, lambda handle: yaml.dump(data, handle))
    return out


def _references(data) -> list[str]:
    found: list[str] = []
    map_file_references(data, lambda path: found.append(path) or path)
    return found


def reproducible_torchscript(path: Path) -> Path:
    """Rewrite a ``torch.jit.save`` archive without what depends on the build, not the model.

    ``torch.jit.save`` stores a ``*.debug_pkl`` per code file: source ranges with the absolute
    paths and line numbers of the Python frames that traced the model (the checkout's path and
    srunet's own call sites), and ``.data/serialization_id``, a checksum over all records. So two
    exports of the same weights from two checkouts, or after an edit of ``package.py``, differ.
    Loaders treat the debug records as optional (they only improve error messages), so they
    are dropped; torch's own writer then recomputes the id from the remaining records. The code,
    constants and tensors are copied byte for byte in their original order; the archive keeps
    torch's format (record alignment, name prefix = the file's stem), so every loader reads it.
    """
    path = Path(path)
    reader = torch._C.PyTorchFileReader(io.BytesIO(path.read_bytes()))
    records = [name for name in reader.get_all_records()
               if not name.endswith(".debug_pkl") and name != ".data/serialization_id"]
    data = {name: reader.get_record(name) for name in records}
    writer = torch._C.PyTorchFileWriter(str(path))  # the archive prefix comes from this name
    for name in records:
        writer.write_record(name, data[name], len(data[name]))
    writer.write_end_of_file()
    del writer  # closes the file
    return path


def zip_folder(folder: Path, out: Path) -> Path:
    """Zip a folder package (``rdf.yaml`` and its files, flat) into ``out``.

    Deflated; ``rdf.yaml`` first, so readers that peek at the first entry find it; fixed
    timestamps and modes, so the same files give the same zip.
    """
    folder, out = Path(folder), Path(out)
    names = sorted(p.name for p in folder.iterdir() if p.is_file())
    if "rdf.yaml" not in names:
        raise FileNotFoundError(f"{folder} has no rdf.yaml to zip")
    names.remove("rdf.yaml")
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name in ["rdf.yaml", *names]:
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            archive.writestr(info, (folder / name).read_bytes())
    return out


def run_bioimageio_test(source: Path) -> None:
    """``bioimageio.core.test_model`` on a written package, all weight formats, offline.

    Raises
    ------
    RuntimeError
        With the full validation summary text when the status is not "passed".
    """
    from bioimageio.core import test_model

    summary = test_model(source)
    if summary.status != "passed":
        raise RuntimeError(f"bioimageio test failed for {source}:\n{summary.format()}")
