"""Fault injection: damaged embedding caches, killed writes, cut downloads, resumed batches.

Each test damages something on disk the way a crash, a full disk or a flaky network does,
and checks that the damage is detected: the work is redone, or the error names the file
and the fix. Nothing is read back silently wrong.
"""

from __future__ import annotations

import json
import os
import time
import warnings

import numpy as np
import pytest
import torch

from napari_sam import build_model
from napari_sam.tiled.cache import CacheCorruptError, CacheMismatchError
from napari_sam.tiling import TiledEmbeddings


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model("test_vit")


@pytest.fixture(scope="module")
def image():
    rng = np.random.default_rng(1)
    img = rng.normal(1000, 50, (300, 300)).astype(np.uint16)
    img[60:200, 80:220] += 2000
    return img


@pytest.fixture
def cached(model, image, tmp_path, one_thread):
    """A cache folder with every tile computed, and the tiles' true features."""
    cache = tmp_path / "cache"
    emb = TiledEmbeddings(model, image, tile_size=256, overlap=64, cache=cache,
                          precision="fp32")
    emb.compute()
    truth = {t.index: emb.store.get(t.index) for t in emb.grid}
    return cache, truth


def _chunk(cache, index=(0, 0)):
    return cache / "features" / f"{index[0]}.{index[1]}.0.0.0"


def _flip(path, offsets=(40, 41)):
    data = bytearray(path.read_bytes())
    for o in offsets:
        data[o % len(data)] ^= 0xFF
    path.write_bytes(bytes(data))


DAMAGE = {
    "deleted": lambda p: p.unlink(),
    "flipped": lambda p: _flip(p, (len(p.read_bytes()) // 2, len(p.read_bytes()) // 2 + 7)),
    "garbled": lambda p: p.write_bytes(os.urandom(len(p.read_bytes()))),
    "truncated": lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 3]),
    "emptied": lambda p: p.write_bytes(b""),
}


@pytest.mark.parametrize("how", sorted(DAMAGE))
def test_damaged_chunk_is_detected_then_recomputed(model, image, cached, how):
    cache, truth = cached
    DAMAGE[how](_chunk(cache))
    emb = TiledEmbeddings(model, image, tile_size=256, overlap=64, cache=cache,
                          precision="fp32")
    with pytest.raises(CacheCorruptError, match=str(cache).replace("\\", "\\\\")):
        emb.store.get((0, 0))
    with pytest.warns(RuntimeWarning, match="damaged.*recomputing"):
        f = emb.features(emb.grid[0, 0])
    np.testing.assert_allclose(f[0].numpy(), truth[(0, 0)], rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(emb.store.get((0, 0)), truth[(0, 0)])  # repaired on disk
    with warnings.catch_warnings():  # the other tiles are read as they are
        warnings.simplefilter("error")
        np.testing.assert_array_equal(emb.features(emb.grid[0, 1])[0].numpy(), truth[(0, 1)])


def test_marker_without_checksum_is_not_trusted(model, image, cached):
    cache, truth = cached
    (cache / "done" / "0_1").write_bytes(b"")  # an older cache, or a damaged marker
    emb = TiledEmbeddings(model, image, tile_size=256, overlap=64, cache=cache,
                          precision="fp32")
    with pytest.raises(CacheCorruptError, match="no checksum"):
        emb.store.get((0, 1))
    with pytest.warns(RuntimeWarning):
        np.testing.assert_allclose(emb.features(emb.grid[0, 1])[0].numpy(), truth[(0, 1)],
                                   rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("how", ["garbled", "deleted", "wrong shape"])
def test_damaged_array_metadata_names_the_folder_and_the_fix(model, image, cached, how):
    cache, _ = cached
    meta = cache / "features" / ".zarray"
    if how == "garbled":
        meta.write_text('{"chunks": [1, 1, 3')
    elif how == "deleted":
        meta.unlink()
    else:
        d = json.loads(meta.read_text())
        d["shape"][0] += 1
        meta.write_text(json.dumps(d))
    with pytest.raises(CacheMismatchError) as info:
        TiledEmbeddings(model, image, tile_size=256, overlap=64, cache=cache)
    assert str(cache) in str(info.value) and "Delete" in str(info.value)
