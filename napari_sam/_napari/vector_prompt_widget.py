"""Dock widget: segment one object per box / point of a vector file (GeoJSON, GeoPackage).

"Segment every building in this bounding-box layer": choose the image layer, the vector
file (any CRS: it is reprojected onto the image) and the bands; the result is a new Labels
layer with the image's scale, translate and georeferencing, ready for *Export labels*
(GeoJSON / GeoPackage). The work is `napari_sam.vector_segment.segment_vector_prompts`,
run in a napari worker; an image layer read from a file (metadata "source") is segmented
from that file, with every band, else from the layer's pixels.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Optional

from magicgui.widgets import ComboBox, Container, FileEdit, Label, LineEdit, PushButton

from .controls import _expanding_text
from .options import model_choices

if TYPE_CHECKING:  # pragma: no cover
    import napari


class VectorPromptWidget(Container):
    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        super().__init__(labels=True)
        self.viewer = viewer
        self.result = None
        self.image = ComboBox(label="image", choices=self._image_choices)
        self.vectors = FileEdit(label="prompts", mode="r", filter="*.geojson *.gpkg *.json",
                                tooltip="GeoJSON / GeoPackage of boxes (polygons) and points")
        self.bands = LineEdit(label="bands", value="",
                              tooltip="e.g. 4,3,2 (numbers from 1), nir,red,green or "
                                      "true-color; empty: the image's own (up to 3)")
        self.model = ComboBox(label="model", choices=model_choices(), value="bundled")
        self.run_button = PushButton(text="Segment prompts")
        self.status = Label(label="status", value="")
        self.extend([self.image, self.vectors, self.bands, self.model, self.run_button,
                     self.status])
        _expanding_text(self.status.native)
        self.run_button.changed.connect(self.start)
        viewer.layers.events.inserted.connect(self.reset_choices)
        viewer.layers.events.removed.connect(self.reset_choices)

    def _image_choices(self, *_):
        import napari.layers

        return [(ly.name, ly) for ly in self.viewer.layers
                if isinstance(ly, napari.layers.Image)]

    def job(self):
        """(callable computing the result, image layer) for the current settings; raises
        ValueError with a message for the user."""
        from napari_sam.io.georef import GeoRef
        from napari_sam.vector_segment import segment_vector_prompts

        layer = self.image.value
        if layer is None:
            raise ValueError("no image layer: open a GeoTIFF first")
        path = Path(str(self.vectors.value))
        if not path.is_file():
            raise ValueError(f"{path}: no such vector file")
        source = layer.metadata.get("source")
        georef = GeoRef.from_dict(layer.metadata.get("georef"))
        channels = None
        if self.bands.value.strip():
            from napari_sam.io.bands import parse_bands

            names = layer.metadata.get("band_names")
            channels = parse_bands(self.bands.value, names, len(names) if names else None)
        image = source if source and Path(source).is_file() else \
            (layer.data[0] if layer.multiscale else layer.data)
        model = self.model.value

        def compute():
            return segment_vector_prompts(image, path, model, georef=georef,
                                          channels=channels)

        return compute, layer

    def start(self, *_, sync: bool = False):
        """Run in a worker (or at once with `sync`, for scripts and tests)."""
        try:
            compute, layer = self.job()
        except ValueError as err:
            self.status.value = str(err)
            return None
        if sync:
            return self._done(compute(), layer)
        from napari.qt.threading import create_worker

        worker = create_worker(compute)
        worker.returned.connect(lambda res: self._done(res, layer))
        worker.errored.connect(lambda err: setattr(self.status, "value", f"failed: {err}"))
        self.status.value = "segmenting..."
        worker.start()
        return worker

    def _done(self, res, layer) -> Optional[object]:
        keys = ("source", "georef", "band_names", "nodata", "geo")
        meta = {k: layer.metadata[k] for k in keys if k in layer.metadata}
        meta["records"] = res.records
        self.result = self.viewer.add_labels(res.labels, name=f"{layer.name} prompts",
                                             scale=tuple(layer.scale[-2:]),
                                             translate=tuple(layer.translate[-2:]),
                                             metadata=meta)
        self.status.value = f"{len(res.records)} objects"
        return self.result
