"""The packages with the bioimage.io upload runner's versions, and with the newest.

The site's test runner pins bioimageio.core 0.10.4 + bioimageio.spec 0.5.10.2 (torch 2.5.1,
onnxruntime 1.20.1). Those run here in an isolated venv (``consumer_venvs.VENV_ROOT``/zoo-runner, outside the checkout),
built once by :func:`build_runner_venv` (``python tests/test_zoo_runner.py``; .ci/run does
it before pytest; ~2 minutes) and reused while its pins match.

What the venv covers: the runner's spec and core, onnxruntime 1.20.1, all three weight
formats. What it does not: torch 2.5.1 (its CPU wheels are not reachable from these machines),
so the torchscript and state-dict formats run with torch 2.13 under the runner's core.
If the venv cannot be built (no package index), the tests skip and say so, except under CI
(environment variable ``CI`` set, as .ci/run does), where they fail.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest
from consumer_venvs import (REPO_ROOT, VENV_ROOT, build_venv, installed_versions, run_test_model,
                            venv_or_skip, venv_python)

VENV = VENV_ROOT / "zoo-runner"
# The runner's pins (docs/packaging.md). pydantic<2.14: 2.14 breaks spec 0.5.10/0.5.12
# validation of models with files ("'index_key' is expected to be an integer or a string").
# torch 2.13: the only CPU build reachable here (the runner has 2.5.1).
RUNNER_PINS = ("bioimageio.core==0.10.4", "bioimageio.spec==0.5.10.2", "onnxruntime==1.20.1",
               "pydantic<2.14", "torch==2.13.0")
FORMATS = ("onnx", "torchscript", "pytorch_state_dict")

def build_runner_venv() -> Path:
    """Create (or reuse) the runner venv with :data:`RUNNER_PINS`; return its python."""
    return build_venv(VENV, RUNNER_PINS)


def run_in_runner(source: Path, formats=FORMATS) -> dict:
    """Load and test ``source`` with the runner's versions; the per-format statuses."""
    return run_test_model(venv_python(VENV), source, formats)


@pytest.fixture(scope="module")
def runner_python():
    return venv_or_skip(build_runner_venv, VENV, "tests/test_zoo_runner.py")


def _check(result: dict, formats=FORMATS) -> None:
    assert result["load"] == "valid-format", result["load_errors"]
    for fmt in formats:
        assert result[fmt] == "passed", (fmt, result[fmt + "_failed"])


@pytest.mark.slow
def test_runner_versions_installed(runner_python):
    versions = installed_versions(runner_python, ("bioimageio.core", "bioimageio.spec",
                                                  "onnxruntime"))
    assert versions == {"bioimageio.core": "0.10.4", "bioimageio.spec": "0.5.10.2",
                        "onnxruntime": "1.20.1"}


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
