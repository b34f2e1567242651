"""The package's three weight formats, written from one network and checked against it.

- ``pytorch_state_dict``: the state dict, loaded by consumers with ``unet.py`` (torch only).
- ``torchscript``: traced, not scripted (scripting fails on the UNet's control flow, see the
  zoo notes in docs/); the padding inside ``forward`` is computed from ``x.shape``, which
  tracing keeps symbolic, so any input size works.
- ``onnx``: the classic exporter with dynamic batch/y/x axes, opset 17 (JDLL runs <= 18).

Both exports are checked against eager PyTorch on odd, off-grid sizes before a package is
written, so a format that silently computes something else never ships.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from srunet.model.unet import SRUNet

INPUT_ID, OUTPUT_ID = "input", "output"
ONNX_OPSET = 17  # JDLL runs opset <= 18
WEIGHT_FILES = {"pytorch_state_dict": "weights.pt", "torchscript": "weights_torchscript.pt",
                "onnx": "weights.onnx"}
_CHECK_SIZES = ((97, 131), (33, 17))  # odd, off-grid sizes: padding inside forward
_CHECK_TOLERANCE = 1e-4  # relative to the eager output's largest magnitude


@contextmanager
def _fresh_jit_names():
    """Trace in a fresh TorchScript namespace with torch's default deterministic-algorithms
    setting, so the same weights give the same file.

    TorchScript registers the class of every traced module in one process-wide compilation
    unit and renames a class it has seen before ("SRUNet" -> "___torch_mangle_55.SRUNet"): a
    second export in the same process (tests, a re-export) would write other class names
    than the first. torch looks that unit up as ``torch.jit._state._python_cu`` each time it
    builds a type, so tracing with a fresh one there names the classes as a fresh process does.
    """
    saved = torch.jit._state._python_cu
    torch.jit._state._python_cu = torch._C.CompilationUnit()
    # The traced code records the global deterministic-algorithms flag in every convolution
    # (training sets it on CPU), so trace with torch's default, whatever the caller set.
    deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(False)
    try:
        yield
    finally:
        torch.jit._state._python_cu = saved
        torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)


def export_weights(model: SRUNet, state: dict, folder: Path, example_size: int) -> None:
    """Write the three weight files into ``folder`` and verify them (:func:`verify_exports`).

    ``example_size`` is the side of the tracing example (the package's smallest block).
    """
    folder = Path(folder)
    torch.save(state, folder / WEIGHT_FILES["pytorch_state_dict"])
    example = torch.rand(1, model.in_channels, example_size, example_size)
    with torch.no_grad():
        with _fresh_jit_names():
            traced = torch.jit.trace(model, example, check_trace=False)
        traced.save(str(folder / WEIGHT_FILES["torchscript"]))
        axes = {0: "batch", 2: "y", 3: "x"}
        torch.onnx.export(model, (example,), str(folder / WEIGHT_FILES["onnx"]), dynamo=False,
                          opset_version=ONNX_OPSET, input_names=[INPUT_ID],
                          output_names=[OUTPUT_ID],
                          dynamic_axes={INPUT_ID: axes, OUTPUT_ID: axes})
    verify_exports(model, folder)


def verify_exports(model: SRUNet, folder: Path) -> None:
    """Check that the torchscript and ONNX files in ``folder`` reproduce ``model`` (eager).

    Raises
    ------
    RuntimeError
        Naming the format, the input size and the shape or relative difference found.
    """
    import onnxruntime

    folder = Path(folder)
    scripted = torch.jit.load(str(folder / WEIGHT_FILES["torchscript"]))
    session = onnxruntime.InferenceSession(str(folder / WEIGHT_FILES["onnx"]),
                                           providers=["CPUExecutionProvider"])
    generator = torch.Generator().manual_seed(0)
    for batch, (height, width) in zip((1, 2), _CHECK_SIZES):
        x = torch.rand(batch, model.in_channels, height, width, generator=generator)
        with torch.no_grad():
            eager = model(x).numpy()
            results = {"torchscript": scripted(x).numpy(),
                       "onnx": session.run(None, {INPUT_ID: x.numpy()})[0]}
        scale = max(float(np.abs(eager).max()), 1e-6)
        for name, result in results.items():
            if result.shape != eager.shape:
                raise RuntimeError(f"{name} export gives shape {result.shape} for input "
                                   f"{tuple(x.shape)}, eager gives {eager.shape}")
            error = float(np.abs(result - eager).max()) / scale
            if error > _CHECK_TOLERANCE:
                raise RuntimeError(f"{name} export differs from eager by {error:.2e} (relative) "
                                   f"on a {height}x{width} input")
