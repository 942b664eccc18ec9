"""Label images to and from COCO JSON with RLE segmentations (pycocotools).

Written files are ordinary COCO "instances" files (`pycocotools.coco.COCO(path)` loads them):
  images:      one record per 2D image: {"id", "file_name", "height", "width"}
  annotations: one per object and image: {"id", "image_id", "category_id",
               "segmentation": {"size": [h, w], "counts": "<compressed RLE string>"},
               "area", "bbox": [x, y, w, h], "iscrowd": 0, "label_id"} plus "score",
               "predicted_iou", "stability_score" when per-object records are given
  categories:  [{"id": 1, "name": category, "supercategory": category}]
plus a "napari_sam" block ({"shape", "image_name", "version"}) that other tools ignore.

`label_id` is the object's value in the label image, so label image -> COCO -> label image
gives back the same ids and pixels exactly. Annotation ids are 1, 2, ... in writing order.

Stacks (Z, Y, X) or (T, Y, X): one COCO image per slice, ids `image_id + z`, file names
`"<image_name>[z]"` (e.g. "cells.tif[3]") and an extra "z" field with the slice index. An
object present on several slices (linked ids) has one annotation per slice, with the same
label_id.

Reading (`read_coco`) accepts RLE (compressed string or uncompressed counts list) and
polygon segmentations. Each annotation is painted with its `label_id` when every
annotation has one, otherwise with 1, 2, ... in annotation order; where annotations
overlap, later ones win. The RLE encoding and decoding are in `napari_sam.io.coco_rle`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import numpy as np

from .atomic import atomic_write
from .coco_checks import checked_shape, image_size, slice_index
# the RLE helpers live in coco_rle; imported here by their old names (tests use them)
from .coco_rle import (  # noqa: F401
    _compress, _counts_from_string, _objects, _pixels, _rle_counts, _rle_counts_of,
    _rle_to_json)
from .labels import to_uint32


FORMAT_VERSION = 1
SCORE_FIELDS = ("score", "predicted_iou", "stability_score", "stability")
_ID_FIELDS = ("label", "label_id", "id")


# ---------------------------------------------------------------------------------------
# records

def _records_by_label(records, ids: Sequence[int]) -> Dict[int, Mapping[str, Any]]:
    """Match per-object records to label ids.

    Accepted: a mapping {label id: record}; a list of records naming their label under
    "label", "label_id" or "id"; or a list with one record per label, in ascending label
    order (record i describes the i-th smallest label id).
    """
    if records is None:
        return {}
    if isinstance(records, Mapping):
        return {int(k): v for k, v in records.items()}
    records = list(records)
    for key in _ID_FIELDS:
        if records and all(isinstance(r, Mapping) and key in r for r in records):
            return {int(r[key]): r for r in records}
    if len(records) == len(ids):
        return dict(zip(ids, records))
    raise ValueError(
        f"{len(records)} records for {len(ids)} objects: give each record a 'label' field "
        "(its id in the label image), pass a dict {label id: record}, or one record per "
        "object in ascending label order")


def _scores(record: Optional[Mapping[str, Any]]) -> Dict[str, float]:
    out = {}
    for key in SCORE_FIELDS:
        value = None if record is None else record.get(key)
        if value is None:
            continue
        try:
            value = float(value)
        except (TypeError, ValueError):
            continue
        if np.isfinite(value):
            out["stability_score" if key == "stability" else key] = value
    if "score" not in out and "predicted_iou" in out:
        out["score"] = out["predicted_iou"]
    return out


# ---------------------------------------------------------------------------------------
# writing

def labels_to_coco(labels, image_name: str, records=None, image_id: int = 1,
                   category: str = "object", pixel_size=None, z_size=None) -> dict:
    """A COCO dataset dict for a 2D (Y, X) or stacked (Z/T, Y, X) label image.

    records: per-object scores (see `_records_by_label` for the accepted forms); their
    score, predicted_iou and stability(_score) fields are copied into the annotations.
    pixel_size ((row, col) µm) and z_size (µm), when known, go into the "napari_sam" entry
    so that the file reopens at the image's scale (`stored_scale`).

    Parameters
    ----------
    labels : array_like
        (Y, X) or (Z, Y, X) integer labels (0 background), converted to uint32.
    image_name : str
        The image's name, used for "file_name" ("<image_name>[z]" for a stack).
    records : mapping or list of dict, optional
        Per-object records with scores; None writes none.
    image_id : int
        The id of the first COCO image (slice z gets image_id + z).
    category : str
        Name of the single category (id 1).
    pixel_size : (float, float), optional
        (row, col) pixel size in µm.
    z_size : float, optional
        Slice spacing in µm.

    Returns
    -------
    dict
        A JSON-ready COCO dataset ("info", "images", "annotations", "categories",
        "napari_sam"); bbox is COCO's [x, y, w, h] (x = col).
    """
    labels = to_uint32(labels)
    if labels.ndim not in (2, 3):
        raise ValueError(f"COCO export takes (Y, X) labels or a (Z, Y, X) stack, got shape "
                         f"{labels.shape}; export one time point at a time")
    stack = labels.ndim == 3
    slices = labels if stack else labels[None]
    height, width = slices.shape[1:]
    per_slice = [_objects(s) for s in slices]
    all_ids = sorted({lab for objs in per_slice for lab, _ in objs})
    by_label = _records_by_label(records, all_ids)
    images, annotations = [], []
    ann_id = 0
    for z, (plane, objs) in enumerate(zip(slices, per_slice)):
        img_id = int(image_id) + z
        image = {"id": img_id, "file_name": f"{image_name}[{z}]" if stack else str(image_name),
                 "height": int(height), "width": int(width)}
        if stack:
            image["z"] = z
        images.append(image)
        for lab, (rs, cs) in objs:
            crop = plane[rs, cs] == lab
            counts = _rle_counts(crop, rs.start, cs.start, height, width)
            ann_id += 1
            ann = {"id": ann_id, "image_id": img_id, "category_id": 1,
                   "segmentation": _rle_to_json(_compress(counts, height, width)),
                   "area": int(crop.sum()),
                   "bbox": [float(cs.start), float(rs.start), float(cs.stop - cs.start),
                            float(rs.stop - rs.start)],
                   "iscrowd": 0, "label_id": int(lab)}
            ann.update(_scores(by_label.get(lab)))
            annotations.append(ann)
    return {
        "info": {"description": f"labels of {image_name}", "contributor": "napari-sam"},
        "images": images,
        "annotations": annotations,
        "categories": [{"id": 1, "name": category, "supercategory": category}],
        "napari_sam": {"version": FORMAT_VERSION, "shape": [int(n) for n in labels.shape],
                       "image_name": str(image_name),
                       **({"pixel_size": [float(v) for v in pixel_size]} if pixel_size else {}),
                       **({"z_size": float(z_size)} if z_size else {})},
    }


def stored_scale(data: dict):
    """(pixel_size (row, col) µm or None, z_size µm or None) stored by `labels_to_coco`.

    Parameters
    ----------
    data : dict
        A loaded COCO dataset.

    Returns
    -------
    pixel_size : (float, float) or None
        (row, col) µm; None when absent, malformed or not positive and finite.
    z_size : float or None
        µm; None likewise.
    """
    info = data.get("napari_sam") if isinstance(data, dict) else None
    info = info if isinstance(info, dict) else {}
    try:
        px = info.get("pixel_size")
        px = tuple(float(v) for v in px) if px is not None and len(px) == 2 else None
        z = float(info["z_size"]) if info.get("z_size") is not None else None
    except (TypeError, ValueError):
        return None, None
    ok = px is None or all(np.isfinite(v) and v > 0 for v in px)
    return (px if ok else None), (z if z is not None and np.isfinite(z) and z > 0 else None)


def write_coco(path, labels, image_name: str, records=None, overwrite: bool = False,
               category: str = "object", pixel_size=None, z_size=None) -> Path:
    """Write `labels` as COCO JSON to `path` atomically; return the path. pixel_size and
    z_size (µm), when given, are stored for the reader (see `labels_to_coco`).

    Parameters
    ----------
    path : str or os.PathLike
        The .json file to write.
    labels : array_like
        (Y, X) or (Z, Y, X) integer labels, 0 background.
    image_name : str
        The image's name (COCO "file_name").
    records : mapping or list of dict, optional
        Per-object scores (see `labels_to_coco`).
    overwrite : bool
        Replace an existing file (else `FileExistsError`).
    category : str
        Name of the single category.
    pixel_size : (float, float), optional
        (row, col) pixel size in µm.
    z_size : float, optional
        Slice spacing in µm.

    Returns
    -------
    pathlib.Path
        `path`.
    """
    data = labels_to_coco(labels, image_name, records=records, category=category,
                          pixel_size=pixel_size, z_size=z_size)
    path = Path(path)
    with atomic_write(path, overwrite=overwrite, mode="w", encoding="utf-8") as f:
        json.dump(data, f, separators=(",", ":"))
    return path


# ---------------------------------------------------------------------------------------
# reading

def _load(path) -> dict:
    try:
        with open(path, "r", encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from err
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not a text (UTF-8 JSON) file; is it a COCO .json?") from None
    if not isinstance(data, dict) or not isinstance(data.get("annotations"), list) or \
            not isinstance(data.get("images"), list):
        raise ValueError(f"{path}: not a COCO file (needs 'images' and 'annotations' lists)")
    return data


def _slices(data: dict, shape, path) -> Tuple[Tuple[int, ...], Dict[Any, Tuple[int, int, int]]]:
    """(labels shape, {image id: (slice index, height, width)})."""
    images = data["images"]
    if not images:
        raise ValueError(f"{path}: the COCO file lists no images")
    if not all(isinstance(im, Mapping) for im in images):
        raise ValueError(f"{path}: 'images' must be a list of objects with id, height, width")
    block = data.get("napari_sam")
    stored = block.get("shape") if isinstance(block, Mapping) else None
    if shape is None and stored:
        shape = checked_shape(stored, f"{path}: the stored napari_sam shape")
    hw = [image_size(im, path) for im in images]
    zs = [slice_index(im.get("z", i), im, path) for i, im in enumerate(images)]
    if shape is None:
        if len(images) == 1:
            shape = hw[0]
        else:
            if len(set(hw)) != 1:
                raise ValueError(f"{path}: {len(images)} images of different sizes; pass "
                                 "shape= or read them one by one")
            shape = (max(int(z) for z in zs) + 1,) + hw[0]
    shape = checked_shape(shape, f"{path}: shape")
    if len(shape) == 2 and len(images) > 1:
        raise ValueError(f"{path}: {len(images)} images do not fit a 2D shape {shape}")
    index = {}
    for im, z, (h, w) in zip(images, zs, hw):
        if (h, w) != shape[-2:]:
            raise ValueError(f"{path}: image {im.get('id')} is {h} x {w}, the labels are "
                             f"{shape[-2]} x {shape[-1]}")
        z = int(z) if len(shape) == 3 else 0
        if len(shape) == 3 and not 0 <= z < shape[0]:
            raise ValueError(f"{path}: slice {z} outside a stack of {shape[0]}")
        index[im.get("id")] = (z, h, w)
    return shape, index


def coco_to_labels(data: dict, shape=None, path="COCO data") -> np.ndarray:
    """Paint a loaded COCO dict into a uint32 label image (see `read_coco`).

    Parameters
    ----------
    data : dict
        A COCO dataset with "images" and "annotations" lists.
    shape : tuple of int, optional
        (Y, X) or (Z, Y, X) of the labels; None as in `read_coco`.
    path : str or os.PathLike
        Where `data` came from, for error messages.

    Returns
    -------
    ndarray
        uint32 labels, (Y, X) or (Z, Y, X), 0 background.
    """
    shape, index = _slices(data, shape, path)
    anns = data["annotations"]
    use_ids = bool(anns) and all(isinstance(a, Mapping) and isinstance(a.get("label_id"), int)
                                 and not isinstance(a.get("label_id"), bool) for a in anns)
    labels = np.zeros(shape, np.uint32)
    planes = labels if labels.ndim == 3 else labels[None]
    for n, ann in enumerate(anns):
        if not isinstance(ann, Mapping):
            raise ValueError(f"{path}: annotation {n} is a {type(ann).__name__}, not an object")
        try:
            z, h, w = index[ann["image_id"]]
        except (KeyError, TypeError):
            raise ValueError(f"{path}: annotation {ann.get('id')} refers to image "
                             f"{ann.get('image_id')!r}, which is not listed") from None
        value = ann["label_id"] if use_ids else n + 1
        if not 0 < value <= 2 ** 32 - 1:
            raise ValueError(f"{path}: label_id {value} outside 1 .. 2**32 - 1")
        try:
            rows, cols = _pixels(ann.get("segmentation"), h, w)
        except (ValueError, TypeError) as err:
            raise ValueError(f"{path}: annotation {ann.get('id')}: {err}") from None
        planes[z, rows, cols] = value
    return labels


def read_coco(path, shape=None) -> np.ndarray:
    """Read a COCO JSON file into a uint32 label image.

    shape: (Y, X) or (Z, Y, X); by default the shape stored by `write_coco`, else that of
    the single image, else a stack of all images (slice index from their "z" field, or their
    order). Annotations are painted in file order with their `label_id` (if all have one)
    or 1, 2, ...

    Parameters
    ----------
    path : str or os.PathLike
        The COCO .json file.
    shape : tuple of int, optional
        (Y, X) or (Z, Y, X) of the labels.

    Returns
    -------
    ndarray
        uint32 labels, (Y, X) or (Z, Y, X), 0 background.
    """
    return coco_to_labels(_load(path), shape=shape, path=path)


def looks_like_coco(path, head_bytes: int = 1 << 16) -> bool:
    """Cheap check: a JSON object whose beginning mentions COCO keys.

    Parameters
    ----------
    path : str or os.PathLike
        The file to look at.
    head_bytes : int
        How many bytes of the beginning to read.

    Returns
    -------
    bool
        True when it starts with "{" and mentions "images" or "annotations"; False also
        when the file cannot be read.
    """
    try:
        with open(path, "rb") as f:
            head = f.read(head_bytes)
    except OSError:
        return False
    text = head.lstrip()
    return text.startswith(b"{") and (b'"images"' in text or b'"annotations"' in text)
