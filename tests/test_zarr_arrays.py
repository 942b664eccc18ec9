"""The arrays the package writes are zarr format 2 under zarr 2 and zarr 3 alike, so caches
and label images made under one version open under the other (`io/zarr_arrays.py`)."""

import json

import numpy as np
import zarr
from numcodecs import Blosc

from napari_sam.io.zarr_arrays import open_array, zarr_major
from napari_sam.tiled.cache import ZarrStore


def test_open_array_writes_format_2_with_a_numcodecs_compressor(tmp_path):
    path = tmp_path / "a.zarr"
    a = open_array(path, mode="w", shape=(5, 7), chunks=(2, 4), dtype="uint32", fill_value=0,
                   compressor=Blosc(cname="zstd", clevel=3, shuffle=Blosc.SHUFFLE))
    a[1:4, 2:6] = 9
    meta = json.loads((path / ".zarray").read_text())
    assert meta["zarr_format"] == 2 and meta["compressor"]["id"] == "blosc"
    assert not (path / "zarr.json").exists()
    again = open_array(path, mode="r")
    assert again.dtype == np.uint32 and int(np.asarray(again[:]).sum()) == 9 * 12
    # zarr's own open (no format named) reads it as well
    assert int(np.asarray(zarr.open_array(str(path), mode="r")[:]).sum()) == 9 * 12


def test_embedding_cache_opens_again_with_its_tiles(tmp_path):
    sig = {"image": "x", "model": "m"}
    store = ZarrStore(tmp_path / "cache", sig, (2, 3), (4, 8, 8))
    feats = np.random.default_rng(0).normal(size=(4, 8, 8)).astype(np.float32)
    store.put((1, 2), feats)
    store = ZarrStore(tmp_path / "cache", sig, (2, 3), (4, 8, 8))
    np.testing.assert_allclose(store.get((1, 2)), feats.astype(np.float16), rtol=0)
    assert store.done() == {(1, 2)}
    assert json.loads((tmp_path / "cache" / "features" / ".zarray").read_text())[
        "zarr_format"] == 2


def test_zarr_major_is_the_installed_version():
    assert zarr_major() == int(zarr.__version__.split(".")[0]) and zarr_major() in (2, 3)
