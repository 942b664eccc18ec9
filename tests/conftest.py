"""Shared fixtures and helpers for the core tests (no Qt, no napari)."""

from __future__ import annotations

import contextlib
import sys
import types
from pathlib import Path

import pytest
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))  # tests/reference_stub.py

import reference_stub


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


@pytest.fixture(scope="session")
def randomize():
    """`randomize_` as a fixture, for tests that prefer not to import conftest."""
    return randomize_


@pytest.fixture(scope="session")
def segment_anything():
    """Meta's reference package, importable through the torchvision stand-in."""
    reference_stub.install()
    import segment_anything as sa

    return sa


@pytest.fixture(scope="session")
def mobile_sam():
    """MobileSAM's reference package (`pip install mobilesam-mirror`), or skip.

    Its TinyViT imports four helpers from timm, and timm cannot be imported here (it
    needs the real torchvision), so a minimal `timm` with just those helpers is registered
    when timm is absent. None of them matters in eval mode: DropPath is the identity,
    trunc_normal_ and register_model only act at construction.
    """
    reference_stub.install()
    try:
        import timm.models.layers  # noqa: F401
    except ImportError:
        _install_timm_shim()
    return pytest.importorskip("mobile_sam")


def _install_timm_shim() -> None:
    if getattr(sys.modules.get("timm"), "_stub", False):
        return

    class DropPath(nn.Module):
        def __init__(self, drop_prob: float = 0.0) -> None:
            super().__init__()
            self.drop_prob = drop_prob

        def forward(self, x):
            if not self.training or not self.drop_prob:
                return x
            keep = 1 - self.drop_prob
            mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
            return x * mask / keep

    timm = types.ModuleType("timm")
    timm._stub = True
    models = types.ModuleType("timm.models")
    layers = types.ModuleType("timm.models.layers")
    registry = types.ModuleType("timm.models.registry")
    layers.DropPath = DropPath
    layers.to_2tuple = lambda x: tuple(x) if isinstance(x, (tuple, list)) else (x, x)
    layers.trunc_normal_ = nn.init.trunc_normal_
    registry.register_model = lambda fn: fn
    timm.models, models.layers, models.registry = models, layers, registry
    sys.modules.update({"timm": timm, "timm.models": models, "timm.models.layers": layers,
                        "timm.models.registry": registry})
