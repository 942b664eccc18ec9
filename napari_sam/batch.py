"""Automask over many files, with resumable outputs.

`run_batch` writes, per input, `OUTDIR/<stem>_labels.tif`, `<stem>_coco.json`,
`<stem>_objects.csv` (and `<stem>_overlay.png` on request) through `napari_sam.io`, whose
writes are atomic, so an output that exists is complete. An input whose requested outputs
all exist is skipped (unless `overwrite`); if only some exist, the missing ones are made
(from the existing label image when there is one, so they agree with it). A file that fails
is reported and the others go on. The model is loaded once for the whole batch. Stacks go
slice by slice through `automask.stack.automask_stack`.
"""

from __future__ import annotations

import glob
import os
import time
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from .automask.amg import split_kwargs
from .automask.stack import automask_stack
from .io.outdir import prepare_outdir, remove_stale_partials  # noqa: F401 (public here too)
from .progress import null_progress
from .io.axes import as_slices, guess_axes  # noqa: F401 (public here too)
from .io.overlay import overlay_rgb, write_overlay  # noqa: F401 (public here too)

IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg")
FORMATS = ("tif", "coco", "csv", "geojson", "gpkg")
DEFAULT_FORMATS = ("tif", "coco", "csv")
SUFFIX = {"tif": "_labels.tif", "coco": "_coco.json", "csv": "_objects.csv",
          "geojson": "_objects.geojson", "gpkg": "_objects.gpkg", "overlay": "_overlay.png"}
VECTOR_FORMATS = ("geojson", "gpkg")  # polygons in the image's CRS (napari_sam.io.vectors)


# --------------------------------------------------------------------------- files
def expand_inputs(inputs: Iterable[str]) -> Tuple[List[Path], List[Tuple[str, str]]]:
    """Files, folders (their images, not recursive) and glob patterns -> (images, problems).

    Parameters
    ----------
    inputs : iterable of str
        Image files, folders (their .tif/.tiff/.png/.jpg files) or glob patterns.

    Returns
    -------
    images : list of Path
        The images found, in input order, each once.
    problems : list of (str, str)
        (input, reason) for each input that gave no image.
    """
    found: List[Path] = []
    problems: List[Tuple[str, str]] = []
    for item in inputs:
        item = str(item)
        p = Path(item).expanduser()
        if p.is_dir():
            hits = sorted(q for q in p.iterdir()
                          if q.is_file() and q.suffix.lower() in IMAGE_SUFFIXES)
            if not hits:
                problems.append((item, "folder holds no .tif/.tiff/.png/.jpg images"))
        elif p.is_file():
            hits = [p]
        elif glob.has_magic(item):
            hits = sorted(Path(q) for q in glob.glob(os.path.expanduser(item), recursive=True)
                          if Path(q).is_file() and Path(q).suffix.lower() in IMAGE_SUFFIXES)
            if not hits:
                problems.append((item, "the pattern matches no images"))
        else:
            problems.append((item, "no such file or folder"))
            hits = []
        found += hits
    unique, seen = [], set()
    for p in found:
        key = p.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(p)
    return unique, problems


def output_stem(path: Path) -> str:
    """The name of `path` without its image suffix (".ome.tif" and the like count as one).

    Parameters
    ----------
    path : Path
        An input image.

    Returns
    -------
    str
        The stem its output names start with.
    """
    name = path.name
    for ext in (".ome.tiff", ".ome.tif") + IMAGE_SUFFIXES:
        if name.lower().endswith(ext):
            return name[: -len(ext)]
    return path.stem


def output_paths(outdir: Path, stem: str, formats: Sequence[str], overlay: bool = False
                 ) -> Dict[str, Path]:
    """Where each requested output of one input goes.

    Parameters
    ----------
    outdir : Path
        The output folder.
    stem : str
        The input's `output_stem`.
    formats : sequence of str
        Output kinds, from `FORMATS`.
    overlay : bool
        Add the PNG overlay.

    Returns
    -------
    dict of str to Path
        Output kind -> `outdir / (stem + SUFFIX[kind])`.
    """
    kinds = list(formats) + (["overlay"] if overlay else [])
    return {k: Path(outdir) / f"{stem}{SUFFIX[k]}" for k in kinds}


def is_complete(path: Path) -> bool:
    """Outputs are written atomically, so one that exists and is not empty is complete.

    Parameters
    ----------
    path : Path
        An output file.

    Returns
    -------
    bool
        True when the file exists and is not empty.
    """
    return path.is_file() and path.stat().st_size > 0


