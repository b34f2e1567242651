"""Controls of the invented-detail flag, built as packages and run through `srunet evaluate`.

Each control is a bioimage.io package whose architecture file is the release's ``unet.py`` plus
a small wrapper (torch only) that loads the release's ``weights.pt`` state dict and applies a
fixed post-processing on the output grid:

========================  =========================================================  ========
control                   what the wrapper computes                                  expected
========================  =========================================================  ========
release                   the committed release (``rdf.yaml``), as is                 not flagged
texture05 / texture20     release + a fixed texture beyond the ISM limit (random     flagged
                          plane waves, 0.33-0.5 cycles/px, unit RMS) x 5 % / 20 % of
                          the local brightness above the image mean; the same for
                          every noise draw, as a GAN texture is
sharpen10                 release with the band beyond 139 nm boosted 10x            flagged
lowpass                   release low-passed at the ISM limit (a denoiser, no SR)    not flagged
bicubic                   bicubic 2x of the input (no model)                         not flagged
bicubic_lowpass           bicubic, low-passed at the ISM limit (smoothing only)      not flagged
========================  =========================================================  ========

The packages are written with srunet's own package pieces (``describe``, ``export_weights``:
three weight formats, each checked against eager PyTorch) with the wrapper file standing in for
``unet.py``; ``build_package`` itself builds only the plain ``SRUNet``. The held-out pairs come
from ``srunet simulate DATA --pairs N --seed 900000 --repeats``; the script runs it when DATA
does not exist. ``--sweep`` also prints the flag's detection rate against the sharpening gain
and the texture amplitude (the wrappers run in-process, on the same pairs).

    python bench/flag_controls.py [--data runs/heldout] [--pairs 8] [--out runs/flag_controls]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
RELEASE = REPO / "rdf.yaml"
TEXTURE_BAND = (0.33, 0.5)  # cycles per output pixel; the ISM limit is 42.5/139 = 0.306
WAVES = 256  # plane waves of the texture
KERNEL = 21  # taps of the low-pass filter (output px)
CONTROLS = {  # name: (wrapper kwargs, expected flag)
    "texture05": (dict(post="texture", amount=0.05), True),
    "texture20": (dict(post="texture", amount=0.20), True),
    "sharpen10": (dict(post="sharpen", amount=10.0), True),
    "lowpass": (dict(post="lowpass"), False),
    "bicubic": (dict(post="none", bicubic=True), False),
    "bicubic_lowpass": (dict(post="lowpass", bicubic=True), False),
}

WRAPPER = '''

# ---- QC control (bench/flag_controls.py): the release network plus a fixed post-processing ----


class FlagControl(nn.Module):
    """The release network (or bicubic 2x) followed by one fixed operation on the output grid.

    ``post``: "none", "lowpass" (``lowpass`` kernel), "sharpen" (band above the low-pass boosted
    ``amount``-fold) or "texture" (adds ``amount`` x local brightness above the image mean x a
    fixed unit-RMS sum of plane waves, the ``waves`` buffer: frequency y, x in cycles/px, phase).
    """

    def __init__(self, post: str = "none", amount: float = 0.0, bicubic: bool = False,
                 waves: int = 256, kernel: int = 21, **unet):
        super().__init__()
        self.net = SRUNet(**unet)
        self.in_channels, self.grid = self.net.in_channels, 1
        self.post, self.amount, self.bicubic = post, float(amount), bool(bicubic)
        self.register_buffer("lowpass", torch.zeros(1, 1, kernel, kernel))
        self.register_buffer("smooth", torch.zeros(1, 1, 9, 9))
        self.register_buffer("waves", torch.zeros(waves, 3))

    def receptive_radius(self) -> int:
        extra = (self.lowpass.shape[-1] // 2 + self.smooth.shape[-1] // 2 + 1) // 2 + 1
        return (2 if self.bicubic else self.net.receptive_radius()) + extra

    @staticmethod
    def _filter(y: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
        r = kernel.shape[-1] // 2
        return F.conv2d(F.pad(y, (r, r, r, r), mode="replicate"), kernel)

    def _texture(self, y: torch.Tensor) -> torch.Tensor:
        iy = torch.arange(y.shape[-2], dtype=y.dtype, device=y.device)[:, None]
        ix = torch.arange(y.shape[-1], dtype=y.dtype, device=y.device)[:, None]
        py = 2 * torch.pi * iy * self.waves[:, 0]
        px = 2 * torch.pi * ix * self.waves[:, 1] + self.waves[:, 2]
        # sum_k cos(py_k + px_k), as two matrix products (any size, exportable)
        pattern = torch.cos(py) @ torch.cos(px).T - torch.sin(py) @ torch.sin(px).T
        return pattern * (2.0 / self.waves.shape[0]) ** 0.5

    def upsample(self, x: torch.Tensor) -> torch.Tensor:
        if self.bicubic:
            return F.interpolate(x, scale_factor=2.0, mode="bicubic", align_corners=False)
        return self.net(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.finish(self.upsample(x))

    def finish(self, y: torch.Tensor) -> torch.Tensor:
        if self.post == "lowpass":
            return self._filter(y, self.lowpass)
        if self.post == "sharpen":
            return y + (self.amount - 1.0) * (y - self._filter(y, self.lowpass))
        if self.post == "texture":
            brightness = torch.relu(self._filter(y, self.smooth))
            return y + self.amount * brightness * self._texture(y)
        return y
'''


def lowpass_kernel(cutoff: float = 42.5 / 139.0, size: int = KERNEL) -> np.ndarray:
    """FIR low-pass with its half-power point at ``cutoff`` cycles/px (raised-cosine edge
    0.27-0.34, windowed), sum 1."""
    n = 128
    r = np.hypot(np.fft.fftfreq(n)[:, None], np.fft.fftfreq(n)[None, :])
    low, high = cutoff - 0.035, cutoff + 0.035
    response = np.clip((high - r) / (high - low), 0, 1)
    response = 0.5 - 0.5 * np.cos(np.pi * response)
    kernel = np.fft.fftshift(np.real(np.fft.ifft2(response)))
    c = n // 2
    kernel = kernel[c - size // 2:c + size // 2 + 1, c - size // 2:c + size // 2 + 1]
    kernel *= np.outer(np.hanning(size + 2)[1:-1], np.hanning(size + 2)[1:-1])
    return kernel / kernel.sum()


def buffers(seed: int = 139) -> dict:
    """The wrapper's fixed buffers: low-pass, 9x9 Gaussian (sigma 2 px), texture waves."""
    rng = np.random.default_rng(seed)
    radius = np.sqrt(rng.uniform(TEXTURE_BAND[0] ** 2, TEXTURE_BAND[1] ** 2, WAVES))
    angle = rng.uniform(0, np.pi, WAVES)  # a half plane: cos is even
    waves = np.stack([radius * np.sin(angle), radius * np.cos(angle),
                      rng.uniform(0, 2 * np.pi, WAVES)], axis=1)
    g = np.exp(-np.arange(-4, 5) ** 2 / 8.0)
    smooth = np.outer(g, g) / np.outer(g, g).sum()
    return {name: torch.tensor(value, dtype=torch.float32) for name, value in
            (("lowpass", lowpass_kernel()[None, None]), ("smooth", smooth[None, None]),
             ("waves", waves))}


