"""Issue 20: following the image through `automask(image)` enters each module once.

Every call made while `automask` runs is recorded with the chain of napari_sam modules on
the stack (consecutive frames of one module merged). The default path of the bundled model
(AIS) enters every module once, strictly. In the prompt modes (AMG, APG) the workflow's
modules are entered once too; what comes back is inside the model: the inference session
(`runtime.kernels.derived`, `runtime.session`) calls the maker a model module gave it for a
cached tensor, and the fast two-way transformer (`runtime.two_way`) calls the attention
modules of `model.transformer`, by design.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest

from napari_sam import automask, load_model

MODEL_SIDE = ("napari_sam.model", "napari_sam.runtime")


def _chains(run) -> list:
    chains = set()

    def profile(frame, event, arg):
        if event != "call":
            return
        chain, f = [], frame
        while f is not None:
            name = f.f_globals.get("__name__", "")
            if name.startswith("napari_sam") and (not chain or chain[-1] != name):
                chain.append(name)
            f = f.f_back
        chains.add(tuple(reversed(chain)))

    sys.setprofile(profile)
    try:
        run()
    finally:
        sys.setprofile(None)
    return sorted(chains, key=len)


def _reentered(chain) -> bool:
    return len(set(chain)) != len(chain)


@pytest.fixture(scope="module")
def bundled():
    return load_model("bundled")


@pytest.fixture(scope="module")
def image():
    return (np.random.default_rng(0).random((300, 300)) * 255).astype(np.uint8)


def test_the_default_path_enters_every_module_once(bundled, image):
    chains = _chains(lambda: automask(image, bundled, diameter=12))
    assert max(len(c) for c in chains) >= 8  # the recording reached the model's modules
    assert any("napari_sam.automask.ais" in c for c in chains)
    bouncing = [c for c in chains if _reentered(c)]
    assert bouncing == [], " -> ".join(bouncing[0])


@pytest.mark.parametrize("mode", ["amg", "apg"])
def test_prompt_modes_enter_each_workflow_module_once(bundled, image, mode):
    chains = _chains(lambda: automask(image, bundled, mode=mode, diameter=12))
    assert any(f"napari_sam.automask.{mode}" in c for c in chains)
    workflow = [tuple(m for m in c if not m.startswith(MODEL_SIDE)) for c in chains]
    bouncing = [c for c in workflow if _reentered(c)]
    assert bouncing == [], " -> ".join(bouncing[0])


def test_the_check_sees_a_callback_into_a_module_on_the_stack():
    from napari_sam.automask import tile_jobs

    # tile_jobs.map_tiles hands tile_jobs.run_tiles to tiled.distributed, which calls it
    # back: tile_jobs, distributed, tile_jobs (why automask.tiled calls the scheduler itself)
    # a stand-in for run_tiles that lives in tile_jobs' namespace, as the real one does
    namespace = vars(tile_jobs)
    exec("def _stand_in(job, batch):\n    return [(tuple(i), 0) for i in batch]\n", namespace)
    original = tile_jobs.run_tiles
    tile_jobs.run_tiles = namespace["_stand_in"]
    try:
        chains = _chains(lambda: tile_jobs.map_tiles(None, [(0, 0)], None))
    finally:
        tile_jobs.run_tiles = original
        del namespace["_stand_in"]
    assert ("napari_sam.automask.tile_jobs", "napari_sam.tiled.distributed",
            "napari_sam.automask.tile_jobs") in chains
    assert any(_reentered(c) for c in chains)
    assert not _reentered(("a", "b", "c")) and _reentered(("a", "b", "a"))
