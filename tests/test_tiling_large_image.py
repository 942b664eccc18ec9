"""Large images as multiscale lazy napari layers (the helpers import no napari)."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
import zarr

from napari_sam._napari import large_image as L


@pytest.fixture()
def big(tmp_path):
    img = (np.random.default_rng(0).random((2400, 1300)) * 1000).astype(np.uint16)
    path = tmp_path / "big.tif"
    tifffile.imwrite(path, img, tile=(256, 256))
    return path, img


def test_reader_claims_only_large_tiffs(big, monkeypatch, tmp_path):
    path, img = big
    assert L.reader(str(path)) is None            # below LARGE: napari's own reader
    monkeypatch.setattr(L, "LARGE", 2000)
    data, kw, kind = L.reader(str(path))(str(path))[0]
    assert kind == "image" and kw["multiscale"] and kw["name"] == "big"
    assert [d.shape for d in data] == [(2400, 1300), (1200, 650)]
    np.testing.assert_array_equal(np.asarray(data[1][10:20, 30:40]), img[::2, ::2][10:20, 30:40])
    (tmp_path / "x.txt").write_text("x")
    assert L.reader(str(tmp_path / "x.txt")) is None


def test_pyramid_levels_come_from_the_file(tmp_path):
    img = np.arange(2048 * 1024, dtype=np.uint16).reshape(2048, 1024)
    path = tmp_path / "pyr.ome.tif"
    with tifffile.TiffWriter(path) as tw:
        tw.write(img, subifds=1, tile=(256, 256))
        tw.write(img[::2, ::2] + 1, subfiletype=1, tile=(256, 256))
    data, kw, _ = L.image_layer_data(path)
    assert [d.shape for d in data] == [(2048, 1024), (1024, 512)]
    assert int(data[1][0, 0]) == 1  # the file's level, not a strided view


def test_labels_levels_are_nearest_and_lazy():
    z = zarr.zeros((3000, 2100), chunks=(512, 512), dtype="uint32")
    z[0:2, 0:2] = 7
    data, kw, kind = L.labels_layer_data(z, name="cells")
    assert kind == "labels" and kw == {"name": "cells", "multiscale": True}
    assert [d.shape for d in data] == [(3000, 2100), (1500, 1050)]
    assert data[1].dtype == np.uint32 and int(data[1][0, 0]) == 7


def test_tiled_predictor_on_layer_data(big):
    import torch

    from napari_sam import build_model

    path, img = big
    torch.manual_seed(0)
    data = L.levels_for(img[:600, :600])
    tp = L.tiled_predictor(data, build_model("test_vit"), tile_size=256, overlap=64,
                           max_tiles=1)
    res = tp.predict(points=[[300, 300]])
    labels = np.zeros((600, 600), np.uint32)
    res.paint(labels, 5)
    assert (labels == 5).sum() == res.area and tp.embeddings.cache_dir is None


def test_reader_opens_large_label_tiffs_as_labels(tmp_path, monkeypatch):
    lab = np.zeros((2100, 900), np.uint32)
    lab[5:9, 5:9] = 3
    path = tmp_path / "scene_labels.tif"
    tifffile.imwrite(path, lab, tile=(256, 256))
    monkeypatch.setattr(L, "LARGE", 2000)
    data, kw, kind = L.reader(str(path))(str(path))[0]
    assert kind == "labels" and kw["multiscale"] and kw["name"] == "scene_labels"
    assert [d.shape for d in data] == [(2100, 900), (1050, 450)] and int(data[1][3, 3]) == 3
