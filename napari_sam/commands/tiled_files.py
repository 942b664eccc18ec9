"""Tiling options of `napari-sam automask` and the tiled path through a batch.

    napari-sam automask BIG.tif -o OUTDIR --tile-size 256 --overlap 64
    napari-sam automask slides/ -o OUTDIR --tiling on --scheduler tcp://10.0.0.5:8786

`--tiling auto` (the default) tiles 2D images whose longer side exceeds `--tiling-above`
(default: 4 tile sizes, 1024 pixels for the bundled model, 4096 for SAM), where the whole
image would reach the model shrunk 4 times or more; `on` tiles every 2D image, `off` none.
Other inputs (smaller images, stacks) go through `napari_sam.batch.run_batch` unchanged.
A tiled image writes `<stem>_labels.tif` (tiled BigTIFF, streamed) and
`<stem>_objects.csv` (from the stitched records); COCO JSON is written for tiled images
below 64 M pixels (it needs the label image in memory). GeoJSON / GeoPackage polygons are
built block by block from the zarr labels (`napari_sam.tiled.vectors`).
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

COCO_MAX_PIXELS = 64 * 2 ** 20


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the "large images (tiling)" option group.

    Parameters
    ----------
    parser : argparse.ArgumentParser
        The `automask` parser.
    """
    g = parser.add_argument_group("large images (tiling)")
    g.add_argument("--tiling", choices=("auto", "on", "off"), default="auto",
                   help="tile large 2D images at native resolution (auto: above "
                        "--tiling-above pixels on the longer side)")
    g.add_argument("--tile-size", type=int, default=None, metavar="N",
                   help="tile side in pixels (default: the model's input size)")
    g.add_argument("--overlap", type=int, default=None, metavar="N",
                   help="overlap of neighbouring tiles (default: 64 for 256-pixel tiles, "
                        "128 for 1024; at least the largest object's diameter)")
    g.add_argument("--tiling-above", type=int, default=None, metavar="PX",
                   help="auto-tiling threshold (default: 4 x the tile size)")
    g.add_argument("--cache", default=None, metavar="beside|user|DIR",
                   help="keep tile embeddings on disk for reuse (default: not kept)")
    g.add_argument("--scheduler", default=None, metavar="ADDRESS",
                   help="run tiles on Dask: a scheduler address (tcp://host:8786), 'local' "
                        "(a local cluster of processes) or 'threads'")
    g.add_argument("--workers", type=int, default=None, metavar="N",
                   help="workers for --scheduler local/threads")


def _plan(files, args, tile: int):
    """Split inputs into (tiled, plain) by size and axes."""
    from ..io.images import read_meta

    above = args.tiling_above or 4 * tile
    tiled, plain = [], []
    for p in files:
        try:
            meta = read_meta(p)
        except Exception:  # noqa: BLE001 - let the batch report unreadable files
            plain.append(p)
            continue
        flat = meta.axes in ("YX", "YXC")
        big = max(meta.shape[:2]) > above if flat else False
        (tiled if flat and (args.tiling == "on" or big) else plain).append(p)
    return tiled, plain


