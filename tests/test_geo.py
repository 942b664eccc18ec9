"""Satellite images: georeferencing, vector export (GeoJSON/GPKG), nodata, bands, prompts.

The truth comes from a generated scene (`napari_sam.training.geo_scene`, UTM 33N, 10 m
pixels) whose objects are unions of pixel-aligned rectangles, so their outlines are known
exactly.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("shapely")
pytest.importorskip("pyogrio")
pytest.importorskip("pyproj")

import shapely  # noqa: E402

from napari_sam.io.georef import GeoRef, georef_from_tags, georef_to_tags  # noqa: E402
from napari_sam.io.images import read_image, read_meta  # noqa: E402
from napari_sam.io.vectors import (label_features, read_vectors, vectors_to_labels,  # noqa: E402
                                   write_vectors)
from napari_sam.training.geo_scene import CRS, TRANSFORM, GeoScene  # noqa: E402

PX = 10.0  # metres per pixel of the scene


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    s = GeoScene((320, 352), seed=2)
    path = tmp_path_factory.mktemp("geo") / "scene.tif"
    s.write_geotiff(path)
    return s, path


def _iou(a, b):
    return (a & b).sum() / max((a | b).sum(), 1)


# ---------------------------------------------------------------------------- georef
def test_geotiff_georef_from_tags_and_rasterio_agree(scene):
    s, path = scene
    meta = read_meta(path)
    assert meta.georef == GeoRef(CRS, TRANSFORM)
    assert georef_from_tags(meta.geo) == GeoRef(CRS, TRANSFORM)  # the light reader alone
    assert meta.nodata == 0 and meta.band_names == ("red", "green", "blue", "nir")
    img, _ = read_image(path)
    np.testing.assert_array_equal(img, s.image())


def test_pixel_is_point_and_transformation_tags():
    g = GeoRef("EPSG:32633", (10.0, 0.0, 500000.0, 0.0, -10.0, 5300000.0))
    tags = georef_to_tags(g)
    assert georef_from_tags(tags) == g
    keys = list(tags["GeoKeyDirectoryTag"])
    keys[11] = 2  # GTRasterTypeGeoKey = PixelIsPoint: the tiepoint is a pixel centre
    shifted = georef_from_tags(dict(tags, GeoKeyDirectoryTag=tuple(keys)))
    assert shifted.transform == (10.0, 0.0, 499995.0, 0.0, -10.0, 5300005.0)
    rot = GeoRef("EPSG:32633", (8.0, 6.0, 1.0, 6.0, -8.0, 2.0))
    assert georef_from_tags(georef_to_tags(rot)) == rot
    assert rot.napari_scale_translate() is None
    assert g.napari_scale_translate() == ((10.0, 10.0), (-5300000.0, 500000.0))
    r, c = g.to_pixel(*g.to_map([3.5], [7.25]))
    np.testing.assert_allclose([r[0], c[0]], [3.5, 7.25])


# ---------------------------------------------------------------------------- export
def test_polygons_open_in_the_crs_within_half_a_pixel_of_the_truth(scene, tmp_path):
    s, _ = scene
    labels, image = s.labels(), s.image()
    feats = label_features(labels, image, s.georef, band_names=("red", "green", "blue", "nir"))
    paths = {"gpkg": tmp_path / "o.gpkg", "geojson": tmp_path / "o.geojson"}
    write_vectors(paths, feats, s.georef)
    truth = s.polygons()
    holes = sum(len(o["holes"]) for o in s.objects)
    assert holes > 0
    for kind, path in paths.items():
        geoms, table, crs = read_vectors(path)
        assert crs == CRS
        assert sorted(table["id"].tolist()) == sorted(truth)
        assert all(shapely.is_valid(geoms))
        assert sum(len(p.interiors) for g in geoms for p in getattr(g, "geoms", [g])) == holes
        for g, k in zip(geoms, table["id"]):
            assert shapely.hausdorff_distance(g, truth[int(k)]) <= 0.5 * PX
            assert abs(g.area - truth[int(k)].area) < 1e-6 * truth[int(k)].area
        # attributes: areas, perimeters, band means of the generated reflectances
        k = int(table["id"][0])
        assert table["area_px"][0] == (labels == k).sum()
        assert table["area_map"][0] == pytest.approx(table["area_px"][0] * PX * PX)
        assert table["perimeter_map"][0] == pytest.approx(truth[k].length)
        assert table["mean_nir"][0] == pytest.approx(image[labels == k][:, 3].mean())


def test_wgs84_geojson_is_lon_lat_and_round_trips(scene, tmp_path):
    s, _ = scene
    labels = s.labels()
    write_vectors({"geojson": tmp_path / "w.geojson"}, label_features(labels, None, s.georef),
                  s.georef, crs="EPSG:4326")
    geoms, _, crs = read_vectors(tmp_path / "w.geojson")
    assert crs == "EPSG:4326"
    x0, y0, _, _ = shapely.total_bounds(geoms)
    assert 14.9 < x0 < 15.1 and 47.8 < y0 < 47.9  # UTM 33N at 500 km E, 5300 km N
    np.testing.assert_array_equal(vectors_to_labels(tmp_path / "w.geojson", labels.shape,
                                                    s.georef), labels)


@pytest.mark.parametrize("polygonizer", ["rasterio", "shapely"])
def test_round_trip_to_labels_is_exact(scene, tmp_path, monkeypatch, polygonizer):
    s, _ = scene
    labels = s.labels()
    labels[labels == 3] = 0
    labels[100:104, 300:304] = 3          # an object in two pieces (diagonal touch)
    labels[104:108, 304:308] = 3
    if polygonizer == "shapely":
        monkeypatch.setitem(sys.modules, "rasterio", None)
    feats = label_features(labels, None, s.georef)
    assert feats[2]["geometry"].geom_type == "MultiPolygon"
    write_vectors({"gpkg": tmp_path / "r.gpkg"}, feats, s.georef)
    back = vectors_to_labels(tmp_path / "r.gpkg", labels.shape, s.georef)
    for k in np.unique(labels[labels > 0]):
        assert _iou(back == k, labels == k) == 1.0
    np.testing.assert_array_equal(back, labels)


def test_simplification_keeps_polygons_valid_and_close(scene):
    s, _ = scene
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:200, :200]
    blob = ((yy - 100) ** 2 + (xx - 90) ** 2 < 70 ** 2) & ~((yy - 100) ** 2 +
                                                            (xx - 90) ** 2 < 20 ** 2)
    labels = blob.astype(np.uint32) + (rng.random((200, 200)) < 0.002) * (~blob) * 2
    exact = label_features(labels, None, s.georef)
    for units, tol in (("px", 1.5), ("map", 15.0)):
        simple = label_features(labels, None, s.georef, simplify=tol, simplify_units=units)
        for a, b in zip(exact, simple):
            assert shapely.is_valid(b["geometry"])
            assert shapely.hausdorff_distance(a["geometry"], b["geometry"]) <= 1.5 * PX + 1e-6
        ring = simple[0]["geometry"]
        assert len(ring.interiors) == 1   # the hole survives
        assert len(shapely.get_coordinates(ring)) < \
            len(shapely.get_coordinates(exact[0]["geometry"])) / 3


def test_tiled_features_equal_the_whole_image_ones(scene, tmp_path):
    import zarr

    from napari_sam.tiled.vectors import tiled_features

    s, _ = scene
    labels, image = s.labels(), s.image()
    z = zarr.open_array(str(tmp_path / "l.zarr"), mode="w", shape=labels.shape,
                        chunks=(64, 64), dtype="uint32")
    z[:] = labels
    whole = {f["properties"]["id"]: f for f in label_features(labels, image, s.georef)}
    for records in (None, [{"id": k, "bbox": [int(v) for v in
                                               np.r_[np.argwhere(labels == k).min(0),
                                                     np.argwhere(labels == k).max(0) + 1]]}
                           for k in whole]):
        tiled = list(tiled_features(z, image, s.georef, records=records, block=64))
        assert sorted(f["properties"]["id"] for f in tiled) == sorted(whole)
        crossing = 0
        for f in tiled:
            w = whole[f["properties"]["id"]]
            assert shapely.equals(f["geometry"], w["geometry"])
            assert shapely.is_valid(f["geometry"])
            np.testing.assert_allclose(list(f["properties"].values()),
                                       list(w["properties"].values()), equal_nan=True)
            b = shapely.bounds(f["geometry"])
            crossing += int(b[0] // 640) != int((b[2] - 1) // 640)
        assert crossing > 5  # objects across block seams were merged


# ---------------------------------------------------------------------------- bands, nodata
def test_bands_by_number_name_and_composite():
    from napari_sam.io.bands import parse_bands

    names = ("red", "green", "blue", "nir")
    assert parse_bands("4,3,2", names, 4) == [3, 2, 1]
    assert parse_bands("NIR,red,green", names, 4) == [3, 0, 1]
    assert parse_bands("false-color", names, 4) == [3, 0, 1]
    assert parse_bands("true-color", names, 4) == [0, 1, 2]
    with pytest.raises(ValueError, match="no band 5"):
        parse_bands("5,3,2", names, 4)
    with pytest.raises(ValueError, match="no band named 'swir'"):
        parse_bands("swir,red", names, 4)
    with pytest.raises(ValueError, match="1 to 3 bands"):
        parse_bands("1,2,3,4", names, 4)


def test_nodata_masks_labels_records_and_contrast(scene):
    from napari_sam.io.bands import mask_nodata, valid_mask
    from napari_sam.tiled.source import ImageSource

    s, path = scene
    image = s.image()
    valid = valid_mask(image, 0)
    np.testing.assert_array_equal(valid, s.valid())
    labels = np.zeros(s.shape, np.uint32)
    labels[:40, :40] = 1                   # half in the nodata border
    labels[:8, 50:60] = 2                  # wholly in it
    recs = [{"id": 1, "area": 1600, "bbox": [0, 0, 40, 40]},
            {"id": 2, "area": 80, "bbox": [0, 50, 8, 60]}]
    out, kept = mask_nodata(labels, recs, valid)
    assert not out[~valid].any()
    assert [r["id"] for r in kept] == [1]
    b = s.nodata_border
    assert kept[0]["area"] == (40 - b) ** 2 and kept[0]["bbox"] == [b, b, 40, 40]
    lo, _ = ImageSource(path, [3, 0, 1]).value_range()
    assert min(lo) > 100                   # the zeros of the border are not the low end


# ---------------------------------------------------------------------------- prompts
def test_prompts_from_a_wgs84_file_land_on_the_right_pixels(scene, tmp_path):
    import pyogrio.raw

    from napari_sam.io.georef import transform_coords
    from napari_sam.io.vector_prompts import read_vector_prompts

    s, path = scene
    truth = s.polygons()
    ids = list(truth)[:3]

    def to4326(g):
        return shapely.transform(g, lambda xy: np.stack(transform_coords(
            xy[:, 0], xy[:, 1], CRS, "EPSG:4326"), 1))

    geoms = [to4326(truth[k].envelope) for k in ids] + \
        [to4326(truth[ids[0]].centroid), to4326(truth[ids[1]].centroid)]
    pyogrio.raw.write(str(tmp_path / "p.geojson"), shapely.to_wkb(geoms),
                      [np.array(["1", "1", "1", "1", "background"], object)], ["label"],
                      driver="GeoJSON", crs="EPSG:4326", geometry_type="Unknown")
    vp = read_vector_prompts(tmp_path / "p.geojson", read_meta(path).georef, s.shape)
    labels = s.labels()
    for box, k in zip(vp.boxes, ids):
        rows, cols = np.nonzero(labels == k)
        want = [rows.min(), cols.min(), rows.max() + 1, cols.max() + 1]
        np.testing.assert_allclose(box, want, atol=1e-6)
    assert vp.point_labels.tolist() == [1, 0]
    r, c = vp.points[0].astype(int)
    assert labels[r, c] == ids[0]


# ---------------------------------------------------------------------------- optional
@pytest.mark.slow  # a fresh interpreter importing torch: about 10 s
def test_core_imports_without_the_gis_libraries():
    code = ("import sys\n"
            "for m in ('shapely', 'pyproj', 'pyogrio', 'rasterio'): sys.modules[m] = None\n"
            "import numpy as np, napari_sam, napari_sam.io.vectors as v, napari_sam.batch\n"
            "from napari_sam.io.images import read_meta\n"
            "try:\n"
            "    v.label_features(np.ones((4, 4), np.uint32))\n"
            "except ImportError as e:\n"
            "    print(e)\n"
            "from napari_sam.cli import main\n"
            "print('rc', main(['automask', 'x.tif', '-o', 'out', '--format', 'gpkg']))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert 'pip install "napari-sam-suite[geo]"' in out.stdout
    assert "rc 2" in out.stdout and "napari-sam-suite[geo]" in out.stderr
