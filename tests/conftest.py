"""Shared fixtures: one tiny random-weights srunet package per session (folder and zip), and
the simulated pairs and tiny-network settings the training tests share.

Building a package costs ~10 s, so the packages are session-scoped and built without the
internal bioimageio test (the tests run it explicitly).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch


# A tiny network and schedule for training tests (seconds on one core): 4 steps of 4 tiles,
# a validation every 2 steps. Tests add what they need (later overrides win).
TINY_TRAINING = ["model.depth=1", "model.base_channels=4", "data.tile_size=16",
                 "train.batch_size=4", "train.max_steps=4", "train.val_every=2",
                 "train.warmup_steps=2", "data.val_fraction=0.25", "train.threads=1",
                 "train.device=cpu"]


@pytest.fixture
def tiny_training() -> list[str]:
    """``KEY=VALUE`` overrides of a tiny training run (a fresh list per test)."""
    return list(TINY_TRAINING)


@pytest.fixture(scope="session")
def sim_data(tmp_path_factory):
    """Four simulated pairs (3 train, 1 validation with ``data.val_fraction=0.25``)."""
    from srunet.simulation.simulator import simulate_dataset

    root = tmp_path_factory.mktemp("sim") / "pairs"
    simulate_dataset(root, pairs=4, seed=1234, workers=1)
    return root


def structured_pair(seed: int, lr_size: int = 128) -> dict:
    """A smooth random LR/HR pair (HR exactly 2x), a stand-in for the simulator."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    hr = gaussian_filter(rng.random((2 * lr_size, 2 * lr_size)), 2.0) * 1000.0 + 100.0
    lr = hr.reshape(lr_size, 2, lr_size, 2).mean(axis=(1, 3)) + rng.normal(0, 2, (lr_size,) * 2)
    return {"lr": lr.astype(np.float32), "hr": hr.astype(np.float32)}


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """Path of a random-init SRUNet(depth=2, base_channels=8) checkpoint."""
    from srunet.model.unet import SRUNet
    from srunet.model.checkpoint import save_checkpoint

    torch.manual_seed(0)
    kwargs = {"depth": 2, "base_channels": 8}
    model = SRUNet(**kwargs)
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pt", {
        "model_kwargs": kwargs, "model_state": model.state_dict(),
        "normalization": {"method": "mean_std", "eps": 1e-6},
        "config": {}})


@pytest.fixture(scope="session")
def tiny_package(tiny_checkpoint, tmp_path_factory):
    """rdf.yaml of the tiny package written as a folder."""
    from srunet.model.package import build_package

    out = tmp_path_factory.mktemp("pkg") / "tiny"
    return build_package(tiny_checkpoint, out, run_test=False, sample=structured_pair(1))


@pytest.fixture(scope="session")
def tiny_zip(tiny_checkpoint, tmp_path_factory):
    """The tiny package as one zip file."""
    from srunet.model.package import build_package

    out = tmp_path_factory.mktemp("pkgzip") / "tiny.zip"
    return build_package(tiny_checkpoint, out, run_test=False, sample=structured_pair(1))


@pytest.fixture(scope="session")
def tiny_descr(tiny_package):
    from srunet.model.predictor import load_model

    return load_model(tiny_package)


@pytest.fixture(scope="session")
def make_pair():
    """The :func:`structured_pair` factory, for tests that need their own images."""
    return structured_pair
