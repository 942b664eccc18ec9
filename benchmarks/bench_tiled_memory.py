"""Peak memory of tiled automask does not grow with the image.

For each size, a synthetic nuclei scene is written as a tiled BigTIFF to a scratch folder,
tile by tile from a generator (never whole in memory), then segmented by `tiled_automask`
into an on-disk zarr label image, each step in a fresh subprocess. The peak resident set
(`ru_maxrss`) of the segmenting process is reported next to the image size.

    python benchmarks/bench_tiled_memory.py                       # 4096 and 16384, bundled
    python benchmarks/bench_tiled_memory.py --sizes 2048 4096 --arch test_vit

The bundled model is used when its weights exist (napari_sam/weights/bundled.pt), else
`--arch` (default test_vit, random weights: the memory path is the same, only the masks
differ; its scores are uncalibrated, so its masks are kept with thresholds 0). `--points-per-side` defaults to 8 so a 16k image (7,225 tiles of 256) finishes in
reasonable CPU time; memory per tile grows with it only through one decoder batch.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
CELL = 512  # the scene is generated (and written) in cells of this size


# nuclei diameters of the scene: uniform in this range (px); `--nucleus-diameter D` sets
# D * (0.8 .. 1.2) instead
DIAMETERS = (12.0, 44.0)


def _disks(cy: int, cx: int, seed: int):
    """The nuclei whose centres lie in cell (cy, cx): (row, col, radius, brightness)."""
    rng = np.random.default_rng([seed, cy, cx])
    lo, hi = DIAMETERS
    # 20 to 60 nuclei per cell at the default sizes; as many more as keeps the covered area
    n = int(rng.integers(20, 60) * (28.0 / (0.5 * (lo + hi))) ** 2)
    r = rng.uniform(lo / 2, hi / 2, n)
    pos = rng.uniform(0, CELL, (n, 2)) + (cy * CELL, cx * CELL)
    return np.c_[pos, r, rng.uniform(0.4, 1.0, n)]


def scene_tile(y0: int, x0: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    """uint16 pixels of the window (y0, x0, h, w) of an endless nuclei scene."""
    img = np.zeros((h, w), np.float32)
    rr, cc = np.mgrid[y0:y0 + h, x0:x0 + w]
    for cy in range(y0 // CELL - 1, (y0 + h) // CELL + 2):
        for cx in range(x0 // CELL - 1, (x0 + w) // CELL + 2):
            if cy < 0 or cx < 0:
                continue
            for py, px, r, b in _disks(cy, cx, seed):
                if py + r < y0 or py - r > y0 + h or px + r < x0 or px - r > x0 + w:
                    continue
                d2 = (rr - py) ** 2 + (cc - px) ** 2
                img = np.maximum(img, b * np.clip(1.2 - d2 / (r * r), 0, 1))
    noise = np.random.default_rng([seed, y0, x0]).normal(0, 0.03, (h, w))
    return np.clip(100 + 3000 * (img + noise), 0, 65535).astype(np.uint16)


def write_scene(path: Path, size: int, tile: int = 512) -> None:
    """A size x size uint16 BigTIFF with 512 x 512 tiles, written from a generator."""
    import tifffile

    def tiles():
        for y in range(0, size, tile):
            for x in range(0, size, tile):
                yield scene_tile(y, x, tile, tile)  # edge tiles are padded by tifffile

    tifffile.imwrite(path, tiles(), shape=(size, size), dtype=np.uint16, tile=(tile, tile),
                     bigtiff=True, compression="zlib")


def segment(path: Path, out: Path, arch: str, points: int, tile_size, overlap,
            model_name: str = "") -> dict:
    sys.path.insert(0, str(ROOT))
    import torch

    from napari_sam.model import load_model
    from napari_sam.model.registry import BUNDLED_PATH, build_model
    from napari_sam.automask import tiled_automask

    trained = bool(model_name) or BUNDLED_PATH.is_file()
    torch.manual_seed(0)
    model = load_model(model_name or "bundled") if trained else build_model(arch)
    # a random model's scores are not calibrated: thresholds 0 keep its masks, so painting
    # and stitching are measured too
    thresholds = {} if trained else dict(pred_iou_thresh=0.0, stability_thresh=0.0)
    t = time.perf_counter()
    res = tiled_automask(str(path), model, out=out, tile_size=tile_size, overlap=overlap,
                         points_per_side=points, overwrite=True, **thresholds)
    return {"model": model.config.name, "weights": "trained" if trained else "random",
            "source": model_name or ("bundled" if trained else arch), "tiles": res.tiles_run, "grid": list(res.grid_shape),
            "objects": len(res.records), "seconds": round(time.perf_counter() - t, 1),
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def segment_cli(path: Path, out: Path) -> dict:
    """What a user gets with `napari-sam automask BIG.tif -o OUT --tiling on` and no other
    option: the bundled model, diameter estimated, mode auto (AIS), tiles at the zoom."""
    sys.path.insert(0, str(ROOT))
    from napari_sam.cli import main as cli

    t = time.perf_counter()
    rc = cli(["automask", str(path), "-o", str(out), "--tiling", "on", "--format", "tif,csv",
              "--overwrite", "--quiet"])
    seconds = time.perf_counter() - t
    import csv

    with open(out / (path.stem + "_objects.csv")) as f:
        objects = sum(1 for _ in csv.DictReader(f))
    return {"model": "bundled (CLI default path)", "weights": "trained", "rc": rc,
            "source": "napari-sam automask --tiling on", "tiles": -1, "grid": [],
            "objects": objects, "seconds": round(seconds, 1),
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[4096, 16384])
    ap.add_argument("--arch", default="test_vit", help="model when bundled weights are missing")
    ap.add_argument("--model", default="", help="a model name or checkpoint file (default: "
                    "the bundled model; its automask thresholds are used)")
    ap.add_argument("--json", default="", help="also write the rows to this JSON file")
    ap.add_argument("--points-per-side", type=int, default=8)
    ap.add_argument("--tile-size", type=int, default=None)
    ap.add_argument("--overlap", type=int, default=None)
    ap.add_argument("--scratch", default=None, help="folder for the images (default /tmp)")
    ap.add_argument("--keep", action="store_true", help="keep the images and labels")
    ap.add_argument("--cli", action="store_true", help="segment with the command line's "
                    "default path (napari-sam automask --tiling on: diameter estimated, AIS) "
                    "and report megapixels per minute")
    ap.add_argument("--nucleus-diameter", type=float, default=None, metavar="D",
                    help="nuclei of D * (0.8 .. 1.2) px (default: 12 to 44 px)")
    # internal: one step in a child process
    ap.add_argument("--_write", nargs=2, metavar=("PATH", "SIZE"), help=argparse.SUPPRESS)
    ap.add_argument("--_segment", nargs=2, metavar=("PATH", "OUT"), help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    global DIAMETERS
    if a.nucleus_diameter:
        DIAMETERS = (0.8 * a.nucleus_diameter, 1.2 * a.nucleus_diameter)
    if a._write:
        write_scene(Path(a._write[0]), int(a._write[1]))
        return 0
    if a._segment and a.cli:
        print(json.dumps(segment_cli(Path(a._segment[0]), Path(a._segment[1]))))
        return 0
    if a._segment:
        print(json.dumps(segment(Path(a._segment[0]), Path(a._segment[1]), a.arch,
                                 a.points_per_side, a.tile_size, a.overlap, a.model)))
        return 0
    scratch = Path(a.scratch or tempfile.mkdtemp(prefix="napari-sam-bench-", dir="/tmp"))
    me = [sys.executable, __file__, "--arch", a.arch, "--points-per-side",
          str(a.points_per_side), "--model", a.model]
    if a.cli:
        me.append("--cli")
    if a.nucleus_diameter:
        me += ["--nucleus-diameter", str(a.nucleus_diameter)]
    if a.tile_size:
        me += ["--tile-size", str(a.tile_size)]
    if a.overlap is not None:
        me += ["--overlap", str(a.overlap)]
    rows = []
    for size in a.sizes:
        img = scratch / f"scene_{size}.tif"
        t = time.perf_counter()
        subprocess.run(me + ["--_write", str(img), str(size)], check=True)
        wrote = time.perf_counter() - t
        out = subprocess.run(me + ["--_segment", str(img), str(scratch / f"labels_{size}.zarr")],
                             check=True, capture_output=True, text=True)
        row = json.loads(out.stdout.strip().splitlines()[-1])
        row.update(size=size, image_mib=round(size * size * 2 / 2 ** 20),
                   write_seconds=round(wrote, 1),
                   children_max_rss_mib=round(resource.getrusage(
                       resource.RUSAGE_CHILDREN).ru_maxrss / 1024))
        row["mpx_per_min"] = round(size * size / 1e6 / (row["seconds"] / 60), 2)
        rows.append(row)
        print(f"{row['mpx_per_min']:6.1f} Mpx/min", end="  ")
        print(f"{size:>6} px  image {row['image_mib']:>5} MiB  {row['tiles']:>5} tiles "
              f"{row['objects']:>7} objects  {row['seconds']:>7.1f} s  "
              f"peak RSS {row['peak_rss_mib']:7.0f} MiB  ({row['model']}, {row['weights']} "
              "weights)", flush=True)
        if not a.keep:
            import shutil

            img.unlink()
            shutil.rmtree(scratch / f"labels_{size}.zarr", ignore_errors=True)
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=1))
    if len(rows) > 1:
        r = rows[-1]["peak_rss_mib"] / rows[0]["peak_rss_mib"]
        print(f"peak RSS ratio {rows[-1]['size']} / {rows[0]['size']}: {r:.2f} "
              f"(image area ratio {(rows[-1]['size'] / rows[0]['size']) ** 2:.0f})")
    if not a.keep:
        try:
            os.rmdir(scratch)
        except OSError:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
