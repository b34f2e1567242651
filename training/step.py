"""One optimizer step, and the speed settings it runs with (``train.amp``, ``train.channels_last``).

Used by the training loop and by ``bench/train_throughput.py``, so the benchmark times the loop's
own step. On the project's 2-core AMD EPYC (AVX512-BF16), release network, batch 8, 96 px tiles
(``bench/train_throughput.py``, a loaded machine): bf16 autocast 1.4x, float32 channels_last
1.4x, both 2.35x faster than float32 NCHW. Both together are not used on a CPU: in torch 2.13's
CPU build (oneDNN) the weight gradient of a *dilated* convolution under bf16 autocast in
channels_last is off by ~95 % or NaN at tiles of 32 px and more (the release network diverges
at its first step), and the release network's backward pass crashes the process (segfault) at
64 px tiles. bf16 NCHW matches float32 to bf16 precision (worst parameter 3 % at 96 px tiles),
float32 channels_last to 2e-4. With both settings on (the defaults), a CPU therefore trains in
float32 channels_last, bit-reproducible and as fast as bf16 NCHW; CUDA uses both.
"""

from __future__ import annotations

import torch

from srunet.training.losses import training_loss


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX via oneDNN).

    Elsewhere bf16 is emulated and slower than float32, so autocast stays off.
    """
    try:
        capability = torch.backends.cpu.get_cpu_capability()
        native = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a build without these probes: stay in float32
        return False
    return native and ("AVX512" in capability or "AMX" in capability)


def autocast_enabled(device: torch.device, amp: bool, channels_last: bool) -> bool:
    """``train.amp`` as it applies on ``device``: on CUDA as set; on a CPU only with native
    bf16 and without channels_last (wrong gradients or a crash in torch 2.13, see above)."""
    if device.type == "cuda":
        return amp
    return amp and device.type == "cpu" and cpu_has_bf16() and not channels_last


def memory_format(channels_last: bool) -> torch.memory_format:
    return torch.channels_last if channels_last else torch.contiguous_format


def to_memory_format(model: torch.nn.Module, channels_last: bool) -> torch.nn.Module:
    """``model`` with its weights in the given memory format (values unchanged, float32).

    Buffers stay in the standard layout: DistributedDataParallel's buffer broadcast refuses a
    channels_last buffer with size-1 dimensions (the head's 1x1x3x3 anti-imaging kernel).
    """
    model = model.to(memory_format=memory_format(channels_last))
    for module in model.modules():
        for name, buffer in module._buffers.items():
            if buffer is not None:
                module._buffers[name] = buffer.clone(memory_format=torch.contiguous_format)
    return model


def to_batch(tiles: torch.Tensor, device: torch.device, channels_last: bool) -> torch.Tensor:
    """A batch of tiles on ``device`` in the network's memory format."""
    tiles = tiles.to(device, non_blocking=True)
    return tiles.contiguous(memory_format=memory_format(channels_last))


def training_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                  lr_tiles: torch.Tensor, hr_tiles: torch.Tensor, train, amp: bool) -> torch.Tensor:
    """Forward and backward (in bf16 autocast when ``amp``), the loss in float32, gradient
    clipping (``train.grad_clip``) and the optimizer step on the float32 weights.

    Returns the loss (a float32 tensor, not read back: that would stall a GPU).
    """
    with torch.autocast(lr_tiles.device.type, dtype=torch.bfloat16, enabled=amp):
        prediction = model(lr_tiles)
    loss = training_loss(prediction.float(), hr_tiles, train)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), train.grad_clip)
    optimizer.step()
    return loss
