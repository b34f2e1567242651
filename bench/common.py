"""Helpers shared by the bench scripts (``from common import ...``: a script run as
``python bench/x.py`` has bench/ on its import path).

Test images (:func:`synthetic_confocal`), torch models as numpy functions, and the measurements
of the architecture study (bench/arch_study.py): tile-offset error, measured halo, FLOPs,
throughput, export agreement and spectral band power. Quality numbers come from the package
(``srunet.evaluation.metrics``: PSNR with the README's data range and gain/offset fit, its
bicubic); the gradient-support radius is ``srunet.model.package.measured_radius``.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn


def synthetic_confocal(size: int, seed: int = 0) -> np.ndarray:
    """A large field tiled from simulated LR images (realistic content, exact size)."""
    from srunet.simulation.simulator import simulate_pair

    tiles = [simulate_pair(seed + k, hr_size=512)["lr"] for k in range(4)]
    reps = -(-size // 256)
    rows = [np.concatenate([tiles[(i + j) % 4] for j in range(reps)], axis=1) for i in range(reps)]
    return np.concatenate(rows, axis=0)[:size, :size]


def predict_numpy(model: nn.Module) -> Callable[[np.ndarray], np.ndarray]:
    def predict(image: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return model(torch.from_numpy(np.ascontiguousarray(image, np.float32))[None, None])[0, 0].numpy()

    return predict


def measure_halo(
    predict_fn: Callable[[np.ndarray], np.ndarray],
    image: np.ndarray,
    tolerance: float = 1e-5,
    crop: int = 32,
    step: int = 1,
    max_halo: int | None = None,
    scale: int = 2,
) -> int | None:
    """Smallest input halo h such that predicting a centre crop with h px of context reproduces
    the whole-image prediction inside the crop.

    Parameters
    ----------
    predict_fn : callable
        Maps a 2D input image to its 2D prediction, ``scale`` times larger per axis.
    image : ndarray
        2D input, large enough that the crop plus ``max_halo`` stays inside it.
    tolerance : float
        Largest accepted max |tile - whole| over the crop, relative to the whole-image output range.
    crop : int
        Side of the centre crop in input pixels.
    step : int
        Halo increment and crop-origin alignment (the network's phase period ``grid``; 1 if
        phase-free), so a phase-dependent network is compared at its own phase.
    max_halo : int, optional
        Largest halo tried; defaults to what fits in the image.

    Returns
    -------
    int or None
        The halo in input pixels, or None if no tried halo meets the tolerance.
    """
    height, width = image.shape
    y0 = (height // 2 - crop // 2) // step * step
    x0 = (width // 2 - crop // 2) // step * step
    if max_halo is None:
        max_halo = min(y0, x0, height - y0 - crop, width - x0 - crop)
    whole = predict_fn(image)
    value_range = float(np.ptp(whole)) or 1.0
    target = whole[scale * y0 : scale * (y0 + crop), scale * x0 : scale * (x0 + crop)]

    def passes(halo: int) -> bool:
        tile = predict_fn(image[y0 - halo : y0 + crop + halo, x0 - halo : x0 + crop + halo])
        inner = tile[scale * halo : scale * (halo + crop), scale * halo : scale * (halo + crop)]
        return np.abs(inner - target).max() / value_range <= tolerance

    # Bisection over multiples of `step`: the tile error shrinks as context is added, so the
    # passing halos form an interval [h, max_halo]. The answer is then checked against h - step
    # and the next two halos, which catches a non-monotone error near the threshold.
    low, high = -1, max_halo // step  # in units of step: low fails (or is -1), high is tried last
    if not passes(high * step):
        return None
    while high - low > 1:
        middle = (low + high) // 2
        if passes(middle * step):
            high = middle
        else:
            low = middle
    halo = high * step
    checks = [h for h in (halo + step, halo + 2 * step) if h <= max_halo]
    if not all(passes(h) for h in checks) or (halo >= step and passes(halo - step)):
        raise RuntimeError("tile error is not monotone in the halo; scan linearly instead")
    return halo


def tile_offset_differences(model: nn.Module, image: np.ndarray, margin: int,
                            shifts=range(1, 8)) -> dict[int, np.ndarray]:
    """For each shift s: |f(x)[2s:, 2s:] - f(x[s:, s:])| over the interior (``margin`` output
    px away from every edge), relative to the output range of f(x). A phase-free 2x network
    gives exactly 0; a pooling one repeats with period ``grid``, so shifts 1..grid-1 show it."""
    predict = predict_numpy(model)
    whole = predict(image)
    value_range = float(np.ptp(whole))
    differences = {}
    for s in shifts:
        shifted = predict(image[s:, s:])
        a = whole[2 * s :, 2 * s :][margin:-margin, margin:-margin]
        b = shifted[margin:-margin, margin:-margin]
        differences[s] = np.abs(a - b) / value_range
    return differences


def tile_offset_error(model: nn.Module, image: np.ndarray, margin: int, shifts=range(1, 8)) -> float:
    """The largest of :func:`tile_offset_differences` over all shifts and pixels."""
    return max(float(d.max()) for d in tile_offset_differences(model, image, margin, shifts).values())


def flops_per_output_pixel(model: nn.Module, size: int = 128) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(torch.zeros(1, 1, size, size))
    return counter.get_total_flops() / (2 * size) ** 2


def throughput(model: nn.Module, size: int = 512, repeats: int = 3) -> float:
    """Output Mpx/s, eval, no grad, 2 threads, median of ``repeats`` after one warm-up."""
    torch.set_num_threads(2)
    x = torch.rand(1, 1, size, size)
    times = []
    with torch.no_grad():
        model(x)
        for _ in range(repeats):
            start = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - start)
    torch.set_num_threads(1)
    return (2 * size) ** 2 / 1e6 / float(np.median(times))


def export_errors(model: nn.Module, name: str, workdir: Path) -> dict:
    """Relative max error of torch.jit.trace and ONNX (opset 17, classic exporter, dynamic
    batch/y/x) against eager on odd sizes; both are traced on a 64x64 input."""
    import onnxruntime as ort

    sizes = [(97, 131), (33, 17)]
    example = torch.rand(1, 1, 64, 64)
    result = {}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(model, example)
        path = workdir / f"{name}.onnx"
        torch.onnx.export(model, (example,), str(path), dynamo=False, opset_version=17,
                          input_names=["input"], output_names=["output"],
                          dynamic_axes={"input": {0: "batch", 2: "y", 3: "x"},
                                        "output": {0: "batch", 2: "y", 3: "x"}})
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    for h, w in sizes:
        x = torch.rand(1, 1, h, w)
        with torch.no_grad():
            eager = model(x)
            jit_out = traced(x)
        scale = float(eager.abs().max())
        key = f"{h}x{w}"
        result[f"jit_{key}"] = (float((jit_out - eager).abs().max()) / scale
                                if jit_out.shape == eager.shape else float("inf"))
        onnx_out = torch.from_numpy(session.run(None, {"input": x.numpy()})[0])
        result[f"onnx_{key}"] = (float((onnx_out - eager).abs().max()) / scale
                                 if onnx_out.shape == eager.shape else float("inf"))
    return result


def band_power(image: np.ndarray, low: float, high: float) -> float:
    """Mean power spectrum (Hann-windowed) over radial frequencies (low, high] in cycles/px."""
    window = np.outer(np.hanning(image.shape[0]), np.hanning(image.shape[1]))
    spectrum = np.abs(np.fft.fft2((image - image.mean()) * window)) ** 2
    fy = np.fft.fftfreq(image.shape[0])[:, None]
    fx = np.fft.fftfreq(image.shape[1])[None, :]
    radius = np.sqrt(fy**2 + fx**2)
    return float(spectrum[(radius > low) & (radius <= high)].mean())