def _write_outputs(todo: Dict[str, Path], image, meta, labels, records, name: str,
                   overwrite: bool, vectors: Optional[dict] = None, every_band=None) -> None:
    from .io.coco import write_coco
    from .io.labels import write_labels_tif
    from .io.tables import object_table, write_csv

    if "tif" in todo:
        write_labels_tif(todo["tif"], labels, meta=meta, overwrite=overwrite, records=records)
    # COCO and the table take (Y, X) or one stack axis: flatten T and Z together
    flat = labels.reshape((-1,) + labels.shape[-2:]) if labels.ndim > 3 else labels
    if "coco" in todo:
        write_coco(todo["coco"], flat, image_name=name, records=records, overwrite=overwrite)
    if "csv" in todo:
        intensity = None
        if image is not None and image.shape[:labels.ndim] == labels.shape:
            intensity = image.reshape(flat.shape + image.shape[labels.ndim:])
        write_csv(todo["csv"], object_table(flat, image=intensity), overwrite=overwrite)
    if "overlay" in todo and image is not None:
        write_overlay(todo["overlay"], image, labels, overwrite, getattr(meta, "axes", None))
    wanted = {k: p for k, p in todo.items() if k in VECTOR_FORMATS}
    if wanted:
        from .io.vectors import write_label_vectors

        write_label_vectors(wanted, labels, meta, records,
                            image if every_band is None else every_band, overwrite=overwrite,
                            **(vectors or {}))


def process_file(path: Path, generator, outdir: Path,
                 formats: Sequence[str] = DEFAULT_FORMATS, overwrite: bool = False,
                 overlay: bool = False,
                 link: bool = False, link_iou: float = 0.5, channels=None,
                 progress=null_progress, vectors: Optional[dict] = None, **generate_kw) -> dict:
    """Segment one file and write its outputs -> {"path", "status", "objects", "outputs"}.

    Pixels equal to the file's nodata value (in every band) never become objects, and are
    left out of the contrast range. vectors: options of the GeoJSON/GPKG outputs (crs,
    simplify, simplify_units; see `napari_sam.io.vectors.write_label_vectors`).

    Parameters
    ----------
    path : Path
        The input image (any axes `io.axes.guess_axes` knows: YX, YXC, ZYX, TZYXC, ...).
    generator : AutoSegmenter or AutoMaskGenerator
        Segments each (Y, X) or (Y, X, C) slice.
    outdir : Path
        The output folder.
    formats : sequence of str
        Output kinds, from `FORMATS`.
    overwrite : bool
        Remake outputs that exist.
    overlay : bool
        Also write the PNG overlay.
    link : bool
        Link the labels of a stack from slice to slice (same object, same label).
    link_iou : float
        Least IoU for two slices' objects to be linked.
    channels : sequence of int, optional
        Channels to read (None: all).
    progress : callable
        `progress(done, total, message)`.
    vectors : dict, optional
        Options of the vector outputs (above).
    **generate_kw
        Passed on to the generator for each slice.

    Returns
    -------
    dict
        "path" (str), "status" ("processed", "completed" or "skipped"), "objects" (int, the
        label count) and "outputs" (list of str).
    """
    from .io.images import read_image

    paths = output_paths(outdir, output_stem(path), formats, overlay)
    info = {"path": str(path), "outputs": [str(p) for p in paths.values()], "objects": 0}
    todo = paths if overwrite else {k: p for k, p in paths.items() if not is_complete(p)}
    if not todo:
        info["status"] = "skipped"
        return info
    image, meta = read_image(path, channels=channels)
    image = np.asarray(image)
    every_band = image  # vectors carry the mean of every band
    if set(todo) & set(VECTOR_FORMATS) and channels is not None:
        every_band = np.asarray(read_image(path)[0])
    axes = getattr(meta, "axes", None) or guess_axes(image.shape)
    c = image.shape[-1] if axes.endswith("C") else 0
    if channels is None and (c > 4 or (c == 4 and image.dtype != np.uint8)):
        raise ValueError(f"{path.name} has {c} channels (axes {axes}); the model takes up to "
                         "3: choose them with --channels (e.g. --channels 0 or --channels "
                         "0,1,2; channels=[...] in Python) or --bands (e.g. --bands 4,3,2)")
    valid = None
    if axes in ("YX", "YXC"):
        from .io.bands import valid_mask, value_range_valid

        valid = valid_mask(image, getattr(meta, "nodata", None))
        if valid is not None and generate_kw.get("value_range") is None:
            generate_kw["value_range"] = value_range_valid(image, valid)
    if not overwrite and "tif" in paths and "tif" not in todo:
        from .io.labels import read_label_records, read_labels

        # they exist: derive the missing outputs from them, scores included (stored in the
        # label TIFF beside the labels)
        labels, records = read_labels(paths["tif"])[0], read_label_records(paths["tif"])
        if records is not None:
            present = set(np.unique(labels[labels > 0]).tolist())
            records = [r for r in records if r.get("id") in present] or None
    else:
        res = automask_stack(image, generator, axes, link, link_iou, progress, **generate_kw)
        labels, records = res.labels, res.records
        if valid is not None:
            from .io.bands import mask_nodata

            labels, records = mask_nodata(labels, records, valid)
    info["objects"] = len(np.unique(labels[labels > 0]))
    _write_outputs(todo, image, meta, labels, records, path.name, overwrite, vectors,
                   every_band)
    info["status"] = "processed" if len(todo) == len(paths) else "completed"
    return info