def _tiling_for(path: Path, model, args, opts: dict):
    """(tile, overlap, tile_input, per-tile segmenter) for one large file: --tile-size and
    --overlap when given, else from the objects' diameter (--diameter; estimated on a
    central window of at most 2,048 px), else the model's native tiling (--diameter off).
    tile_input: a tile's side in model-input pixels (None: the model's input)."""
    from ..scale import ZoomPlan, instance_tile_input, resolve_diameter, tiled_plan
    from ..automask.segmenter import AutoSegmenter
    from ..tiled.source import ImageSource

    keys = ("mode", "diameter", "points_per_side", "points_per_batch", "crop_n_layers",
            "pred_iou_thresh", "stability_thresh", "nms_thresh", "min_area")
    seg = AutoSegmenter(model, device=opts["device"], precision=opts["precision"],
                        **{k: opts[k] for k in keys if opts.get(k) is not None})
    src = ImageSource(path, opts.get("channels"))
    h, w = src.shape2d
    side = 2048
    r0, c0 = max(0, (h - side) // 2), max(0, (w - side) // 2)
    window = src.read((r0, c0, min(h, r0 + side), min(w, c0 + side)))
    diameter = resolve_diameter(window, opts.get("diameter"), opts.get("channels"), model)
    if args.tile_size is not None or diameter is None:
        plan = ZoomPlan(None, args.tile_size, args.overlap, diameter)
        return args.tile_size, args.overlap, None, seg.tile_segmenter(plan, (h, w))
    plan = tiled_plan(model, diameter, instance_tile_input(seg.model, seg.mode), (h, w))
    overlap = args.overlap if args.overlap is not None else plan.overlap
    return plan.tile, overlap, plan.tile_input, seg.tile_segmenter(plan, (h, w))


def _tiled_file(path: Path, model, args, opts: dict, progress) -> dict:
    from ..batch import is_complete, output_paths, output_stem
    from ..io.overlay import write_overlay
    from ..io.coco import write_coco
    from ..io.tables import write_csv
    from ..automask.tiled import tiled_automask
    from ..tiled.outputs import records_table, write_labels_tif_chunked

    outdir = Path(args.output)
    formats = [f for f in opts["formats"]]
    paths = output_paths(outdir, output_stem(path), formats, bool(opts.get("overlay")))
    info = {"path": str(path), "outputs": [str(p) for p in paths.values()], "objects": 0,
            "tiled": True}
    todo = paths if opts["overwrite"] else {k: p for k, p in paths.items() if not is_complete(p)}
    if not todo:
        info["status"] = "skipped"
        return info
    work = outdir / f".{output_stem(path)}.tiling"
    work.mkdir(parents=True, exist_ok=True)
    tile, overlap, tile_input, segmenter = _tiling_for(path, model, args, opts)
    res = tiled_automask(str(path), model, work / "labels.zarr", tile_size=tile,
                         overlap=overlap, tile_input=tile_input, channels=opts.get("channels"), cache=args.cache,
                         scheduler=args.scheduler, workers=args.workers, overwrite=True,
                         device=opts["device"], precision=opts["precision"], progress=progress,
                         segmenter=segmenter)
    from ..tiled.source import ImageSource

    meta = ImageSource(path, opts.get("channels")).meta
    if "tif" in todo:
        write_labels_tif_chunked(todo["tif"], res.labels, meta, overwrite=opts["overwrite"])
    if "csv" in todo:
        write_csv(todo["csv"], records_table(res.records, getattr(meta, "pixel_size", None)),
                  overwrite=opts["overwrite"])
    if "coco" in todo:
        h, w = res.labels.shape
        if h * w <= COCO_MAX_PIXELS:
            write_coco(todo["coco"], res.labels[:], image_name=path.name, records=res.records,
                       overwrite=opts["overwrite"])
        else:
            info["note"] = (f"COCO not written: {h} x {w} is above {COCO_MAX_PIXELS} pixels; "
                            "use the label TIFF or the CSV")
    vectors = {k: p for k, p in todo.items() if k in ("geojson", "gpkg")}
    if vectors:
        from ..tiled.outputs import write_tiled_vectors
        from ..tiled.source import open_image

        write_tiled_vectors(vectors, res.labels, open_image(path)[0], meta, res.records,
                            overwrite=opts["overwrite"], **(opts.get("vectors") or {}))
    if "overlay" in todo:
        h, w = res.labels.shape
        if h * w <= COCO_MAX_PIXELS:  # the overlay holds the image and labels in memory
            from ..io.images import read_image

            image, image_meta = read_image(path, opts.get("channels"))
            write_overlay(todo["overlay"], image, res.labels[:], opts["overwrite"],
                          getattr(image_meta, "axes", None))
        else:
            info["note"] = ((info.get("note", "") + "; ") if "note" in info else "") + (
                f"overlay not written: {h} x {w} is above {COCO_MAX_PIXELS} pixels")
    shutil.rmtree(work, ignore_errors=True)
    info["objects"] = len(res.records)
    info["status"] = "processed"
    return info


def run_with_tiling(args: argparse.Namespace, opts: dict, progress, log=None) -> dict:
    """`run_batch` for the plain inputs and the tiled path for large 2D images; returns one
    summary in `run_batch`'s form.

    Parameters
    ----------
    args : argparse.Namespace
        Parsed `automask` arguments (inputs, output and the tiling options).
    opts : dict
        `automask.batch_options(args)`.
    progress : callable
        progress(done, total, message), see `napari_sam.progress`.
    log : callable, optional
        log(message) for one line per input.

    Returns
    -------
    dict
        The summary ("inputs", "processed", "skipped", "failed", "objects", "seconds",
        "outdir", "files"); tiled inputs' entries have "tiled": True.
    """
    from ..batch import expand_inputs, prepare_outdir, remove_stale_partials, run_batch
    from ..model import load_model
    from ..tiled.embed import default_tiling

    t0 = time.perf_counter()
    say = log or (lambda msg: None)
    removed = remove_stale_partials(prepare_outdir(args.output))
    if removed:
        say(f"removed {len(removed)} temporary file(s) that an interrupted run left in "
            f"{args.output}")
    files, problems = expand_inputs(args.inputs)
    # the smallest model input (256) gives the lowest threshold: only when some image is
    # above it is the model loaded to know its tile size
    tiled, _ = _plan(files, args, args.tile_size or 256)
    if not tiled:
        return run_batch(args.inputs, args.output, progress=progress, log=log, **opts)
    model = load_model(opts.get("model"), opts.get("device", "auto"))
    tiled, plain = _plan(files, args, args.tile_size or default_tiling(model)[0])
    results = [{"path": str(p), "status": "failed", "error": why, "objects": 0}
               for p, why in problems]
    if plain:
        part = run_batch([str(p) for p in plain], args.output, progress=progress, log=log,
                         **dict(opts, model=model))
        results += part["files"]
    for path in tiled:
        try:
            info = _tiled_file(path, model, args, opts, progress)
        except (KeyboardInterrupt, MemoryError):
            raise
        except Exception as err:  # noqa: BLE001 - one bad file must not stop the batch
            info = {"path": str(path), "status": "failed", "objects": 0, "tiled": True,
                    "error": f"{type(err).__name__}: {err}"}
        results.append(info)
        say(f"{info['status']} {path} (tiled): " + (info.get("error") or
                                                    f"{info['objects']} objects"))
    count = lambda s: sum(r["status"] == s for r in results)  # noqa: E731
    return {"inputs": len(results), "processed": count("processed") + count("completed"),
            "skipped": count("skipped"), "failed": count("failed"),
            "objects": int(sum(r.get("objects", 0) for r in results)),
            "seconds": time.perf_counter() - t0, "outdir": str(args.output), "files": results}
