"""Architecture study for network v2 (issue #12): phase, halo, cost, export and quality of candidates.

Data (once, a few minutes each):

    python3 -m srunet simulate /tmp/arch/data --pairs 200 --seed 0 --workers 1
    python3 -m srunet simulate /tmp/arch/heldout --pairs 12 --seed 900000 --workers 1

Study (trains every candidate with the same data, seed and step budget, then measures it; one
JSON per candidate goes to --out, and the markdown table is printed at the end):

    python3 bench/arch_study.py --data /tmp/arch/data --heldout /tmp/arch/heldout \
        --out /tmp/arch/results --steps 400 --candidates atrous_blur,atrous_resize,atrous_ps,baseline,atrous_blur_wide

    python3 bench/arch_study.py --out /tmp/arch/results --table   # table from stored JSONs only
    python3 bench/arch_study.py --heldout /tmp/arch/heldout --restate   # see restate()

Quality is scored as the README scores it (``srunet.evaluation.metrics``: PSNR after the
gain/offset fit with the target's robust range, against ``upsample_bicubic``); results recorded
before that (docs/architecture_study.md) are put on that scale with ``--restate``.

Candidates
----------
baseline            released ``srunet.model.unet.SRUNet`` as of commit b3053ee (read with
                    ``git show``; max pooling, depth 3, 24 channels, PixelShuffle head).
atrous_ps           phase-free body of ``model/unet.py`` (dilation 2**level at full
                    resolution, 24 channels) with the baseline's PixelShuffle head.
atrous_blur         ``model/unet.py`` as shipped: same body, ICNR-initialised PixelShuffle
                    head followed by a fixed 3x3 binomial anti-imaging low-pass at the output
                    resolution.
atrous_resize       same body, resize-convolution head: bilinear 2x of the features, then two
                    3x3 convolutions at the output resolution.
atrous_blur_wide    atrous_blur with depth 4 and 32 channels (wider and deeper).
atrous_resize_wide  atrous_resize with depth 4 and 32 channels.

Training uses one thread (``torch.set_num_threads(1)``) to leave a core to other work; the
throughput measurement uses two. The machine may be shared, so absolute timings are indicative.
``measure_halo`` is a pure function meant to move into the package later. Recorded results and
their discussion: docs/architecture_study.md (400 steps took 3.5 to 16 minutes per candidate on a
shared 2-core machine, about 50 minutes for the five).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import tifffile
import torch
import torch.nn.functional as F
from torch import nn

from common import (band_power, export_errors, flops_per_output_pixel, measure_halo,
                    predict_numpy, throughput, tile_offset_error)
from srunet.evaluation.metrics import all_metrics, fit_gain_offset, robust_range, upsample_bicubic
from srunet.model import unet as unet_v2  # the v2 architecture, shipped as model/unet.py
from srunet.model.package import measured_radius
from srunet.normalization import normalize, robust_percentiles

PERCENTILES = (1.0, 99.8)  # the study's input and target normalisation (v1's percentiles method)


# ----------------------------------------------------------------------------- candidates
# The released pooling UNet as of this commit (model/unet.py). The working tree's
# srunet.model.unet may already be v2, so the baseline is read from git, pinned.
BASELINE_COMMIT = "b3053ee"


def _import_baseline() -> type:
    """Released (pooling) SRUNet: model/unet.py at BASELINE_COMMIT, else the installed one if it
    is still the pooling UNet."""
    import subprocess
    import types

    repo = Path(__file__).resolve().parent.parent
    try:
        source = subprocess.run(["git", "-C", str(repo), "show", f"{BASELINE_COMMIT}:model/unet.py"],
                                check=True, capture_output=True, text=True).stdout
        module = types.ModuleType("baseline_unet")
        exec(compile(source, f"{BASELINE_COMMIT}:model/unet.py", "exec"), module.__dict__)
        return module.SRUNet
    except (OSError, subprocess.CalledProcessError):
        from srunet.model.unet import SRUNet

        if not hasattr(SRUNet(), "downs"):
            raise RuntimeError("srunet.model.unet is no longer the pooling baseline and git is unavailable")
        return SRUNet


class ResizeConvHead(nn.Module):
    """Resize-convolution head: bilinear 2x of the features (align_corners=False), then two 3x3
    convolutions at the output resolution."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, in_channels, 3, padding=1)
        self.act = nn.LeakyReLU(0.1)
        self.to_output = nn.Conv2d(in_channels, out_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
        return self.to_output(self.act(self.conv(x)))


def pixel_shuffle_head(in_channels: int, out_channels: int) -> nn.Module:
    """Baseline head: 3x3 conv, LeakyReLU, 3x3 conv to 4*C, PixelShuffle(2); default init, no
    low-pass (the release head without ICNR and anti-imaging; layers built in the same order, so
    the study's random initialisation is unchanged)."""
    return nn.Sequential(nn.Conv2d(in_channels, in_channels, 3, padding=1), nn.LeakyReLU(0.1),
                         nn.Conv2d(in_channels, 4 * out_channels, 3, padding=1),
                         nn.PixelShuffle(2))


# The recorded runs built a ResizeConvHead before each shuffle head; building (and dropping) it
# here too keeps the random initialisation, hence the numbers, reproducible.
class WithResizeHead(unet_v2.SRUNet):
    """unet_v2 body with the resize-convolution head."""

    def make_head(self, in_channels: int, out_channels: int) -> nn.Module:
        return ResizeConvHead(in_channels, out_channels)

    def receptive_radius(self) -> int:
        # bilinear 2x then r = 2 output px of convs: ceil((r + 1) / 2) = 2 input px, not 2 + 1.
        return super().receptive_radius() - 3 + 2


class WithShuffleHead(unet_v2.SRUNet):
    """unet_v2 body with the baseline's plain PixelShuffle head (no ICNR, no low-pass)."""

    def make_head(self, in_channels: int, out_channels: int) -> nn.Module:
        ResizeConvHead(in_channels, out_channels)  # dropped; see the comment above
        return pixel_shuffle_head(in_channels, out_channels)

    def receptive_radius(self) -> int:
        return super().receptive_radius() - 1  # no 3-tap low-pass


class AsShipped(unet_v2.SRUNet):
    """unet_v2.SRUNet exactly (same modules and state dict), initialised as in the recorded runs."""

    def make_head(self, in_channels: int, out_channels: int) -> nn.Module:
        ResizeConvHead(in_channels, out_channels)  # dropped; see the comment above
        return super().make_head(in_channels, out_channels)


def build(name: str) -> nn.Module:
    if name == "baseline":
        return _import_baseline()(depth=3, base_channels=24)
    if name == "atrous_ps":
        return WithShuffleHead(depth=3, base_channels=24)
    if name == "atrous_blur":
        return AsShipped(depth=3, base_channels=24)
    if name == "atrous_resize":
        return WithResizeHead(depth=3, base_channels=24)
    if name == "atrous_blur_wide":
        return AsShipped(depth=4, base_channels=32)
    if name == "atrous_resize_wide":
        return WithResizeHead(depth=4, base_channels=32)
    raise ValueError(f"unknown candidate {name}")


# ----------------------------------------------------------------------------- data
def load_pairs(folder: Path) -> list[tuple[np.ndarray, np.ndarray]]:
    pairs = []
    for lr_path in sorted((folder / "lr").glob("*.tif*")):
        lr = tifffile.imread(lr_path).astype(np.float32)
        hr = tifffile.imread(folder / "hr" / lr_path.name).astype(np.float32)
        assert hr.shape == (2 * lr.shape[0], 2 * lr.shape[1]), (lr_path, lr.shape, hr.shape)
        pairs.append((normalize(lr, *robust_percentiles(lr, PERCENTILES)),
                      normalize(hr, *robust_percentiles(hr, PERCENTILES))))
    if not pairs:
        raise FileNotFoundError(f"no lr/*.tif in {folder}")
    return pairs


def sample_batch(pairs, rng: np.random.Generator, batch: int, tile: int):
    """Random LR tiles (and the matching 2x HR tiles) with a random dihedral transform each."""
    xs, ys = [], []
    for _ in range(batch):
        lr, hr = pairs[rng.integers(len(pairs))]
        i = rng.integers(lr.shape[0] - tile + 1)
        j = rng.integers(lr.shape[1] - tile + 1)
        x = lr[i : i + tile, j : j + tile]
        y = hr[2 * i : 2 * (i + tile), 2 * j : 2 * (j + tile)]
        k, flip = int(rng.integers(4)), bool(rng.integers(2))
        x, y = np.rot90(x, k), np.rot90(y, k)
        if flip:
            x, y = x[:, ::-1], y[:, ::-1]
        xs.append(x.copy())
        ys.append(y.copy())
    return torch.from_numpy(np.stack(xs)[:, None]), torch.from_numpy(np.stack(ys)[:, None])


# ----------------------------------------------------------------------------- training
def train(model: nn.Module, pairs, steps: int, seed: int, batch: int, tile: int, lr: float) -> dict:
    """AdamW + linear warmup (5 %) + cosine decay to 1 % of lr, MSE on normalised HR."""
    torch.set_num_threads(1)
    rng = np.random.default_rng(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    warmup = max(1, steps // 20)

    def schedule(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, steps - warmup)
        return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * progress))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    model.train()
    losses, start = [], time.perf_counter()
    for step in range(steps):
        x, y = sample_batch(pairs, rng, batch, tile)
        loss = F.mse_loss(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        losses.append(loss.item())
        if (step + 1) % 50 == 0:
            print(f"  step {step + 1}/{steps} loss {np.mean(losses[-50:]):.5f} "
                  f"({time.perf_counter() - start:.0f} s)", flush=True)
    model.eval()
    return {"steps": steps, "seed": seed, "batch": batch, "tile": tile, "lr": lr,
            "train_wall_s": time.perf_counter() - start,
            "final_loss": float(np.mean(losses[-50:]))}


# ----------------------------------------------------------------------------- measurements
def quality(model: nn.Module, heldout) -> dict:
    """Held-out PSNR and its gain over bicubic on the README's scale (``all_metrics``: gain/offset
    fit, the target's robust data range; bicubic = ``upsample_bicubic``, what `srunet evaluate`
    reports), and spectral power ratios vs the HR target: band A between the input and output
    Nyquist (0.25..0.5 cycles/output px), band B its upper half (0.375..0.5), where PixelShuffle
    images and noise show up."""
    predict = predict_numpy(model)
    gains, psnrs, ssims, ratio_a, ratio_b, bic_a, bic_b = [], [], [], [], [], [], []
    for lr, hr in heldout:
        sr, bicubic = predict(lr), upsample_bicubic(lr)
        scores = all_metrics(hr, sr)
        gains.append(scores["psnr"] - all_metrics(hr, bicubic)["psnr"])
        psnrs.append(scores["psnr"])
        ssims.append(scores["ssim"])
        fitted, fitted_bic = fit_gain_offset(hr, sr), fit_gain_offset(hr, bicubic)
        ratio_a.append(band_power(fitted, 0.25, 0.5) / band_power(hr, 0.25, 0.5))
        ratio_b.append(band_power(fitted, 0.375, 0.5) / band_power(hr, 0.375, 0.5))
        bic_a.append(band_power(fitted_bic, 0.25, 0.5) / band_power(hr, 0.25, 0.5))
        bic_b.append(band_power(fitted_bic, 0.375, 0.5) / band_power(hr, 0.375, 0.5))
    return {"psnr": float(np.mean(psnrs)), "ssim": float(np.mean(ssims)),
            "gain_db": float(np.mean(gains)),
            "gain_db_min": float(np.min(gains)), "gain_db_max": float(np.max(gains)),
            "band_ratio_nyq": float(np.mean(ratio_a)), "band_ratio_top": float(np.mean(ratio_b)),
            "bicubic_band_ratio_nyq": float(np.mean(bic_a)),
            "bicubic_band_ratio_top": float(np.mean(bic_b))}


def structural(model: nn.Module, image: np.ndarray, prefix: str) -> dict:
    grid = int(getattr(model, "grid", 1))
    radius = int(model.receptive_radius())
    margin = 2 * (radius + grid)
    predict = predict_numpy(model)
    return {
        f"{prefix}tile_offset": tile_offset_error(model, image, margin),
        f"{prefix}halo_1e-5": measure_halo(predict, image, 1e-5, step=grid),
    } | ({} if prefix else {"halo_1e-6": measure_halo(predict, image, 1e-6, step=grid)})


# ----------------------------------------------------------------------------- restating
def restate(heldout) -> dict:
    """Offsets that put the recorded table (docs/architecture_study.md) on the README's scale.

    The recorded runs scored PSNR with data range 1 on the (1, 99.8)-normalised target and used
    torch's bicubic (``align_corners=False``) as the baseline. Every PSNR of an image is fitted
    to the same target, so per image the README's PSNR = recorded PSNR + 20 log10(R) (R: robust
    range of the normalised target) and the README's gain = recorded gain + (PSNR of torch's
    bicubic - PSNR of ``upsample_bicubic``, same scale): mean offsets that hold for every
    candidate. ``bicubic_torch_psnr_recorded_scale`` must reproduce the recorded runs' baseline
    (their PSNR minus their gain) for the held-out set to be theirs.
    """
    import torch.nn.functional as F

    psnr_offsets, gain_offsets, torch_psnrs, ratios = [], [], [], {"torch": [], "package": []}
    for lr, hr in heldout:
        with torch.no_grad():
            torch_bicubic = F.interpolate(torch.from_numpy(lr)[None, None], scale_factor=2.0,
                                          mode="bicubic", align_corners=False)[0, 0].numpy()
        package_bicubic = upsample_bicubic(lr)
        torch_psnrs.append(all_metrics(hr, torch_bicubic)["psnr"] - 20 * math.log10(robust_range(hr)))
        psnr_offsets.append(20 * math.log10(robust_range(hr)))
        gain_offsets.append(all_metrics(hr, torch_bicubic)["psnr"] - all_metrics(hr, package_bicubic)["psnr"])
        for name, image in (("torch", torch_bicubic), ("package", package_bicubic)):
            fitted = fit_gain_offset(hr, image)
            ratios[name].append((band_power(fitted, 0.25, 0.5) / band_power(hr, 0.25, 0.5),
                                 band_power(fitted, 0.375, 0.5) / band_power(hr, 0.375, 0.5)))
    return {"images": len(heldout),
            "bicubic_torch_psnr_recorded_scale": float(np.mean(torch_psnrs)),
            "psnr_offset_db": float(np.mean(psnr_offsets)),
            "gain_offset_db": float(np.mean(gain_offsets)),
            "gain_offset_db_min": float(np.min(gain_offsets)),
            "gain_offset_db_max": float(np.max(gain_offsets)),
            "bicubic_band_ratio_torch": np.mean(ratios["torch"], axis=0).tolist(),
            "bicubic_band_ratio_package": np.mean(ratios["package"], axis=0).tolist()}


# ----------------------------------------------------------------------------- main
def run_candidate(name: str, args, pairs, heldout) -> dict:
    torch.manual_seed(args.seed)
    model = build(name).eval()
    probe = heldout[0][0]
    result = {"name": name, "params": sum(p.numel() for p in model.parameters()),
              "grid": int(getattr(model, "grid", 1)), "radius_formula": int(model.receptive_radius())}
    torch.set_num_threads(1)
    result["radius_gradient"] = measured_radius(model)
    result["flops_per_out_px"] = flops_per_output_pixel(model)
    result.update(structural(model, probe, "init_"))
    print(f"{name}: init {json.dumps(result)}", flush=True)
    result.update(train(model, pairs, args.steps, args.seed, args.batch, args.tile, args.lr))
    torch.save(model.state_dict(), args.out / f"{name}.pt")
    result.update(structural(model, probe, ""))
    result.update(quality(model, heldout))
    result["mpx_per_s_2threads"] = throughput(model)
    result.update(export_errors(model, name, args.out))
    (args.out / f"{name}.json").write_text(json.dumps(result, indent=1))
    print(f"{name}: {json.dumps(result)}", flush=True)
    return result


def table(results: list[dict]) -> str:
    def fmt(value, spec):
        return "n/a" if value is None else format(value, spec)

    rows = ["| candidate | params | grid | radius formula / gradient | halo 1e-5 (1e-6) | tile-offset init / trained "
            "| kFLOP/out px | out Mpx/s (2 thr) | jit / onnx max rel err (97x131, 33x17) "
            "| PSNR dB | gain vs bicubic dB (min..max) | band power SR/HR 0.25-0.5 (0.375-0.5) | train s (steps) |",
            "|" + "---|" * 13]
    for r in results:
        export = max(r[k] for k in r if k.startswith(("jit_", "onnx_")))
        rows.append(
            f"| {r['name']} | {r['params']:,} | {r['grid']} | {r['radius_formula']} / {r['radius_gradient']} "
            f"| {fmt(r['halo_1e-5'], 'd')} ({fmt(r['halo_1e-6'], 'd')}) "
            f"| {r['init_tile_offset']:.1e} / {r['tile_offset']:.1e} | {r['flops_per_out_px'] / 1e3:.0f} "
            f"| {r['mpx_per_s_2threads']:.2f} | {export:.0e} | {r['psnr']:.2f} "
            f"| {r['gain_db']:+.2f} ({r['gain_db_min']:+.2f}..{r['gain_db_max']:+.2f}) "
            f"| {r['band_ratio_nyq']:.2f} ({r['band_ratio_top']:.2f}) | {r['train_wall_s']:.0f} ({r['steps']}) |")
    if results:
        r = results[0]
        rows.append(f"\nbicubic band power ratio: {r['bicubic_band_ratio_nyq']:.2f} ({r['bicubic_band_ratio_top']:.2f})")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("/tmp/arch/data"))
    parser.add_argument("--heldout", type=Path, default=Path("/tmp/arch/heldout"))
    parser.add_argument("--out", type=Path, default=Path("/tmp/arch/results"))
    parser.add_argument("--candidates", default="atrous_blur,atrous_resize,atrous_ps,baseline,atrous_blur_wide")
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--tile", type=int, default=96)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--table", action="store_true", help="only print the table of stored results")
    parser.add_argument("--restate", action="store_true",
                        help="only print the offsets that put results recorded before the study "
                             "used the package's metrics on the README's scale (needs --heldout)")
    args = parser.parse_args()
    if args.restate:
        print(json.dumps(restate(load_pairs(args.heldout)), indent=1))
        return
    args.out.mkdir(parents=True, exist_ok=True)
    names = args.candidates.split(",")
    if not args.table:
        pairs, heldout = load_pairs(args.data), load_pairs(args.heldout)
        for name in names:
            run_candidate(name, args, pairs, heldout)
    results = [json.loads((args.out / f"{n}.json").read_text()) for n in names if (args.out / f"{n}.json").exists()]
    print(table(results))


if __name__ == "__main__":
    main()
