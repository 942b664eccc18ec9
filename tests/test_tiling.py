"""Tile grid, embedding cache and prompts across tiles (tiny random models and stubs)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from napari_sam import Predictor, build_model
from napari_sam.tiled import CacheMismatchError, TiledEmbeddings, TiledPredictor, TileGrid, default_tiling


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model("test_vit")


@pytest.fixture(scope="module")
def image():
    rng = np.random.default_rng(0)
    img = rng.normal(1000, 50, (600, 900)).astype(np.uint16)
    img[100:300, 200:500] += 2000
    return img


def ellipse(shape, centre, radii):
    rr, cc = np.ogrid[:shape[0], :shape[1]]
    return ((rr - centre[0]) / radii[0]) ** 2 + ((cc - centre[1]) / radii[1]) ** 2 <= 1


# ---- grid ------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(600, 900), (256, 256), (100, 1000), (1000, 257)])
def test_grid_covers_image_and_cores_partition(shape):
    g = TileGrid(shape, 256, 64)
    cover = np.zeros(shape, int)
    owned = np.zeros(shape, int)
    for t in g:
        assert t.shape == (min(256, shape[0]), min(256, shape[1]))
        cover[t.slices] += 1
        owned[t.core[0]:t.core[2], t.core[1]:t.core[3]] += 1
        y0, x0, y1, x1 = t.window
        assert y0 <= t.core[0] < t.core[2] <= y1 and x0 <= t.core[1] < t.core[3] <= x1
    assert cover.min() >= 1 and (owned == 1).all()
    # neighbours overlap by at least `overlap`
    for axis in (0, 1):
        s = g.starts[axis]
        for a, b in zip(s, s[1:]):
            assert a + 256 - b >= 64


def test_grid_owner_and_window_contains_small_objects():
    g = TileGrid((600, 900), 256, 64)
    for r, c in [(0, 0), (599, 899), (213, 207), (214, 208), (300, 450)]:
        t = g.owner(r, c)
        assert t.core[0] <= r < t.core[2] and t.core[1] <= c < t.core[3]
    # any interval of length <= overlap is inside one window
    for a in range(0, 900 - 64):
        assert any(s <= a and a + 64 <= s + 256 for s in g.starts[1])


def test_best_tile_prefers_margin_and_ignores_image_border():
    g = TileGrid((600, 900), 256, 64)
    # a corner click: the corner tile, whose only inner edges are far away
    assert g.best_tile((2, 3, 2, 3)).index == (0, 0)
    assert g.best_tile((598, 897, 598, 897)).index == (2, 4)
    # a click just inside tile (0, 0)'s right edge is better served by tile (0, 1)
    t = g.best_tile((100, 250, 100, 250))
    assert t.index == (0, 1) and t.margin((100, 250, 100, 250)) > 60


def test_grid_rejects_bad_arguments():
    with pytest.raises(ValueError, match="overlap"):
        TileGrid((600, 900), 256, 256)
    with pytest.raises(ValueError, match="tile size"):
        TileGrid((600, 900), 8, 0)


def test_default_tiling(model):
    assert default_tiling(model) == (256, 64)
    assert default_tiling(build_model("test_vit").__class__(
        model.config.with_(image_size=1024))) == (1024, 128)


# ---- embeddings and cache ----------------------------------------------------------------
def test_tile_embedding_equals_predictor_on_the_tile(model, image):
    emb = TiledEmbeddings(model, image, tile_size=256, overlap=64, precision="fp32")
    t = emb.grid[1, 2]
    pred = Predictor(model, precision="fp32", diameter="off")
    lo, hi = emb.value_range
    pred.set_image(image[t.slices], value_range=(lo[0], hi[0]))
    np.testing.assert_allclose(emb.features(t).numpy(), pred.get_embedding().features.numpy(),
                               rtol=1e-5, atol=1e-5)
    # whole-image contrast: every tile is scaled with the same range
    assert emb.store.done() == {(1, 2)}


def test_contrast_from_whole_image_not_per_tile(model):
    img = np.full((600, 900), 100, np.uint16)
    img[:, 450:] = 5000  # a dark half and a bright half
    emb = TiledEmbeddings(model, img, tile_size=256, overlap=64, precision="fp32")
    dark = emb.source.pixels(emb.grid[0, 0].window, emb.value_range)
    bright = emb.source.pixels(emb.grid[0, 4].window, emb.value_range)
    assert dark.max() < 10 and bright.min() > 245  # per tile, both would be flat grey


def test_cache_reuse_refusal_and_resume(model, image, tmp_path):
    cache = tmp_path / "cache"
    emb = TiledEmbeddings(model, image, tile_size=256, overlap=64, cache=cache, precision="fp32")
    n_tiles = len(emb.grid)
    # an interrupted run: stop after 4 tiles
    calls = []

    def stop_after_four(done, total, msg):
        calls.append(done)
        if done >= 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        emb.compute(progress=stop_after_four)
    assert len(emb.store.done()) == 4
    first = emb.store.get((0, 0)).copy()
    # resume in a new session: only the rest is computed
    emb2 = TiledEmbeddings(model, image, tile_size=256, overlap=64, cache=cache, precision="fp32")
    assert emb2.compute() == n_tiles - 4
    assert emb2.compute() == 0
    np.testing.assert_array_equal(emb2.store.get((0, 0)), first)
    assert emb2.store.array.chunks[:2] == (1, 1)
    # float16 on disk, close to the float32 computation
    fresh = emb2.encode([emb2.grid[2, 3]])[0]
    np.testing.assert_allclose(emb2.store.get((2, 3)), fresh, rtol=2e-3, atol=2e-3)
    # refused: another image, another model, another tiling
    other = image.copy()
    other[::7, ::7] += 1
    with pytest.raises(CacheMismatchError, match="image.sample_sha1.*Delete"):
        TiledEmbeddings(model, other, tile_size=256, overlap=64, cache=cache)
    with pytest.raises(CacheMismatchError, match="model.signature"):
        TiledEmbeddings(build_model("test_tiny_vit"), image, tile_size=256, overlap=64,
                        cache=cache)
    with pytest.raises(CacheMismatchError, match="tiling.overlap"):
        TiledEmbeddings(model, image, tile_size=256, overlap=32, cache=cache)
    sig = json.loads((cache / "signature.json").read_text())
    assert sig["image"]["shape"] == [600, 900] and sig["tiling"] == {"tile": 256, "overlap": 64}


def test_cache_beside_image_and_foreign_folder(model, image, tmp_path):
    import tifffile

    path = tmp_path / "scene.tif"
    tifffile.imwrite(path, image, tile=(128, 128))
    emb = TiledEmbeddings(model, str(path), tile_size=256, overlap=64, cache="beside")
    assert emb.cache_dir.parent == tmp_path / "scene.tif.sam-cache"
    assert emb.signature["image"] == TiledEmbeddings(
        model, image, tile_size=256, overlap=64).signature["image"]  # lazy == in memory
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "x.txt").write_text("x")
    with pytest.raises(CacheMismatchError, match="not a napari-sam embedding cache"):
        TiledEmbeddings(model, image, cache=tmp_path / "junk")


# ---- prompts across tiles -----------------------------------------------------------------
class TruthPredictor(TiledPredictor):
    """Stands in for the model: answers with the true object under the positive points,
    clipped to the tile's window, as a perfect model that sees only that tile would."""

    def __init__(self, truth, **kw):
        self.truth = truth
        self.calls = []
        super().__init__(**kw)

    def segment_tile(self, tile, points, labels, box, multimask):
        self.calls.append(tile.index)
        crop = self.truth[tile.slices]
        if points is not None and (labels == 1).any():
            r, c = np.round(points[labels == 1][0]).astype(int)
        else:
            r, c = np.round((box[:2] + box[2:]) / 2).astype(int)
        obj = crop[r, c]
        m = (crop == obj) if obj else np.zeros(crop.shape, bool)
        return m[None], np.array([1.0])


