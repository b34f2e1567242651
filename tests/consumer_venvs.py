"""Cached, pinned venvs for consumers of the package (BiaPy, older bioimageio.core).

Each consumer runs in its own venv under :data:`VENV_ROOT` (outside the checkout, so a fresh
clone on the same machine reuses them; ``SRUNET_CONSUMER_VENVS`` chooses another folder), never
in the project's:
their pins (bioimageio.core 0.9.6, xarray 2025.1, torch 2.14.1 ...) conflict with the project's.
A venv is built once and reused while the stamp file inside it lists the same pins; when the
pins change it is rebuilt from scratch. Tests that need one skip when it cannot be built, except
under CI (environment variable ``CI`` set, as .ci/run does), where they fail: CI must not go
green without running the consumer.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
VENV_ROOT = Path(os.environ.get("SRUNET_CONSUMER_VENVS",
                                Path.home() / ".cache" / "srunet" / "consumer-venvs"))
STAMP = "srunet-pins.txt"

# Runs inside a consumer venv: load the package with file hashes checked, then core's
# test_model per weight format; prints one RESULT line of JSON.
TEST_MODEL_SCRIPT = """
import json, sys
from bioimageio.spec import load_description
from bioimageio.core import test_model
source, formats = sys.argv[1], sys.argv[2].split(",")
descr = load_description(source, perform_io_checks=True)
result = {"load": descr.validation_summary.status,
          "load_errors": [e.msg[:300] for d in descr.validation_summary.details for e in d.errors]}
for fmt in formats:
    summary = test_model(source, weight_format=fmt)
    result[fmt] = summary.status
    result[fmt + "_failed"] = [d.name + ": " + "; ".join(e.msg[:300] for e in d.errors)
                               for d in summary.details if d.status == "failed"]
print("RESULT " + json.dumps(result))
"""


def venv_python(venv: Path) -> Path:
    """The interpreter of ``venv``."""
    return venv / "bin" / "python"


def build_venv(venv: Path, pins: tuple[str, ...], find_links: str | None = None) -> Path:
    """Create (or reuse) ``venv`` with ``pins`` installed; return its python.

    Parameters
    ----------
    venv : Path
        Folder of the venv (rebuilt with ``--clear`` when its stamp does not list ``pins``).
    pins : tuple of str
        pip requirement specifiers, installed in one resolver run.
    find_links : str, optional
        Extra ``--find-links`` folder of wheels (e.g. torch builds that lie on the machine).

    Raises
    ------
    RuntimeError
        With the end of pip's output when the venv cannot be built (e.g. no package index).
    """
    stamp = venv / STAMP
    wanted = "\n".join(pins + ((f"--find-links {find_links}",) if find_links else ()))
    if stamp.is_file() and stamp.read_text() == wanted and venv_python(venv).is_file():
        return venv_python(venv)
    venv.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
    links = ["--find-links", find_links] if find_links else []
    pip = subprocess.run([str(venv_python(venv)), "-m", "pip", "install", "-q", *links, *pins],
                         capture_output=True, text=True)
    if pip.returncode != 0:
        raise RuntimeError(f"pip could not build {venv}:\n{pip.stderr[-3000:]}")
    stamp.write_text(wanted)
    return venv_python(venv)


def installed_versions(python: Path, distributions: tuple[str, ...]) -> dict[str, str]:
    """``{distribution: version}`` as installed in the venv of ``python``."""
    code = ("import json, sys, importlib.metadata as m; "
            "print(json.dumps({d: m.version(d) for d in sys.argv[1:]}))")
    out = subprocess.run([str(python), "-c", code, *distributions], capture_output=True,
                         text=True, check=True)
    return json.loads(out.stdout)


def run_test_model(python: Path, source: Path, formats: tuple[str, ...]) -> dict:
    """Load ``source`` and run core's ``test_model`` per format in the venv of ``python``."""
    result = subprocess.run([str(python), "-c", TEST_MODEL_SCRIPT, str(source), ",".join(formats)],
                            capture_output=True, text=True, timeout=1200, cwd=source.parent)
    lines = [line for line in result.stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, f"test_model script failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return json.loads(lines[-1][len("RESULT "):])


def under_ci() -> bool:
    """True when the CI environment variable is set (.ci/run sets CI=true, as CI services do)."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def venv_or_skip(build, venv: Path, script: str) -> Path:
    """``build()``'s python; skip when it fails, or fail under CI."""
    try:
        return build()
    except (RuntimeError, OSError, subprocess.CalledProcessError) as error:
        message = (f"CONSUMER NOT TESTED: could not build {venv} ({error}); "
                   f"run `python {script}` where PyPI is reachable")
        if under_ci():
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
