"""File helpers shared by the simulator, the package builder, the report and tracking.

Also the output checks every command runs before it starts working (:func:`check_output_dir`,
:func:`check_output_file`), so a bad output location fails in a second, not after the work.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import shutil
import tempfile
import uuid
from pathlib import Path


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """sha256 hex digest of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def swap_into_place(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Rename a finished ``src`` (file or folder) to ``dst``, replacing what is there.

    An existing folder is first moved aside under a hidden name and removed only after the
    rename succeeded (restored if it failed), so ``dst`` is never half-written or lost.
    """
    src, dst = Path(src), Path(dst)
    if not dst.is_dir():
        os.replace(src, dst)
        return
    old = dst.with_name(f".{dst.name}.old-{uuid.uuid4().hex[:8]}")
    os.rename(dst, old)
    try:
        os.rename(src, dst)
    except BaseException:
        os.rename(old, dst)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _nearest_existing(path: Path) -> Path:
    """``path`` or its closest existing ancestor (where a missing folder would be created)."""
    path = Path(os.path.abspath(path))
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def not_writable_error(what: str, path, folder, reason: str) -> PermissionError:
    """The one-line error for an output that cannot be written: what, where, how to fix."""
    where = "" if Path(folder) == Path(path) else f" ({folder} is where it would be created)"
    return PermissionError(f"cannot write the {what} {path}{where}: {reason}; choose a folder "
                           "you can write to, or fix its permissions (e.g. chmod u+w)")


def probe_writable(folder: Path) -> None:
    """Create and delete a hidden file in ``folder``; raise OSError if that is refused.

    A real write answers for root, read-only mounts and ACLs alike, unlike ``os.access``.
    """
    handle, name = tempfile.mkstemp(dir=folder, prefix=".srunet-write-test-")
    os.close(handle)
    os.unlink(name)


def _check_parent_chain(path: Path, what: str) -> Path:
    """The existing folder a missing ``path`` would be created in; error if a file is in the way."""
    base = _nearest_existing(path)
    if base != Path(os.path.abspath(path)) and not base.is_dir():
        raise NotADirectoryError(f"cannot create the {what} {path}: {base} is a file, not a "
                                 "folder; move that file or choose another path")
    return base


def _check_writable(folders, path: Path, what: str) -> None:
    for folder in dict.fromkeys(folders):  # unique, in order
        try:
            probe_writable(folder)
        except OSError as error:
            raise not_writable_error(what, path, folder, error.strerror or str(error)) from None


def check_output_dir(path, *, overwrite: bool = False, what: str = "output folder",
                     may_exist: bool = False, need_bytes: int = 0,
                     flag: str = "--overwrite") -> Path:
    """Fail fast, before any work, if the output folder ``path`` cannot be written.

    Parameters
    ----------
    path : path
        The folder a command will create (or write into).
    overwrite : bool
        A non-empty existing folder may be replaced.
    what : str
        What the folder is, for the message ("report folder", ...).
    may_exist : bool
        The command writes into an existing folder (predict, train): no ``overwrite`` needed.
    need_bytes : int
        Rough size of the output; error when the disk has less free space.
    flag : str
        The option that allows replacing, named in the message.

    Returns
    -------
    pathlib.Path
        ``path``.

    Raises
    ------
    FileExistsError, NotADirectoryError, PermissionError, OSError
        One line each: what, where, how to fix.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(f"the {what} {path} is a file, not a folder; move the file "
                                 "away or choose another path")
    if path.is_dir() and not may_exist and not overwrite and any(path.iterdir()):
        raise FileExistsError(f"the {what} {path} already exists and is not empty; pass {flag} "
                              "to replace it, or choose another path")
    base = _check_parent_chain(path, what)
    # A replaced folder is rebuilt beside itself (temp folder, then rename): its parent must be
    # writable too, not only the folder.
    folders = [base] if may_exist or not path.exists() else [path, _nearest_existing(path.parent)]
    _check_writable(folders, path, what)
    _check_free_space(base, need_bytes, path, what)
    return path


def check_output_file(path, *, overwrite: bool = False, what: str = "output file",
                      need_bytes: int = 0, flag: str = "--overwrite") -> Path:
    """:func:`check_output_dir` for one file written atomically (temp file beside it, rename)."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"the {what} {path} is a folder, not a file; move it away or "
                                "choose another path")
    if path.exists() and not overwrite:
        raise FileExistsError(f"the {what} {path} already exists; pass {flag} to replace it, "
                              "or choose another path")
    base = _check_parent_chain(path.parent, what)
    _check_writable([base], path, what)
    _check_free_space(base, need_bytes, path, what)
    return path


def _check_free_space(folder: Path, need_bytes: int, path: Path, what: str) -> None:
    if need_bytes <= 0:
        return
    free = shutil.disk_usage(folder).free
    if free < need_bytes:
        raise OSError(f"not enough space for the {what} {path}: about {need_bytes / 1e6:.0f} MB "
                      f"needed, {free / 1e6:.0f} MB free on {folder}; free some space or choose "
                      "another disk")


def _looks_like_full_disk(error: OSError) -> bool:
    # numpy's tofile (used by tifffile) reports a short write as "N requested and M written",
    # with no errno; the operating system reports ENOSPC (or EDQUOT for a quota).
    return error.errno in (errno.ENOSPC, errno.EDQUOT) or (
        error.errno is None and "requested and" in str(error) and "written" in str(error))


@contextlib.contextmanager
def full_disk_named(path, what: str = "file"):
    """Re-raise a write that failed for lack of space as an OSError naming the disk, the file
    and the fix, instead of "262144 requested and 262088 written"."""
    try:
        yield
    except OSError as error:
        if not _looks_like_full_disk(error):
            raise
        path = Path(path)
        folder = _nearest_existing(path.parent)
        free = shutil.disk_usage(folder).free
        raise OSError(errno.ENOSPC, f"disk full while writing the {what} {path} ({free / 1e6:.1f} "
                      f"MB left on {folder}; the partial file was removed); free some space or "
                      "write to another disk") from error