@pytest.fixture(scope="module")
def big_scene(model):
    shape = (640, 640)  # 3 x 3 tiles of 256 with overlap 64
    truth = np.zeros(shape, np.int32)
    truth[ellipse(shape, (320, 310), (280, 200))] = 1     # larger than a tile
    truth[ellipse(shape, (35, 600), (30, 35))] = 2         # in a corner
    truth[ellipse(shape, (630, 20), (60, 60)) & ~(truth > 0)] = 3  # across a corner
    img = (truth > 0).astype(np.uint8) * 200
    emb = TiledEmbeddings(model, img, tile_size=256, overlap=64)
    assert emb.grid.grid_shape == (3, 3)
    return truth, emb


def test_object_larger_than_a_tile_comes_back_whole(big_scene):
    truth, emb = big_scene
    tp = TruthPredictor(truth == 1, embeddings=emb)
    res = tp.predict(points=[[320, 310]])
    full = res.to_full(truth.shape)
    np.testing.assert_array_equal(full, truth == 1)
    assert len(set(res.tiles)) == 9 and res.tiles[0] == (1, 1)
    assert res.mask.shape == (res.bbox[2] - res.bbox[0], res.bbox[3] - res.bbox[1])


@pytest.mark.parametrize("obj,prompt", [
    (1, dict(points=[[60, 310]])),                       # near the top border, seam below
    (1, dict(box=[40, 110, 601, 511])),                  # a box larger than a tile
    (2, dict(points=[[15, 625]])),                       # in the top-right corner
    (3, dict(points=[[625, 5], [636, 60]])),             # two clicks, bottom-left corner
])
def test_prompts_near_borders_and_corners(big_scene, obj, prompt):
    truth, emb = big_scene
    tp = TruthPredictor(truth, embeddings=emb)
    res = tp.predict(**prompt)
    np.testing.assert_array_equal(res.to_full(truth.shape), truth == obj)
    if obj == 2:
        assert res.tiles == [(0, 2)]  # no seam reached: one tile, no neighbour asked


