"""The package with bioimageio.core 0.9.6, the core BiaPy 3.7.1 pins.

BiaPy (tests/test_biapy.py) loads zoo packages through ``bioimageio.core==0.9.6``, which
resolves to bioimageio.spec 0.5.7.4: a third core/spec pair beside the newest (0.11) and the
bioimage.io upload runner's (0.10.4, tests/test_zoo_runner.py). This runs the committed package
(the root rdf.yaml, whatever the release is after merging) with those versions in an isolated
venv (``consumer_venvs.VENV_ROOT``/core096), built once by :func:`build_core096_venv`
(``python tests/test_core096.py``; .ci/run does it before pytest; ~2 minutes) and reused while
its pins match. If it cannot be built, the tests skip, or fail under CI.
"""

from __future__ import annotations

import sys
import time

import pytest
from consumer_venvs import (REPO_ROOT, VENV_ROOT, build_venv, installed_versions, run_test_model,
                            venv_or_skip)

VENV = VENV_ROOT / "core096"
# BiaPy 3.7.1's pin and what pip resolves beside it (spec 0.5.7.4). pydantic<2.14: with 2.14
# spec 0.5.7.4 rejects every model that has files ("'index_key' is expected to be an integer or
# a string"), as 0.5.10/0.5.12 do. torch 2.13.0: the CPU wheel on this machine (/opt/wheels).
# onnxruntime: core 0.9.6 needs it for the ONNX weights; 1.20.1 as the zoo runner pins.
PINS = ("bioimageio.core==0.9.6", "bioimageio.spec==0.5.7.4", "pydantic<2.14",
        "torch==2.13.0", "onnxruntime==1.20.1")
FORMATS = ("onnx", "torchscript", "pytorch_state_dict")


def build_core096_venv():
    """Create (or reuse) the core 0.9.6 venv with :data:`PINS`; return its python."""
    return build_venv(VENV, PINS)


@pytest.fixture(scope="module")
def core096_python():
    return venv_or_skip(build_core096_venv, VENV, "tests/test_core096.py")


@pytest.mark.slow
def test_core096_versions_installed(core096_python):
    versions = installed_versions(core096_python, ("bioimageio.core", "bioimageio.spec",
                                                   "onnxruntime", "torch"))
    assert versions["bioimageio.core"] == "0.9.6"
    assert versions["bioimageio.spec"] == "0.5.7.4"
    assert versions["onnxruntime"] == "1.20.1"
    assert versions["torch"].startswith("2.13.0")


@pytest.mark.slow
def test_core096_tests_the_committed_package(core096_python):
    """The root rdf.yaml loads (hashes checked) and test_model passes in every weight format."""
    result = run_test_model(core096_python, REPO_ROOT / "rdf.yaml", FORMATS)
    assert result["load"] == "valid-format", result["load_errors"]
    for fmt in FORMATS:
        assert result[fmt] == "passed", (fmt, result[fmt + "_failed"])


if __name__ == "__main__":
    start = time.monotonic()
    python = build_core096_venv()
    print(f"{VENV} ready ({python}), {time.monotonic() - start:.0f} s")
    sys.exit(0)
