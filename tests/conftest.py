"""Shared fixtures and helpers for the core tests (no Qt, no napari)."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest

from napari_sam.runtime.cpu import set_wait_policy

# Before torch is loaded: idle OpenMP threads sleep instead of spinning (unless the caller
# chose a policy). The package no longer sets this on import; on a shared 2-core machine
# spinning threads make multi-threaded tests many times slower (napari_sam/runtime/cpu.py).
set_wait_policy()

from torch import nn  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))  # tests/reference_stub.py

import reference_stub


from testing_utils import randomize_, torch_threads  # noqa: E402,F401


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a module: on a shared 2-core machine, two OpenMP threads
    competing with other processes make tiny models many times slower."""
    with torch_threads(1):
        yield


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
