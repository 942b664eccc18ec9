"""Tiled automask: seams, resume, foreground, on-disk output (stub segmenter + tiny model)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_sam import build_model
from napari_sam.tiled import TileGrid
from napari_sam.automask import tiled_automask
from napari_sam.training.synthetic import nuclei_image


class TruthSegmenter:
    """Stands in for automask on one tile: the true objects visible in the tile's window,
    clipped to it and numbered 1..n, as a perfect model that sees only that tile answers.
    Everything the stitching does with them is the real code."""

    def __init__(self, truth):
        self.truth = truth
        self.calls = 0

    def settings(self):
        return {"segmenter": "truth"}

    def __call__(self, emb, tile):
        self.calls += 1
        crop = self.truth[tile.slices]
        ids, inv = np.unique(crop, return_inverse=True)
        lab = inv.reshape(crop.shape).astype(np.uint32)
        if ids[0] != 0:
            lab += 1
        n = int(lab.max())
        return lab, [{"id": i, "predicted_iou": 1.0, "stability": 1.0} for i in range(1, n + 1)]


def ellipse(shape, centre, radii):
    rr, cc = np.ogrid[:shape[0], :shape[1]]
    return ((rr - centre[0]) / radii[0]) ** 2 + ((cc - centre[1]) / radii[1]) ** 2 <= 1


@pytest.fixture(scope="module")
def scene():
    """Nuclei several tiles wide (600 x 900 -> 3 x 5 tiles of 256), plus one object larger
    than a tile and one wider than the overlap, so every stitching case occurs."""
    img, truth = nuclei_image(3, size=(600, 900))
    truth = truth.astype(np.int64)
    big = ellipse(truth.shape, (300, 420), (170, 120))     # larger than a tile's view
    wide = ellipse(truth.shape, (120, 760), (40, 90))      # wider than the overlap
    truth[big] = truth.max() + 1
    truth[wide] = truth.max() + 1
    from skimage.segmentation import relabel_sequential

    truth = relabel_sequential(truth)[0]
    return img, truth


def split_and_double(pred, truth):
    """(true objects split into several labels, labels covering several true objects):
    counted among pieces of at least 10% of the smaller object."""
    both = (pred > 0) & (truth > 0)
    pairs, inter = np.unique(np.stack([truth[both], pred[both]]), axis=1, return_counts=True)
    at = np.bincount(truth.ravel())
    ap = np.bincount(pred.ravel())
    big = inter >= 0.1 * np.minimum(at[pairs[0]], ap[pairs[1]])
    t, p = pairs[0][big], pairs[1][big]
    split = sum(np.count_nonzero(t == i) > 1 for i in np.unique(t))
    double = sum(np.count_nonzero(p == j) > 1 for j in np.unique(p))
    return split, double


def same_partition(a, b):
    """True when a and b are the same label image up to renumbering."""
    if ((a > 0) != (b > 0)).any():
        return False
    pairs = np.unique(np.stack([a[a > 0], b[b > 0]]), axis=1)
    return len(np.unique(pairs[0])) == len(np.unique(pairs[1])) == pairs.shape[1]


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model("test_vit")


def test_objects_across_seams_come_back_whole_and_once(scene, model):
    img, truth = scene
    grid = TileGrid(truth.shape, 256, 64)
    assert grid.grid_shape == (3, 5)
    # the scene has objects cut by seams: visible in several windows
    cut = sum(1 for i in range(1, truth.max() + 1)
              if sum((truth[t.slices] == i).any() for t in grid) > 1)
    assert cut >= 10
    seg = TruthSegmenter(truth)
    res = tiled_automask(img, model, tile_size=256, overlap=64, segmenter=seg)
    assert seg.calls == 15 and res.labels.dtype == np.uint32
    assert split_and_double(res.labels, truth) == (0, 0)
    assert same_partition(res.labels, truth)
    # records: one per id, 1..N, measured on the stitched image
    assert [r["id"] for r in res.records] == list(range(1, truth.max() + 1))
    areas = np.bincount(res.labels.ravel())[1:]
    assert [r["area"] for r in res.records] == areas.tolist()
    r = res.records[int(res.labels[300, 420]) - 1]
    assert r["bbox"] == [130, 300, 471, 541] and r["predicted_iou"] == 1.0


def test_without_seam_resolution_objects_are_split_or_doubled(scene, model):
    """The same run with linking disabled: the test above would fail (it detects seams)."""
    img, truth = scene
    res = tiled_automask(img, model, tile_size=256, overlap=64, segmenter=TruthSegmenter(truth),
                         link_iou=1.01)
    split, double = split_and_double(res.labels, truth)
    assert split + double > 0


def test_zarr_output_resume_and_foreground(scene, model, tmp_path):
    img, truth = scene
    out = tmp_path / "labels.zarr"

    class Interrupted(TruthSegmenter):
        def __call__(self, emb, tile):
            if self.calls >= 6:
                raise KeyboardInterrupt
            return super().__call__(emb, tile)

    with pytest.raises(KeyboardInterrupt):
        tiled_automask(img, model, out, tile_size=256, overlap=64, segmenter=Interrupted(truth))
    assert not out.exists() and (tmp_path / "labels.zarr.work").is_dir()
    seg = TruthSegmenter(truth)
    res = tiled_automask(img, model, out, tile_size=256, overlap=64, segmenter=seg)
    assert res.tiles_run == seg.calls == 15 - 6       # resumed
    assert same_partition(np.asarray(res.labels), truth)
    assert not (tmp_path / "labels.zarr.work").exists()  # removed once stitched
    assert res.labels.chunks == (256, 256)
    with pytest.raises(FileExistsError, match="overwrite"):
        tiled_automask(img, model, out, tile_size=256, overlap=64, segmenter=seg)
    # foreground: a coarse mask (1/10 of the resolution) over the left third
    fg = np.zeros((60, 90), bool)
    fg[:, :25] = True
    seg = TruthSegmenter(truth)
    res = tiled_automask(img, model, out, tile_size=256, overlap=64, segmenter=seg,
                         foreground=fg, overwrite=True)
    assert seg.calls == res.tiles_used == 6  # two columns of tiles reach x < 250
    assert not np.asarray(res.labels)[:, 600:].any()


def test_with_the_tiny_model_end_to_end(model):
    img, _ = nuclei_image(1, size=(400, 400))
    kw = dict(tile_size=256, overlap=64, points_per_side=3, pred_iou_thresh=0,
              stability_thresh=0, min_candidate_iou=0, min_candidate_stability=0,
              precision="fp32")
    res = tiled_automask(img, model, **kw)
    assert res.labels.shape == (400, 400) and res.grid_shape == (2, 2)
    ids = np.unique(res.labels)
    assert list(ids[ids > 0]) == list(range(1, len(res.records) + 1))
    for r in res.records:
        assert {"predicted_iou", "stability", "centroid", "tile"} <= set(r)


def test_stitch_drops_an_unlinked_duplicate_left_as_a_sliver():
    from napari_sam.tiled.results import MemoryResults
    from napari_sam.tiled.stitch import stitch

    grid = TileGrid((100, 180), 100, 20)           # two tiles, windows overlap on cols 80-99
    assert grid.grid_shape == (1, 2)
    res = MemoryResults((100, 100))
    a = np.zeros((100, 100), np.uint32)
    a[10:20, 85:95] = 1                              # tile (0, 0): the object
    b = np.zeros((100, 100), np.uint32)
    b[14:24, 5:15] = 1                               # tile (0, 1): the same, 4 rows lower
    res.put((0, 0), a, [{}])
    res.put((0, 1), b, [{}])
    for min_visible, n in ((0.5, 1), (0.0, 2)):
        out = np.zeros((100, 180), np.uint32)
        recs = stitch(grid, res, out, link_iou=0.9, min_visible=min_visible)  # no link
        assert len(recs) == n and out.max() == n
    out = np.zeros((100, 180), np.uint32)
    assert len(stitch(grid, res, out, link_iou=0.3)) == 1  # linked: one object


def test_one_tile_equals_plain_automask(model):
    from napari_sam.automask.segmenter import automask

    img, _ = nuclei_image(6, size=(256, 256))
    kw = dict(points_per_side=4, pred_iou_thresh=0, stability_thresh=0, precision="fp32")
    res = tiled_automask(img, model, **kw)
    assert res.grid_shape == (1, 1)
    np.testing.assert_array_equal(res.labels, automask(img, model, diameter="off", **kw))