def test_disagreeing_neighbour_is_not_merged(big_scene):
    truth, emb = big_scene

    class Flaky(TruthPredictor):
        def segment_tile(self, tile, points, labels, box, multimask):
            m, s = super().segment_tile(tile, points, labels, box, multimask)
            if tile.index != (1, 1):
                m = ~m  # a neighbour that answers the background around the object
            return m, s

    res = Flaky(truth == 1, embeddings=emb).predict(points=[[320, 310]])
    t = emb.grid[1, 1]
    np.testing.assert_array_equal(res.to_full(truth.shape), (truth == 1) & _window(truth, t))
    assert res.tiles == [(1, 1)]


def _window(a, t):
    m = np.zeros(a.shape, bool)
    m[t.slices] = True
    return m


def test_tiled_predictor_with_model_embeds_only_needed_tiles(model, image):
    tp = TiledPredictor(model, image, tile_size=256, overlap=64, precision="fp32")
    res = tp.predict(points=[[300, 450]], point_labels=[1])
    done = tp.embeddings.store.done()  # tiles asked, merged or not: only those embedded
    assert set(res.tiles) <= done and res.tiles[0] == (1, 2)
    assert len(done) <= 2 * tp.max_tiles
    one_tile = TiledPredictor(model, image, tile_size=256, overlap=64, max_tiles=1)
    assert one_tile.predict(points=[[300, 450]]).tiles == [(1, 2)]
    assert one_tile.embeddings.store.done() == {(1, 2)}
    y0, x0, y1, x1 = res.bbox
    assert 0 <= y0 <= y1 <= 600 and 0 <= x0 <= x1 <= 900 and res.mask.dtype == bool
    # in one tile and far from its inner edges, tiled == plain Predictor on that tile
    one = TiledPredictor(model, image, tile_size=256, overlap=64, precision="fp32",
                         max_tiles=1).predict(points=[[300, 450]])
    t = tp.grid[1, 2]
    pred = tp.embeddings.predictor(t)
    masks, scores, _ = pred.predict(points=[[300 - t.window[0], 450 - t.window[1]]])
    ref = np.zeros((600, 900), bool)
    ref[t.slices] = masks[int(np.argmax(scores))]
    np.testing.assert_array_equal(one.to_full((600, 900)), ref)
    with pytest.raises(ValueError, match="outside the image"):
        tp.predict(points=[[700, 10]])
    with pytest.raises(ValueError, match="empty prompt"):
        tp.predict()
    with pytest.raises(ValueError, match="no area inside the image"):
        tp.predict(box=[700, 10, 800, 50])



