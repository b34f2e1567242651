"""File helpers shared by the simulator, the package builder, the report and tracking."""

from __future__ import annotations

import hashlib
import os
import shutil
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
