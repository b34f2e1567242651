"""The packages with the bioimage.io upload runner's versions, and with the newest.

The site's test runner pins bioimageio.core 0.10.4 + bioimageio.spec 0.5.10.2 (torch 2.5.1,
onnxruntime 1.20.1). Those run here in an isolated venv, ``.venv-zoo-runner/`` (gitignored),
built once by :func:`build_runner_venv` (``python tests/test_zoo_runner.py``; .ci/run does
it before pytest; ~2 minutes) and reused while its pins match.

What the venv covers: the runner's spec and core, onnxruntime 1.20.1, all three weight
formats. What it does not: torch 2.5.1 (its CPU wheels are not reachable from these machines),
so the torchscript and state-dict formats run with torch 2.13 under the runner's core.
If the venv cannot be built (no package index), the tests skip and say so, except under CI
(environment variable ``CI`` set, as .ci/run does), where they fail.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
VENV = REPO_ROOT / ".venv-zoo-runner"
# The runner's pins (docs/packaging.md). pydantic<2.14: 2.14 breaks spec 0.5.10/0.5.12
# validation of models with files ("'index_key' is expected to be an integer or a string").
# torch 2.13: the only CPU build reachable here (the runner has 2.5.1).
RUNNER_PINS = ("bioimageio.core==0.10.4", "bioimageio.spec==0.5.10.2", "onnxruntime==1.20.1",
               "pydantic<2.14", "torch==2.13.0")
FORMATS = ("onnx", "torchscript", "pytorch_state_dict")

# Runs inside the runner venv: load with file hashes checked, then test_model per format.
_RUNNER_SCRIPT = """
import json, sys
from bioimageio.spec import load_description
from bioimageio.core import test_model
source, formats = sys.argv[1], sys.argv[2].split(",")
descr = load_description(source, perform_io_checks=True)
result = {"load": descr.validation_summary.status,
          "load_errors": [e.msg for d in descr.validation_summary.details for e in d.errors]}
for fmt in formats:
    summary = test_model(source, weight_format=fmt)
    result[fmt] = summary.status
    result[fmt + "_failed"] = [d.name + ": " + "; ".join(e.msg[:300] for e in d.errors)
                               for d in summary.details if d.status == "failed"]
print("RESULT " + json.dumps(result))
"""


def _python() -> Path:
    return VENV / "bin" / "python"


def build_runner_venv() -> Path:
    """Create (or reuse) ``.venv-zoo-runner`` with :data:`RUNNER_PINS`; return its python.

    Raises
    ------
    RuntimeError
        With pip's output when the venv cannot be built (e.g. no package index).
    """
    stamp = VENV / "srunet-pins.txt"
    wanted = "\n".join(RUNNER_PINS)
    if stamp.is_file() and stamp.read_text() == wanted and _python().is_file():
        return _python()
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(VENV)], check=True)
    pip = subprocess.run([str(_python()), "-m", "pip", "install", "-q", *RUNNER_PINS],
                         capture_output=True, text=True)
    if pip.returncode != 0:
        raise RuntimeError(f"pip could not build {VENV}:\n{pip.stderr[-3000:]}")
    stamp.write_text(wanted)
    return _python()


def run_in_runner(source: Path, formats=FORMATS) -> dict:
    """Load and test ``source`` with the runner's versions; the per-format statuses."""
    result = subprocess.run([str(_python()), "-c", _RUNNER_SCRIPT, str(source), ",".join(formats)],
                            capture_output=True, text=True, timeout=1200, cwd=source.parent)
    lines = [line for line in result.stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, f"runner script failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return json.loads(lines[-1][len("RESULT "):])


def _under_ci() -> bool:
    """True when the CI environment variable is set (.ci/run sets CI=true, as CI services do)."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


@pytest.fixture(scope="module")
def runner_python():
    try:
        return build_runner_venv()
    except (RuntimeError, OSError, subprocess.CalledProcessError) as error:
        message = (f"RUNNER VERSIONS NOT TESTED: could not build {VENV} ({error}); "
                   "run `python tests/test_zoo_runner.py` where PyPI is reachable")
        if _under_ci():  # CI must not go green without testing the runner's versions
            pytest.fail(message, pytrace=False)
        pytest.skip(message)


def _check(result: dict, formats=FORMATS) -> None:
    assert result["load"] == "valid-format", result["load_errors"]
    for fmt in formats:
        assert result[fmt] == "passed", (fmt, result[fmt + "_failed"])


@pytest.mark.slow
def test_runner_versions_installed(runner_python):
    out = subprocess.run([str(runner_python), "-c", "import bioimageio.core as c, "
                          "bioimageio.spec as s, onnxruntime as o; "
                          "print(c.__version__, s.__version__, o.__version__)"],
                         capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["0.10.4", "0.5.10.2", "1.20.1"]


@pytest.mark.slow
def test_runner_tests_the_committed_release(runner_python):
    """The root rdf.yaml and the wheel's model/release/rdf.yaml, all three formats."""
    _check(run_in_runner(REPO_ROOT / "rdf.yaml"))
    _check(run_in_runner(REPO_ROOT / "model" / "release" / "rdf.yaml"), formats=("onnx",))


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["folder", "zip"])
def test_runner_tests_new_packages(runner_python, kind, tiny_package, tiny_zip):
    _check(run_in_runner(tiny_package if kind == "folder" else tiny_zip))


@pytest.mark.slow
@pytest.mark.parametrize("rdf", ["rdf.yaml", "model/release/rdf.yaml"])
def test_newest_versions_test_the_committed_release(rdf):
    """The same files with the installed (newest) spec and core: valid, tests pass."""
    from bioimageio.core import test_model
    from bioimageio.spec import load_description

    descr = load_description(REPO_ROOT / rdf, perform_io_checks=True)
    assert descr.validation_summary.status == "valid-format", descr.validation_summary.format()
    summary = test_model(REPO_ROOT / rdf, weight_format="onnx")
    assert summary.status == "passed", summary.format()


if __name__ == "__main__":
    start = time.monotonic()
    python = build_runner_venv()
    print(f"{VENV} ready ({python}), {time.monotonic() - start:.0f} s")
    sys.exit(0)
