"""`napari_sam.annotate(image)`: open napari with the image and the interactive widget."""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import numpy as np

DOCK_NAME = "Segment Anything"


def _add_image(viewer, image, channels=None, name=None):
    if isinstance(image, (str, Path)):
        from ..io.images import read_image

        data, meta = read_image(image, channels=channels)
        name = name or Path(image).stem
        spatial = meta.axes.replace("C", "")
        scale = None
        if meta.pixel_size:
            scale = (1.0,) * (len(spatial) - 2) + tuple(meta.pixel_size)
        if meta.axes.endswith("C") and data.shape[-1] in (3, 4) and data.dtype == np.uint8:
            return viewer.add_image(data, name=name, rgb=True, scale=scale)
        if meta.axes.endswith("C"):
            return viewer.add_image(data, name=name, channel_axis=-1, scale=scale)[0]
        return viewer.add_image(data, name=name, scale=scale)
    data = np.asarray(image)
    rgb = data.ndim in (3, 4) and data.shape[-1] in (3, 4) and data.dtype == np.uint8
    return viewer.add_image(data, name=name or "image", rgb=rgb)


def annotate(image, model=None, *, device: str = "auto", labels=None,
             channels: Optional[Sequence[int]] = None, run: bool = True):
    """Open napari with `image` and the interactive segmentation widget docked.

    Parameters
    ----------
    image : ndarray or str or Path
        The image: (Y, X) grey, (Y, X, 3) or (Y, X, 4) uint8 RGB(A), or a (Z, Y, X) stack,
        any dtype; or the path of an image file (read with `io.images.read_image`, its
        pixel size becoming the layer's scale).
    model : Sam, str or Path, optional
        A loaded model, a registry name or a checkpoint path; None: the bundled model.
    device : str
        "auto", "cpu", "cuda", ... for the model.
    labels : ndarray, optional
        An existing label image, (Y, X) or (Z, Y, X) integer, matching the image's spatial
        shape: committed objects are added to it (new ids above its largest).
    channels : sequence of int, optional
        For a file path: the channels to read (at most 3).
    run : bool
        Start napari's event loop, blocking until the window closes. False: return the
        viewer at once (scripts and notebooks that run the loop themselves).

    Returns
    -------
    viewer : napari.Viewer
        The viewer; the widget is ``viewer.window.dock_widgets["Segment Anything"]``.
    """
    import napari

    from .widget import SamWidget

    viewer = napari.Viewer()
    layer = _add_image(viewer, image, channels)
    out = None
    if labels is not None:
        out = viewer.add_labels(np.asarray(labels), name=f"{layer.name} labels",
                                scale=layer.scale[-np.ndim(labels):],
                                translate=layer.translate[-np.ndim(labels):])
        viewer.layers.selection.active = layer
    widget = SamWidget(viewer, model=model, device=device)
    if out is not None:
        widget.labels_layer.value = out
    viewer.window.add_dock_widget(widget, name=DOCK_NAME, area="right")
    if run:
        napari.run()
    return viewer
