"""Helpers shared by the core tests: random weights and thread settings.

A plain module (not conftest) so that test files import it unambiguously:
tests/napari has a conftest of its own.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn


def randomize_(module: nn.Module, seed: int = 0, std: float = 0.2) -> nn.Module:
    """Overwrite every floating parameter and buffer of `module` with seeded random values.

    Everything gets N(0, std), except: Linear/conv weights are scaled down by
    sqrt(fan_in / 64) so that deep full-size models neither explode nor saturate; norm
    scales (LayerNorm, LayerNorm2d, BatchNorm) get 1 + N(0, std); BatchNorm running_var
    is uniform in [0.5, 1.5]. No zeros or ones remain to hide a swapped or ignored tensor.
    Only what goes into the state dict is touched. Deterministic for a given seed and
    module structure.
    """
    gen = torch.Generator().manual_seed(seed)
    weighted = (nn.Linear, nn.modules.conv._ConvNd)
    with torch.no_grad():
        for mod in module.modules():
            is_norm = "norm" in type(mod).__name__.lower()
            own = list(mod.named_parameters(recurse=False)) + [
                (n, b) for n, b in mod.named_buffers(recurse=False)
                if n not in mod._non_persistent_buffers_set]  # pixel_mean, caches: keep
            for name, t in own:
                if not t.is_floating_point():
                    continue  # num_batches_tracked
                val = torch.randn(t.shape, generator=gen) * std
                if name == "running_var":
                    val = 0.5 + torch.rand(t.shape, generator=gen)
                elif isinstance(mod, weighted) and name == "weight":
                    val *= min(1.0, (64 / t[0].numel()) ** 0.5)
                elif is_norm and name == "weight":
                    val += 1
                t.copy_(val.to(t.dtype))
    return module


@contextlib.contextmanager
def torch_threads(n: int):
    """Run with `n` intra-op threads. On a small shared machine small models run far faster
    on one thread: with more, idle workers spin against other processes."""
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)
