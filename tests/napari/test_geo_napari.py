"""Satellite images in napari: the sample scene in map units, GeoJSON/GPKG writers, the
vector reader (back as Labels on the image's grid, or as Shapes), the export widget."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("shapely")
pytest.importorskip("pyogrio")
pytest.importorskip("pyproj")

from napari_sam._napari.vector_hooks import (get_reader, vector_layer_data,  # noqa: E402
                                             write_labels_geojson, write_labels_gpkg)
from napari_sam.io.vectors import read_vectors  # noqa: E402
from napari_sam.training.geo_scene import CRS, GeoScene  # noqa: E402

SCALE, TRANSLATE = (10.0, 10.0), (-5_300_000.0, 500_000.0)


def _scene_layer_meta(scene):
    return {"scale": SCALE, "translate": TRANSLATE, "name": "scene labels",
            "metadata": {"georef": scene.georef.to_dict(), "source": "scene.tif"}}


def test_sample_scene_is_in_map_units():
    from napari_sam._napari.sample_data import geo_scene

    layers = geo_scene()
    assert [kw["colormap"] for _, kw, _ in layers] == ["red", "green", "blue"]
    for data, kw, kind in layers:
        assert kind == "image" and data.shape == (256, 256)
        assert tuple(kw["scale"]) == SCALE and tuple(kw["translate"]) == TRANSLATE
        assert kw["metadata"]["georef"]["crs"] == CRS
        assert kw["metadata"]["band_names"] == ("red", "green", "blue", "nir")


def test_writers_and_reader_round_trip(tmp_path):
    scene = GeoScene((200, 180), seed=6)
    labels = scene.labels()
    meta = _scene_layer_meta(scene)
    (gpkg,) = write_labels_gpkg(str(tmp_path / "objects"), labels, meta)
    (geojson,) = write_labels_geojson(str(tmp_path / "objects.geojson"), labels, meta)
    assert gpkg.endswith(".gpkg")
    for path in (gpkg, geojson):
        assert read_vectors(path)[2] == CRS
        reader = get_reader(path)
        (data, kw, kind) = reader(path)[0]
        assert kind == "labels"
        np.testing.assert_array_equal(data, labels)       # same grid, every object exact
        assert tuple(kw["scale"]) == SCALE and tuple(kw["translate"]) == TRANSLATE
        shapes, skw, skind = vector_layer_data(path, kind="shapes")
        assert skind == "shapes" and len(shapes) >= labels.max()
        # a shape's world coordinates (row = -northing, col = easting) fall on its object
        row, col = shapes[0].mean(0)
        r, c = (row - TRANSLATE[0]) / SCALE[0], (col - TRANSLATE[1]) / SCALE[1]
        assert labels[int(r), int(c)] > 0
    assert get_reader(str(tmp_path / "objects.csv")) is None


@pytest.mark.gui
def test_export_widget_writes_polygons(make_napari_viewer, tmp_path):
    from napari_sam._napari.export_widget import ExportWidget

    scene = GeoScene((160, 150), seed=7)
    viewer = make_napari_viewer()
    image = viewer.add_image(scene.image()[..., 3], scale=SCALE, translate=TRANSLATE,
                             name="nir")
    meta = _scene_layer_meta(scene)
    layer = viewer.add_labels(scene.labels(), scale=SCALE, translate=TRANSLATE,
                              metadata=meta["metadata"], name="objects")
    widget = ExportWidget(viewer)
    widget.labels.value = layer
    widget.intensity.value = image
    widget.folder.value = tmp_path
    for f, box in widget.formats.items():
        box.value = f in ("gpkg", "geojson")
    written = widget.export()
    assert sorted(p.name for p in written) == ["objects_objects.geojson",
                                               "objects_objects.gpkg"]
    geoms, table, crs = read_vectors(tmp_path / "objects_objects.gpkg")
    assert crs == CRS and len(geoms) == scene.labels().max()
    k = int(table["id"][0])
    assert table["mean_b0"][0] == pytest.approx(scene.image()[..., 3][scene.labels() == k]
                                                .mean())
    (opened,) = viewer.open(tmp_path / "objects_objects.gpkg", plugin="napari-sam-suite")
    np.testing.assert_array_equal(opened.data, layer.data)
    np.testing.assert_allclose(opened.translate, layer.translate)


@pytest.mark.gui
def test_vector_prompt_widget(make_napari_viewer, tmp_path):
    import pyogrio.raw
    import shapely

    from napari_sam._napari.sample_data import geo_scene
    from napari_sam._napari.vector_prompt_widget import VectorPromptWidget

    viewer = make_napari_viewer()
    layers = [viewer._add_layer_from_data(*ld)[0] for ld in geo_scene()]
    truth = GeoScene((256, 256), seed=5, field_size=56)
    polys = truth.polygons()
    boxes = [polys[k].envelope for k in list(polys)[:2]]
    pyogrio.raw.write(str(tmp_path / "b.gpkg"), shapely.to_wkb(boxes), [np.arange(2)], ["n"],
                      driver="GPKG", crs=CRS, geometry_type="Polygon")
    w = VectorPromptWidget(viewer)
    w.image.value = layers[0]
    w.vectors.value = tmp_path / "b.gpkg"
    w.bands.value = "5"
    assert w.start(sync=True) is None and "no band 5" in w.status.value
    w.bands.value = "false-color"
    out = w.start(sync=True)
    assert out.data.shape == (256, 256) and 1 <= out.data.max() <= 2
    assert tuple(out.scale) == SCALE and out.metadata["georef"]["crs"] == CRS
    assert not out.data[~truth.valid()].any()


def test_new_labels_layers_carry_the_georeferencing():
    from napari.components import ViewerModel

    from napari_sam._napari import layers as L
    from napari_sam._napari.sample_data import geo_scene

    viewer = ViewerModel()
    data, kw, _ = geo_scene()[0]
    image = viewer.add_image(data, **kw)
    for make in (L.new_labels_layer, L.new_large_labels_layer):
        out = make(viewer, image, "objects")
        assert out.metadata["georef"] == kw["metadata"]["georef"]
        assert tuple(out.scale) == SCALE and tuple(out.translate) == TRANSLATE
