"""napari Tracks layers from track labels (T, Y, X), shared by the widgets."""

from __future__ import annotations

from typing import Dict, Optional, Tuple

import numpy as np

from ..volume.ctc import tracks_data
from . import layers as L


def lineage_of(labels: np.ndarray) -> Dict[int, Tuple[int, int, int]]:
    """{id: (first frame, last frame, 0)} of every id of (T, Y, X) labels (no parents)."""
    out = {}
    for t in range(labels.shape[0]):
        for i in np.unique(labels[t]).tolist():
            if i:
                a = out.get(i, (t, t, 0))[0]
                out[i] = (a, t, 0)
    return out


def refresh_tracks(viewer, labels: np.ndarray, image, layer=None,
                   lineage: Optional[dict] = None, name: Optional[str] = None):
    """Add or update the Tracks layer of (T, Y, X) track `labels` (one track per id at its
    centroids; `lineage` {id: (first, last, parent)} adds the division graph), with the
    image's scale and translate. Removes the layer when no object is left; returns the layer
    or None."""
    labels = np.asarray(labels)
    lineage = lineage if lineage is not None else lineage_of(labels)
    points, graph = tracks_data(labels, lineage)
    alive = layer is not None and layer in viewer.layers
    if len(points) == 0:
        if alive:
            viewer.layers.remove(layer)
        return None
    if alive:
        layer.data = points
        layer.graph = graph
        return layer
    return viewer.add_tracks(points, graph=graph, name=name or f"{image.name} tracks",
                             **L.transform(image, 3))


def show_linked(widget, layer) -> Optional[int]:
    """For the automatic widget's linked stack modes: the number of 3D objects or tracks of
    its session's newest result (None for other modes); in the tracks mode also adds or
    updates a Tracks layer (with the division graph) beside the labels `layer`."""
    from .automask_job import TRACKS

    session = getattr(widget, "session", None)
    lineage = getattr(session, "lineage", None)
    if lineage is None:
        return None
    layer.metadata["lineage"] = lineage
    if session.mode == TRACKS:
        widget.tracks_layer = refresh_tracks(
            widget.viewer, layer.data, widget._source, getattr(widget, "tracks_layer", None),
            lineage, name=f"{widget._source.name} tracks")
    return len(lineage)