def test_rgb_and_multichannel_images(model):
    rgb = np.random.default_rng(1).integers(0, 256, (300, 500, 3), dtype=np.uint8)
    emb = TiledEmbeddings(model, rgb, tile_size=256, overlap=64)
    assert emb.value_range is None  # uint8 RGB reaches the model unchanged, as in the core
    t = emb.grid[0, 1]
    np.testing.assert_array_equal(emb.source.pixels(t.window, None), rgb[t.slices])
    five = np.random.default_rng(2).random((300, 500, 5)).astype(np.float32)
    with pytest.raises(ValueError, match="channels="):
        TiledEmbeddings(model, five)
    emb = TiledEmbeddings(model, five, channels=[4, 0], tile_size=256, overlap=64)
    px = emb.source.pixels(t.window, emb.value_range)
    assert px.shape == (256, 256, 3) and len(emb.value_range[0]) == 2 and not px[..., 2].any()


def test_tiled_predictor_keeps_the_precision_policy(one_thread):
    """precision="auto" reaches the tiles' Predictor as "auto" (the decoder dtype is chosen
    per model there), not as the encoder's resolved dtype."""
    image = np.random.default_rng(0).integers(0, 255, (300, 300), dtype=np.uint8)
    emb = TiledEmbeddings(build_model("test_tiny_vit"), image, device="cpu", precision="auto")
    pred = emb.predictor(next(iter(emb.grid)))
    assert pred.decoder_dtype == Predictor(emb.model, "cpu", "auto").decoder_dtype
    if emb.dtype == torch.bfloat16:  # a CPU with fast bf16: small decoders stay in fp32
        assert pred.decoder_dtype == torch.float32


def test_input_side_rules():
    """Only a model whose encoder and head have no fixed positions takes larger squares;
    tiles of them have instance maps but no prompts."""
    from dataclasses import replace

    from napari_sam.automask.ais import tile_maps
    from napari_sam.model import Sam
    from napari_sam.model.config import TEST_TINY_VIT

    vit = build_model("test_vit")
    assert not vit.flexible_input
    assert vit.input_side(None) == vit.image_size
    with pytest.raises(ValueError, match="takes 256 x 256 inputs only"):
        vit.input_side(512)
    torch.manual_seed(0)
    flex = Sam(replace(TEST_TINY_VIT, instance_head=(32, 24, 16, 8, 8))).eval()
    assert flex.flexible_input
    with pytest.raises(ValueError, match="multiple of 64"):
        flex.input_side(300)
    rng = np.random.default_rng(0)
    image = rng.integers(0, 4000, (300, 420)).astype(np.uint16)
    emb = TiledEmbeddings(flex, image, tile_size=200, overlap=40, tile_input=512,
                          precision="fp32")
    c, g, _ = flex.embedding_shape
    assert emb.feature_shape == (c, 2 * g, 2 * g) and emb.zoom == pytest.approx(512 / 200)
    tile = emb.grid[0, 0]
    x = emb.model_input(tile)
    assert tuple(x.shape[-2:]) == emb.input_size(tile) == (512, 512)
    with torch.no_grad():
        direct = flex.encode(x, size=512)
    assert torch.allclose(emb.features(tile), direct, atol=1e-4, rtol=1e-4)
    _, maps = tile_maps(emb, tile)
    assert maps["foreground"].shape == tile.shape
    with pytest.raises(ValueError, match="instance maps only"):
        emb.predictor(tile)
    with pytest.raises(ValueError, match="takes 256 x 256 inputs only"):
        TiledEmbeddings(vit, image, tile_size=200, overlap=40, tile_input=512)
