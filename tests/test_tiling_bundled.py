"""Tiling with real segmentation behaviour: the trained bundled model (skipped until its
weights exist). The mechanisms are tested with stubs in test_tiling.py and
test_tiling_automask.py; these check that the model and the mechanisms work together."""

from __future__ import annotations

import numpy as np
import pytest

from napari_sam.tiled import TiledPredictor, TileGrid
from napari_sam.automask import tiled_automask
from napari_sam.training.synthetic import nuclei_image
from bundled_status import accuracy_goal, needs_bundled

pytestmark = [needs_bundled]


@pytest.fixture(scope="module")
def model():
    from napari_sam import load_model

    return load_model("bundled", "cpu")


def iou(a, b):
    return (a & b).sum() / max((a | b).sum(), 1)


def fibre_scene(angle: float, seed: int = 0):
    """A bright elongated object (about 600 x 50 pixels) across a 3 x 3 grid of 256-pixel
    tiles, on a noisy background with a few nuclei-sized blobs."""
    h = w = 640
    rng = np.random.default_rng(seed)
    rr, cc = np.mgrid[:h, :w].astype(np.float64)
    y, x = rr - 320, cc - 320
    c, s = np.cos(angle), np.sin(angle)
    u, v = c * x + s * y, -s * x + c * y
    obj = (u / 300) ** 2 + (v / 25) ** 2 <= 1
    img = 0.1 + 0.6 * obj + rng.normal(0, 0.03, (h, w))
    for _ in range(12):  # distractors away from the object
        py, px = rng.uniform(20, 620, 2)
        blob = (rr - py) ** 2 + (cc - px) ** 2 <= 12 ** 2
        if not (blob & obj).any():
            img = np.where(blob, 0.5, img)
    return (np.clip(img, 0, 1) * 4000 + 100).astype(np.uint16), obj


@accuracy_goal
def test_object_longer_than_a_tile_comes_back_whole(model):
    img, obj = fibre_scene(np.pi / 5)  # diagonal: through corners of tiles
    tp = TiledPredictor(model, img, tile_size=256, overlap=64)
    assert tp.grid.grid_shape == (3, 3)
    click = [[320, 320]]
    whole = tp.predict(points=click).to_full(img.shape)
    one = TiledPredictor(embeddings=tp.embeddings, max_tiles=1).predict(points=click)
    assert iou(whole, obj) >= 0.85
    assert iou(whole, obj) > iou(one.to_full(img.shape), obj) + 0.2  # the anchor alone is cut


def test_tiled_automask_splits_no_object_at_seams(model):
    img, truth = nuclei_image(5, size=(440, 640))
    grid = TileGrid(truth.shape, 256, 64)
    res = tiled_automask(img, model, tile_size=256, overlap=64, points_per_side=12)
    lab = res.labels
    # true objects crossing a seam: pixels in the cores of two or more tiles
    owner = np.zeros(truth.shape, np.int32)
    for k, t in enumerate(grid):
        owner[t.core[0]:t.core[2], t.core[1]:t.core[3]] = k
    crossing = [i for i in range(1, truth.max() + 1)
                if len(np.unique(owner[truth == i])) > 1]
    assert len(crossing) >= 5
    found = split = 0
    for i in crossing:
        m = truth == i
        ids, n = np.unique(lab[m], return_counts=True)
        n, ids = n[ids > 0], ids[ids > 0]
        big = ids[n >= 0.2 * m.sum()]
        found += len(big) >= 1
        split += len(big) >= 2
    assert found >= 0.6 * len(crossing)  # the model finds most of them
    assert split == 0


def test_large_instance_tiles_match_model_input_tiles(model):
    """AIS on 768-px tiles (the bundled model's encoder and head have no fixed positions)
    finds the same nuclei as on 256-px tiles, with about a third of the tiles."""
    from napari_sam.automask import AutoSegmenter
    from napari_sam.automask.tiled import AISSegmenter
    from napari_sam.scale import AIS_TILE_INPUT, tiled_plan
    from napari_sam.training.evaluate import match_f1

    img, truth = nuclei_image(7, size=(520, 600))
    seg = AutoSegmenter(model, diameter=24)
    labels = seg(img).labels
    plan = seg.last_plan
    assert plan.tiled and plan.tile_input == AIS_TILE_INPUT
    assert plan.zoom == pytest.approx(AIS_TILE_INPUT / plan.tile)
    small = tiled_plan(model, 24)
    assert small.tile_input is None and small.zoom == pytest.approx(plan.zoom, rel=0.02)
    ref = tiled_automask(img, model, tile_size=small.tile, overlap=small.overlap,
                         segmenter=AISSegmenter(min_area=20))
    big = tiled_automask(img, model, tile_size=plan.tile, overlap=plan.overlap,
                         tile_input=plan.tile_input, segmenter=AISSegmenter(min_area=20))
    assert big.tiles_used * 2 <= ref.tiles_used
    f_big, f_ref = match_f1(big.labels, truth), match_f1(ref.labels, truth)
    for k in ("f1@0.5", "f1@0.75"):
        assert f_big[k] >= f_ref[k] - 0.02, (k, f_big, f_ref)
    assert match_f1(labels, truth)["f1@0.5"] >= 0.9
    # an image narrower than a large tile gets tiles that fit it (no padding)
    narrow = tiled_plan(model, 24, AIS_TILE_INPUT, (300, 2000))
    assert narrow.tile <= 300 and narrow.tile_input % 64 == 0
    assert 256 <= narrow.tile_input < AIS_TILE_INPUT


def test_prompt_modes_keep_model_input_tiles(model):
    from napari_sam.automask import AutoSegmenter

    img, _ = nuclei_image(7, size=(520, 600))
    for mode in ("apg", "amg"):
        seg = AutoSegmenter(model, mode=mode, diameter=24)
        assert seg.plan(img).tile_input is None, mode