def wrapper_source(path: Path) -> Path:
    """Write the architecture file: the release's unet.py (torch only) + ``FlagControl``."""
    path.write_text((REPO / "model" / "release" / "unet.py").read_text() + WRAPPER)
    return path


def load_wrapper_class(path: Path):
    spec = importlib.util.spec_from_file_location("flag_control_arch", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.FlagControl


def control_model(source: Path, release: dict, kwargs: dict):
    """A FlagControl holding the release's weights and the fixed buffers, in eval mode."""
    model = load_wrapper_class(source)(**kwargs, **release["model_kwargs"])
    state = {f"net.{k}": v for k, v in release["model_state"].items()} | buffers()
    model.load_state_dict(state)
    return model.eval()


def build_control(name: str, kwargs: dict, out: Path, release: dict) -> Path:
    """Write the control package ``out/name/rdf.yaml`` (three weight formats, release sample)."""
    from bioimageio.spec import save_bioimageio_package_as_folder

    from srunet.model import package as pk
    from srunet.model.predictor import predict_image
    from srunet.tiff import write_tensor_tiff

    staging = out / f".{name}.files"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    # describe() names the architecture file unet.py; here it holds the wrapper as well
    model = control_model(wrapper_source(staging / "unet.py"), release, kwargs)
    blocks = pk.tiling_geometry(model)
    pk.export_weights(model, model.state_dict(), staging, blocks.min)
    lr = np.load(REPO / "model" / "release" / "test_input.npy")[0, 0]
    lr = lr[:pk.largest_block(lr.shape[0], blocks), :pk.largest_block(lr.shape[1], blocks)]
    np.save(staging / "test_input.npy", lr[None, None])
    write_tensor_tiff(staging / "sample_input.tif", lr[None, None])
    (staging / "README.md").write_text(f"# QC control '{name}' of the srunet release\n\n"
                                       f"Built by bench/flag_controls.py: {kwargs}. Not a model.\n")
    shutil.copyfile(REPO / "model" / "release" / "cover.png", staging / "cover.png")
    checkpoint = {"model_kwargs": dict(kwargs, **release["model_kwargs"]),
                  "normalization": release["normalization"]}
    args = dict(arch_sha256=pk._sha256(staging / "unet.py"), publication=pk.project_publication())
    src = lambda file: staging / file  # noqa: E731
    draft = pk.describe(src, checkpoint, blocks, with_test_output=False, **args)
    draft.weights.pytorch_state_dict.architecture.callable = "FlagControl"
    np.save(staging / "test_output.npy", pk._test_output(draft, lr))
    sr = predict_image(draft, lr, weights_format="pytorch_state_dict")
    write_tensor_tiff(staging / "sample_output.tif", sr[None, None])
    descr = pk.describe(src, checkpoint, blocks, **args)
    descr.weights.pytorch_state_dict.architecture.callable = "FlagControl"
    target = out / name
    shutil.rmtree(target, ignore_errors=True)
    written = save_bioimageio_package_as_folder(descr, output_path=target)
    pk.make_runner_compatible(written / "rdf.yaml")
    shutil.rmtree(staging)
    return written / "rdf.yaml"


def evaluate(model: Path, data: Path, report: Path) -> dict:
    """`srunet evaluate` on the held-out folders (two draws each), as a user runs it."""
    command = [str(Path(sys.executable).with_name("srunet")), "evaluate", "--model", str(model),
               "--lr", str(data / "lr"), "--hr", str(data / "hr"),
               "--lr-repeat", str(data / "lr_repeat"), "--hr-repeat", str(data / "hr_repeat"),
               "--out", str(report), "--overwrite"]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return json.loads((report / "report.json").read_text())


def flag_rows(report: dict) -> dict:
    values = [r["invented_detail"]["invented"] for r in report["images"].values()]
    return {"flagged": len(report["overall"]["invented_detail"]), "images": len(values),
            "min": float(np.min(values)), "median": float(np.median(values)),
            "max": float(np.max(values))}


def sweep(data: Path, release: dict, folder: Path) -> None:
    """Detection rate against sharpening gain and texture amplitude (wrappers in-process)."""
    from srunet.evaluation.frc import high_band_fraction, invented_detail
    from srunet.normalization import denormalize, mean_std_range, normalize
    from srunet.tiff import read_image

    source = wrapper_source(folder / "sweep_arch.py")
    model = control_model(source, release, {})
    settings = [("none", 0), ("lowpass", 0)] + [("sharpen", g) for g in (3, 5, 7, 10, 15, 20)] + \
               [("texture", a) for a in (0.02, 0.03, 0.05, 0.1)]
    invented = {setting: [] for setting in settings}
    for path in sorted((data / "lr").glob("*.tif")):
        draws, outputs = [], []
        for sub in ("lr", "lr_repeat"):
            lr = read_image(data / sub / path.name)[0].astype(np.float32)
            low, high = mean_std_range(lr)
            with torch.no_grad():
                y = model.upsample(torch.from_numpy(normalize(lr, low, high))[None, None])
            draws.append((y, low, high))
        hr, hr2 = (read_image(data / sub / path.name)[0] for sub in ("hr", "hr_repeat"))
        for post, amount in settings:
            model.post, model.amount = post, float(amount)
            with torch.no_grad():
                outputs = [denormalize(model.finish(y)[0, 0].numpy(), low, high)
                           for y, low, high in draws]
            result = invented_detail(outputs[0], hr, sr_repeat=outputs[1], hr_repeat=hr2)
            result["single"] = high_band_fraction(outputs[0], pixel_size_nm=42.5)
            invented[(post, amount)].append(result)
    for (post, amount), results in invented.items():
        values, single = [r["invented"] for r in results], [r["single"] for r in results]
        print(f"sweep {post:8s} {amount:<5g} flagged {sum(r['flagged'] for r in results):2d} of "
              f"{len(results)}; invented share min / median / max {np.min(values):.1e} / "
              f"{np.median(values):.1e} / {np.max(values):.1e}; single-image high band "
              f"{np.min(single):.1e} / {np.median(single):.1e} / {np.max(single):.1e}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO / "runs" / "heldout")
    parser.add_argument("--pairs", type=int, default=8, help="pairs to simulate if --data is missing")
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "flag_controls")
    parser.add_argument("--only", nargs="*", help="controls to run (default: all)")
    parser.add_argument("--sweep", action="store_true", help="also the detection-rate sweep")
    args = parser.parse_args()
    from srunet.model.from_package import checkpoint_from_package

    if not (args.data / "lr_repeat").is_dir():
        subprocess.run([str(Path(sys.executable).with_name("srunet")), "simulate", str(args.data),
                        "--pairs", str(args.pairs), "--seed", "900000", "--repeats"], check=True)
    args.out.mkdir(parents=True, exist_ok=True)
    release = checkpoint_from_package(RELEASE)
    rows = {"release": (flag_rows(evaluate(RELEASE, args.data, args.out / "report_release")), False)}
    for name, (kwargs, expected) in CONTROLS.items():
        if args.only and name not in args.only:
            continue
        rdf = build_control(name, kwargs, args.out / "packages", release)
        rows[name] = (flag_rows(evaluate(rdf, args.data, args.out / f"report_{name}")), expected)
    print(f"{'control':16s} {'expected':9s} flagged   invented share: min / median / max")
    for name, (row, expected) in rows.items():
        print(f"{name:16s} {'yes' if expected else 'no':9s} {row['flagged']:2d} of {row['images']:2d}"
              f"   {row['min']:.1e} / {row['median']:.1e} / {row['max']:.1e}")
    (args.out / "summary.json").write_text(json.dumps({k: v[0] for k, v in rows.items()}, indent=2))
    if args.sweep:
        sweep(args.data, release, args.out)


if __name__ == "__main__":
    main()
