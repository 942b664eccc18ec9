"""Vector export of a large 4-band scene: bounded memory and its share of the run time.

A generated georeferenced scene (`napari_sam.training.geo_scene`: 4 bands uint16, UTM 33N,
fields and buildings, a nodata border) is written as a tiled GeoTIFF tile by tile, then, in
one fresh process, segmented by `tiled_automask` into an on-disk zarr label image (bands
nir, red, green) and exported to a GeoPackage block by block
(`napari_sam.tiled.outputs.write_tiled_vectors`: polygons, areas, scores, the mean of all 4
bands). `ru_maxrss` is read after the automask (= the peak of the tiled automask alone:
the process is in the same state as a run without export) and again at the end, so

    memory ratio = peak RSS of automask + export / peak RSS of automask alone
    time ratio   = export seconds / automask seconds

The reference is the tiled automask in the same process, same scene. The GeoPackage is then
checked: every stitched object is one valid polygon in EPSG:32633.

    python benchmarks/bench_geo_export.py --size 4096
    python benchmarks/bench_geo_export.py --size 8192 --truth   # export alone

`--truth` skips the model: the scene's true label image is written to zarr block by block
and only the export runs in the fresh process (peak RSS and seconds of the export alone,
next to the size of the label image it never loads), for sizes where the tiled automask
would take hours on a small machine.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run(path: Path, work: Path, model_name: str, points: int, block: int) -> dict:
    sys.path.insert(0, str(ROOT))
    import numpy as np

    from napari_sam.io.images import read_meta
    from napari_sam.io.vectors import read_vectors
    from napari_sam.model import load_model
    from napari_sam.tiled.outputs import write_tiled_vectors
    from napari_sam.tiled.source import open_image
    from napari_sam.automask import tiled_automask

    model = load_model(model_name)
    meta = read_meta(path)
    t0 = time.perf_counter()
    res = tiled_automask(str(path), model, out=work / "labels.zarr", channels=[3, 0, 1],
                         points_per_side=points, overwrite=True)
    t_auto = time.perf_counter() - t0
    rss_auto = _rss_mib()
    t1 = time.perf_counter()
    gpkg = work / "scene_objects.gpkg"
    write_tiled_vectors({"gpkg": gpkg}, res.labels, open_image(path)[0], meta, res.records,
                        overwrite=True, block=block)
    t_export = time.perf_counter() - t1
    rss_all = _rss_mib()
    import shapely

    geoms, table, crs = read_vectors(gpkg)
    ids = set(table["id"].tolist())
    return {"size": list(meta.shape), "tiles": res.tiles_run, "objects": len(res.records),
            "features": len(geoms), "all_valid": bool(shapely.is_valid(geoms).all()),
            "ids_match": ids == {int(r["id"]) for r in res.records}, "crs": crs,
            "automask_s": round(t_auto, 1), "export_s": round(t_export, 1),
            "time_ratio": round(t_export / t_auto, 4),
            "peak_rss_automask_mib": round(rss_auto, 1),
            "peak_rss_with_export_mib": round(rss_all, 1),
            "memory_ratio": round(rss_all / rss_auto, 4),
            "gpkg_mib": round(gpkg.stat().st_size / 2 ** 20, 1),
            "label_image_mib_if_loaded": round(np.prod(meta.shape[:2]) * 4 / 2 ** 20, 1),
            "model": model_name, "points_per_side": points, "block": block}


def export_only(path: Path, work: Path, block: int) -> dict:
    """The export of the scene's true labels (zarr) alone, in this fresh process."""
    sys.path.insert(0, str(ROOT))
    import numpy as np
    import zarr

    from napari_sam.io.images import read_meta
    from napari_sam.tiled.outputs import write_tiled_vectors
    from napari_sam.tiled.source import open_image

    meta = read_meta(path)
    labels = zarr.open_array(str(work / "truth.zarr"), mode="r")
    rss0 = _rss_mib()
    t = time.perf_counter()
    gpkg = work / "truth_objects.gpkg"
    write_tiled_vectors({"gpkg": gpkg}, labels, open_image(path)[0], meta, None,
                        overwrite=True, block=block)
    import shapely

    from napari_sam.io.vectors import read_vectors

    t_export = time.perf_counter() - t
    rss = _rss_mib()
    geoms, table, crs = read_vectors(gpkg)
    return {"size": list(meta.shape), "features": len(geoms), "crs": crs,
            "all_valid": bool(shapely.is_valid(geoms).all()), "export_s": round(t_export, 1),
            "peak_rss_before_export_mib": round(rss0, 1), "peak_rss_mib": round(rss, 1),
            "label_image_mib_if_loaded": round(np.prod(meta.shape[:2]) * 4 / 2 ** 20, 1),
            "image_mib_if_loaded": round(np.prod(meta.shape) * 2 / 2 ** 20, 1),
            "gpkg_mib": round(gpkg.stat().st_size / 2 ** 20, 1), "block": block}


def _write_truth(scene, out: Path, chunk: int = 1024) -> None:
    import zarr

    z = zarr.open_array(str(out), mode="w", shape=scene.shape, chunks=(chunk, chunk),
                        dtype="uint32")
    for r in range(0, scene.shape[0], chunk):
        for c in range(0, scene.shape[1], chunk):
            win = (r, c, min(r + chunk, scene.shape[0]), min(c + chunk, scene.shape[1]))
            z[win[0]:win[2], win[1]:win[3]] = scene.labels(win)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--model", default="bundled")
    ap.add_argument("--points-per-side", type=int, default=8)
    ap.add_argument("--block", type=int, default=1024)
    ap.add_argument("--scratch", default=None)
    ap.add_argument("--json", default="", help="also write the result to this JSON file")
    ap.add_argument("--truth", action="store_true", help="export the true labels only")
    ap.add_argument("--_run", nargs=2, metavar=("PATH", "WORK"), help=argparse.SUPPRESS)
    ap.add_argument("--_export", nargs=2, metavar=("PATH", "WORK"), help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a._export:
        print(json.dumps(export_only(Path(a._export[0]), Path(a._export[1]), a.block)))
        return 0
    if a._run:
        print(json.dumps(run(Path(a._run[0]), Path(a._run[1]), a.model, a.points_per_side,
                             a.block)))
        return 0
    sys.path.insert(0, str(ROOT))
    from napari_sam.training.geo_scene import GeoScene

    with tempfile.TemporaryDirectory(dir=a.scratch, prefix="napari-sam-geo-") as tmp:
        tmp = Path(tmp)
        t = time.perf_counter()
        scene = GeoScene((a.size, a.size), seed=0)
        scene.write_geotiff(tmp / "scene.tif")
        if a.truth:
            _write_truth(scene, tmp / "truth.zarr")
        write_s = time.perf_counter() - t
        step = ["--_export"] if a.truth else ["--_run"]
        out = subprocess.run([sys.executable, __file__] + step + [
            str(tmp / "scene.tif"), str(tmp), "--model", a.model, "--points-per-side",
            str(a.points_per_side), "--block", str(a.block)],
            capture_output=True, text=True, check=True)
        row = json.loads(out.stdout.strip().splitlines()[-1])
        row["scene_write_s"] = round(write_s, 1)
    print(json.dumps(row, indent=1))
    if a.json:
        Path(a.json).write_text(json.dumps(row, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
