"""Screenshot for docs/geospatial.md: a satellite scene and its exported polygons in napari.

    xvfb-run -a -s "-screen 0 1280x1024x24" .venv/bin/python tests/napari/geo_screenshot.py \
        [--model bundled] [--out docs/geospatial_napari.png]

Writes a generated 4-band GeoTIFF (UTM 33N, 10 m pixels), runs `napari-sam automask
--bands nir,red,green --format gpkg`, then opens the scene with napari-sam's reader (a
true-colour composite placed in metres) and the GeoPackage twice: as Labels on the image's
grid and as Shapes (outlines), and saves the window.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="bundled")
    ap.add_argument("--out", default=str(ROOT / "docs" / "geospatial_napari.png"))
    a = ap.parse_args(argv)
    import napari
    from PIL import Image

    from napari_sam._napari.large_image import geo_image_layers
    from napari_sam._napari.vector_hooks import vector_layer_data
    from napari_sam.cli import main as cli
    from napari_sam.training.geo_scene import GeoScene

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        GeoScene((512, 512), seed=5, field_size=72).write_geotiff(tmp / "scene.tif")
        rc = cli(["automask", str(tmp / "scene.tif"), "-o", str(tmp), "--model", a.model,
                  "--bands", "nir,red,green", "--format", "gpkg", "--tiling", "off", "-q"])
        assert rc == 0
        viewer = napari.Viewer(show=True)
        viewer.window._qt_window.resize(1200, 900)
        for data, kw, _ in geo_image_layers(tmp / "scene.tif"):
            viewer.add_image(data, **kw)
        data, kw, _ = vector_layer_data(tmp / "scene_objects.gpkg", kind="labels")
        kw["opacity"] = 0.35
        viewer.add_labels(data, **kw)
        data, kw, _ = vector_layer_data(tmp / "scene_objects.gpkg", kind="shapes")
        kw["name"] = "scene_objects (outlines)"
        viewer.add_shapes(data, **kw)
        viewer.reset_view()
        viewer.cursor.position = (-5_297_500.0, 502_000.0)
        viewer.status = "world (row, col) = (-northing, easting) in metres, EPSG:32633"
        shot = viewer.screenshot(canvas_only=False, flash=False)
        Image.fromarray(shot).save(a.out)
        print(f"saved {a.out}: {shot.shape}, {len(data)} polygons")
        viewer.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