def run_batch(inputs: Iterable[str], outdir, model=None,
              formats: Sequence[str] = DEFAULT_FORMATS,
              overwrite: bool = False, overlay: bool = False, link_slices: bool = False,
              link_iou: float = 0.5, channels=None, progress=null_progress,
              log: Optional[Callable[[str], None]] = None, generator=None, device="auto",
              vectors: Optional[dict] = None, **kw) -> dict:
    """Automask every input image into `outdir`; returns a summary (see module doc).

    model: as for `automask` (None = bundled); or pass a ready `generator` (an
    `AutoSegmenter` or `AutoMaskGenerator`). Other keywords go to `automask.AutoSegmenter`
    (mode, diameter, points_per_side, pred_iou_thresh, ...).

    Parameters
    ----------
    inputs : iterable of str
        Files, folders and glob patterns (`expand_inputs`).
    outdir : str or Path
        The output folder (made when missing).
    model : str or Sam, optional
        The model (None: the bundled one).
    formats : sequence of str
        Output kinds, from `FORMATS`.
    overwrite : bool
        Remake outputs that exist.
    overlay : bool
        Also write PNG overlays.
    link_slices : bool
        Link the labels of stacks from slice to slice.
    link_iou : float
        Least IoU for two slices' objects to be linked.
    channels : sequence of int, optional
        Channels to read (None: all).
    progress : callable
        `progress(done, total, message)`, over all files.
    log : callable, optional
        Gets one line of text per file.
    generator : AutoSegmenter or AutoMaskGenerator, optional
        A ready segmenter (then `model` is not loaded).
    device : str
        Where the model runs ("auto", "cpu", "cuda", ...).
    vectors : dict, optional
        Options of the GeoJSON/GPKG outputs.
    **kw
        Options of `AutoSegmenter` and of its runs.

    Returns
    -------
    dict
        "inputs", "processed", "skipped", "failed", "objects" (int counts), "seconds"
        (float), "outdir" (str) and "files" (one `process_file` dict per input).
    """
    from .automask.segmenter import AutoSegmenter

    t0 = time.perf_counter()
    bad = [f for f in formats if f not in FORMATS]
    if bad or not formats:
        raise ValueError(f"unknown output format(s) {bad}; choose from {', '.join(FORMATS)}")
    outdir = prepare_outdir(outdir)
    removed = remove_stale_partials(outdir)
    files, problems = expand_inputs(inputs)
    seg_kw = {k: kw.pop(k) for k in ("mode", "diameter") if k in kw}
    init_kw, run_kw, gen_kw = split_kwargs(kw)
    if run_kw.get("channels") is not None:
        channels = run_kw["channels"]
    stems: Dict[str, Path] = {}
    results = [{"path": p, "status": "failed", "error": why, "objects": 0} for p, why in problems]
    say = log or (lambda msg: None)
    if removed:
        say(f"removed {len(removed)} temporary file(s) that an interrupted run left in {outdir}")
    n = len(files)
    if generator is None and any(overwrite or not all(
            is_complete(q) for q in output_paths(outdir, output_stem(p), formats,
                                                 overlay).values()) for p in files):
        generator = AutoSegmenter(model, device=device, **seg_kw, **init_kw,
                                  **gen_kw)  # once for the batch
        gen_kw = {}
    for i, path in enumerate(files):
        stem = output_stem(path)
        if stem in stems:
            results.append({"path": str(path), "status": "failed", "objects": 0,
                            "error": f"its outputs would overwrite those of {stems[stem]}"})
            say(f"failed {path}: outputs collide with {stems[stem]} (same name)")
            continue
        stems[stem] = path

        def sub(done, total, message="", _i=i, _name=path.name):
            progress(_i * 1000 + (done * 1000 // total if total else 0), n * 1000,
                     f"{_name} {message}".strip())

        try:
            info = process_file(path, generator, outdir, formats, overwrite, overlay,
                                link_slices, link_iou, channels, sub, vectors, **gen_kw)
        except (KeyboardInterrupt, MemoryError):
            raise
        except Exception as err:  # one bad file must not stop the batch
            info = {"path": str(path), "status": "failed", "objects": 0,
                    "error": f"{type(err).__name__}: {err}"}
        results.append(info)
        progress((i + 1) * 1000, n * 1000, path.name)
        if info["status"] == "failed":
            say(f"failed {path}: {info['error']}")
        else:
            say(f"{info['status']} {path}: {info['objects']} objects")
    count = lambda s: sum(r["status"] == s for r in results)  # noqa: E731
    return {"inputs": len(results), "processed": count("processed") + count("completed"),
            "skipped": count("skipped"), "failed": count("failed"),
            "objects": int(sum(r.get("objects", 0) for r in results
                               if r["status"] in ("processed", "completed"))),
            "seconds": round(time.perf_counter() - t0, 3), "outdir": str(outdir),
            "files": results}
