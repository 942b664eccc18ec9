"""Geospatial options of `napari-sam automask`: bands, vector outputs, prompts from vectors.

    napari-sam automask scene.tif -o out --bands 4,1,2 --format gpkg,geojson
    napari-sam automask scene.tif -o out --bands red,green,blue --vector-crs EPSG:4326
    napari-sam automask scene.tif -o out --bands true-color --prompts buildings.gpkg

`--bands` picks 1 to 3 bands by number (from 1, as GDAL numbers them) or by the file's band
names, or a composite (true-color, false-color); see `napari_sam.io.bands`. `--prompts`
segments one object per box / point of a vector file instead of the automatic grid
(`napari_sam.vector_segment`), writing the same outputs.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the "satellite and aerial images" option group.

    Parameters
    ----------
    parser : argparse.ArgumentParser
        The `automask` parser.
    """
    g = parser.add_argument_group("satellite and aerial images")
    g.add_argument("--bands", default=None, metavar="4,3,2|NAMES|true-color",
                   help="bands to segment on: 1 to 3 band numbers (from 1), band names "
                        "(e.g. nir,red,green) or true-color / false-color")
    g.add_argument("--vector-crs", default="native", metavar="native|EPSG:4326",
                   help="CRS of the geojson/gpkg polygons (default: the image's own)")
    g.add_argument("--simplify", type=float, default=0.0, metavar="TOL",
                   help="simplify polygons (topology kept) with this tolerance (default: 0, "
                        "exact pixel outlines)")
    g.add_argument("--simplify-units", choices=("px", "map"), default="px",
                   help="units of --simplify: pixels or map units (e.g. metres)")
    g.add_argument("--prompts", default=None, metavar="FILE",
                   help="GeoJSON/GeoPackage of boxes (polygons) and points, any CRS: segment "
                        "one object per prompt instead of everything")


def vector_options(args: argparse.Namespace) -> dict:
    """The vector output options (`batch.run_batch(vectors=...)`) from the parsed options.

    Parameters
    ----------
    args : argparse.Namespace
        Parsed `automask` arguments with vector_crs, simplify and simplify_units.

    Returns
    -------
    dict
        {"crs", "simplify", "simplify_units"}.
    """
    if args.simplify < 0:
        raise SystemExit("napari-sam automask: error: --simplify must be 0 or more")
    return {"crs": args.vector_crs, "simplify": args.simplify,
            "simplify_units": args.simplify_units}


def resolve_bands(args: argparse.Namespace) -> None:
    """Turn --bands into 0-based `args.channels` (names from the first input's bands).

    Parameters
    ----------
    args : argparse.Namespace
        Parsed `automask` arguments; `args.channels` is set in place (SystemExit for a
        bad --bands, or --bands with --channels).
    """
    if args.bands is None:
        return
    if args.channels is not None:
        raise SystemExit("napari-sam automask: error: give --bands or --channels, not both")
    from ..batch import expand_inputs
    from ..io.bands import parse_bands
    from ..io.images import read_meta

    files, _ = expand_inputs(args.inputs)
    names, n = None, None
    if files:
        try:
            meta = read_meta(files[0])
            names = meta.band_names
            n = meta.shape[-1] if "C" in meta.axes else 1
        except (OSError, ValueError):
            pass
    try:
        args.channels = parse_bands(args.bands, names, n)
    except ValueError as err:
        raise SystemExit(f"napari-sam automask: error: {err}")


def run_prompts(args: argparse.Namespace, opts: dict, progress, log=None) -> dict:
    """The --prompts path: per input, objects from the vector prompts -> the usual outputs.

    Parameters
    ----------
    args : argparse.Namespace
        Parsed `automask` arguments (inputs, output, prompts, tile_size, overlap).
    opts : dict
        `automask.batch_options(args)`.
    progress : callable
        progress(done, total, message), see `napari_sam.progress`.
    log : callable, optional
        log(message) for one line per input.

    Returns
    -------
    dict
        A summary as `batch.run_batch` returns ("inputs", "processed", "skipped",
        "failed", "objects", "seconds", "outdir", "files").
    """
    from ..batch import _write_outputs, expand_inputs, is_complete, output_paths, output_stem
    from ..io.images import read_image
    from ..vector_segment import segment_vector_prompts

    t0 = time.perf_counter()
    say = log or (lambda msg: None)
    prompts = Path(args.prompts)
    if not prompts.is_file():
        raise SystemExit(f"napari-sam automask: error: --prompts {prompts}: no such file")
    files, problems = expand_inputs(args.inputs)
    results = [{"path": p, "status": "failed", "error": why, "objects": 0} for p, why in problems]
    outdir = Path(args.output)
    outdir.mkdir(parents=True, exist_ok=True)
    for path in files:
        paths = output_paths(outdir, output_stem(path), opts["formats"], opts["overlay"])
        info = {"path": str(path), "outputs": [str(p) for p in paths.values()], "objects": 0}
        todo = paths if opts["overwrite"] else {k: p for k, p in paths.items()
                                                if not is_complete(p)}
        if not todo:
            results.append(dict(info, status="skipped"))
            continue
        try:
            res = segment_vector_prompts(str(path), prompts, opts.get("model"),
                                         channels=opts.get("channels"),
                                         tile_size=getattr(args, "tile_size", None),
                                         overlap=getattr(args, "overlap", None),
                                         device=opts["device"], precision=opts["precision"],
                                         progress=progress)
            image, meta = read_image(path, channels=opts.get("channels"))
            every = read_image(path)[0] if opts.get("channels") is not None else image
            _write_outputs(todo, image, meta, res.labels, res.records, path.name,
                           opts["overwrite"], opts.get("vectors"), every)
            info.update(status="processed", objects=len(res.records))
        except (KeyboardInterrupt, MemoryError):
            raise
        except Exception as err:  # noqa: BLE001 - one bad file must not stop the batch
            info.update(status="failed", error=f"{type(err).__name__}: {err}")
        results.append(info)
        say(f"{info['status']} {path}: " + (info.get("error") or f"{info['objects']} objects"))
    count = lambda s: sum(r["status"] == s for r in results)  # noqa: E731
    return {"inputs": len(results), "processed": count("processed"),
            "skipped": count("skipped"), "failed": count("failed"),
            "objects": int(sum(r.get("objects", 0) for r in results)),
            "seconds": round(time.perf_counter() - t0, 3), "outdir": str(outdir),
            "files": results}
