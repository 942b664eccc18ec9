"""`napari-sam automask SCENE.tif --format geojson,gpkg --bands ... [--prompts FILE]` end to
end with a tiny random model, untiled and tiled, on a generated GeoTIFF with a nodata
border."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("shapely")
pytest.importorskip("pyogrio")
pytest.importorskip("pyproj")

import torch  # noqa: E402

from napari_sam import build_model  # noqa: E402
from napari_sam.cli import main  # noqa: E402
from napari_sam.io.images import read_meta  # noqa: E402
from napari_sam.io.labels import read_labels  # noqa: E402
from napari_sam.io.vectors import read_vectors, vectors_to_labels  # noqa: E402
from napari_sam.model import save_checkpoint  # noqa: E402
from napari_sam.training.geo_scene import CRS, GeoScene  # noqa: E402

ARGS = ["--points-per-side", "4", "--pred-iou-thresh", "0", "--stability-thresh", "0",
        "--device", "cpu", "--precision", "fp32", "-q", "--bands", "nir,red,green"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("geocli")
    torch.manual_seed(0)
    model = d / "tiny.pt"
    save_checkpoint(model, build_model("test_vit"))
    scene = GeoScene((300, 280), seed=4, nodata_border=40)
    path = d / "scene.tif"
    scene.write_geotiff(path)
    return model, scene, path


@pytest.mark.parametrize("tiling", ["off", "on"])
def test_cli_writes_vectors_that_match_the_labels(files, tmp_path, tiling, one_thread):
    model, scene, path = files
    out = tmp_path / "out"
    rc = main(["automask", str(path), "-o", str(out), "--model", str(model), "--tiling",
               tiling, "--tile-size", "256", "--overlap", "64",
               "--format", "tif,geojson,gpkg"] + ARGS)
    assert rc == 0
    labels, _ = read_labels(out / "scene_labels.tif")
    assert labels.max() > 0
    # nodata never becomes objects (without the nodata tag, 75 % (untiled) and 83 % (tiled)
    # of these border pixels are labelled by this model)
    assert not labels[~scene.valid()].any()
    georef = read_meta(path).georef
    for ext in ("gpkg", "geojson"):
        geoms, table, crs = read_vectors(out / f"scene_objects.{ext}")
        assert crs == CRS
        assert sorted(table["id"].tolist()) == sorted(np.unique(labels[labels > 0]).tolist())
        assert np.isfinite(table["predicted_iou"]).all()
        assert {"mean_red", "mean_green", "mean_blue", "mean_nir"} <= set(table)
        np.testing.assert_array_equal(vectors_to_labels(out / f"scene_objects.{ext}",
                                                        labels.shape, georef), labels)


def test_cli_wgs84_and_prompts(files, tmp_path, one_thread):
    import pyogrio.raw
    import shapely

    model, scene, path = files
    truth = scene.polygons()
    fields = [k for k, o in zip(truth, scene.objects) if o["kind"] == "field"][:2]
    prompts = tmp_path / "boxes.gpkg"
    pyogrio.raw.write(str(prompts), shapely.to_wkb([truth[k].envelope for k in fields]),
                      [np.arange(2)], ["n"], driver="GPKG", crs=CRS, geometry_type="Polygon")
    out = tmp_path / "p"
    rc = main(["automask", str(path), "-o", str(out), "--model", str(model), "--tiling",
               "off", "--prompts", str(prompts), "--format", "tif,geojson",
               "--vector-crs", "EPSG:4326"] + ARGS)
    assert rc == 0
    labels, _ = read_labels(out / "scene_labels.tif")
    geoms, table, crs = read_vectors(out / "scene_objects.geojson")
    assert crs == "EPSG:4326" and 1 <= len(geoms) <= 2
    np.testing.assert_array_equal(vectors_to_labels((geoms, table, crs), labels.shape,
                                                    read_meta(path).georef), labels)
    for k in table["id"]:       # each object starts inside the box that prompted it
        rows, cols = np.nonzero(labels == k)
        assert (scene.labels()[rows, cols] > 0).any()


def test_cli_says_what_is_wrong(files, tmp_path, capsys):
    model, scene, path = files
    with pytest.raises(SystemExit, match="no band named 'swir'"):
        main(["automask", str(path), "-o", str(tmp_path), "--bands", "swir", "-q"])
    with pytest.raises(SystemExit, match="no such file"):
        main(["automask", str(path), "-o", str(tmp_path), "--bands", "1",
              "--prompts", str(tmp_path / "missing.gpkg"), "-q"])
