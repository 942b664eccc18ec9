"""Export dock widget: a Labels layer -> label TIFF, COCO JSON, a CSV object table and
GeoJSON / GeoPackage polygons (in the image's CRS; napari-sam-suite[geo]).

The writing is `export.py` (atomic, through `napari_sam.io`). An existing file is never
replaced silently: `confirm_overwrite(paths) -> bool` is asked first (a Qt question box by
default; tests and scripts replace the attribute), and a "no" writes nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, List

from magicgui.widgets import CheckBox, ComboBox, Container, FileEdit, Label, LineEdit, PushButton

from . import layers as L
from .layers import is_kind
from .controls import _expanding_text, _row
from .export import (DEFAULT_FORMATS, FORMAT_NAMES, FORMATS, clean_stem, intensity_image,
                     plan, write)
from .io_hooks import meta_from_layer
from .keys import on_close

if TYPE_CHECKING:  # pragma: no cover
    import napari


def ask_overwrite(paths: List[Path]) -> bool:
    """Ask in a dialog whether the existing `paths` may be replaced."""
    from qtpy.QtWidgets import QMessageBox

    names = "\n".join(str(p) for p in paths)
    answer = QMessageBox.question(None, "napari-sam: replace files?",
                                  f"These files exist already:\n{names}\n\nReplace them?",
                                  QMessageBox.Yes | QMessageBox.No, QMessageBox.No)
    return answer == QMessageBox.Yes


class ExportWidget(Container):
    """Write a Labels layer as files: TIFF, COCO JSON, CSV (with mean intensities)."""

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        super().__init__(labels=True)
        self.viewer = viewer
        self.confirm_overwrite = ask_overwrite
        self.written: List[Path] = []
        self._closed = False
        self.labels = ComboBox(label="labels", choices=self._labels_choices)
        self.folder = FileEdit(label="folder", mode="d", value=Path.home())
        self.stem = LineEdit(label="file stem", tooltip="files are <stem>_labels.tif, "
                             "<stem>_coco.json, <stem>_objects.csv")
        self.formats = {f: CheckBox(text=FORMAT_NAMES[f], value=f in DEFAULT_FORMATS)
                        for f in FORMATS}
        self.intensity = ComboBox(label="intensities", choices=self._image_choices,
                                  tooltip="image for the CSV's mean intensity columns")
        self.export_button = PushButton(text="Export")
        self.status = Label(label="status", value="")
        self.extend([self.labels, self.folder, self.stem,
                     _row(*self.formats.values(), label="formats"), self.intensity,
                     self.export_button, self.status])
        _expanding_text(self.status.native)
        self.labels.changed.connect(self._on_labels_changed)
        self.export_button.changed.connect(self.export)
        viewer.layers.events.inserted.connect(self.reset_choices)
        viewer.layers.events.removed.connect(self.reset_choices)
        on_close(self.native, self.release)
        active = viewer.layers.selection.active
        if active is not None and is_kind(active, "Labels"):
            self.labels.value = active
        self._on_labels_changed()

    def _labels_choices(self, *_):
        return [(ly.name, ly) for ly in self.viewer.layers if is_kind(ly, "Labels")]

    def _image_choices(self, *_):
        return [("none", None)] + [(ly.name, ly) for ly in self.viewer.layers
                                   if is_kind(ly, "Image")]

    def _on_labels_changed(self, *_) -> None:
        layer = self.labels.value
        if layer is not None:
            self.stem.value = clean_stem(layer.name)
            self.intensity.value = source_image(layer, self._image_choices()[1:])

    def reset_choices(self, *_) -> None:
        if self._closed:
            return
        had = self.intensity.value
        super().reset_choices()
        if had is None and self.labels.value is not None:  # an image added after the labels
            self.intensity.value = source_image(self.labels.value, self._image_choices()[1:])

    def export(self, *_) -> List[Path]:
        """Write the chosen formats; returns the written paths (also in `written`)."""
        self.written = []
        layer = self.labels.value
        formats = [f for f, box in self.formats.items() if box.value]
        if layer is None:
            return self._say("no labels layer: run automask or add a Labels layer first")
        if not formats:
            return self._say("choose at least one format")
        folder = Path(self.folder.value)
        if not folder.is_dir():
            return self._say(f"the folder {folder} does not exist")
        paths, existing = plan(folder, self.stem.value or layer.name, formats)
        if existing and not self.confirm_overwrite(existing):
            names = ", ".join(p.name for p in existing)
            return self._say(f"nothing written: {names} exist(s) already and were kept")
        labels = L.image_data(layer)
        image = self.intensity.value
        wants_pixels = {"csv", "geojson", "gpkg"} & set(paths)
        pixels = None if image is None or not wants_pixels else L.image_data(image)
        try:
            intensity_image(pixels, labels.shape)  # before writing anything
        except ValueError as err:
            return self._say(f"nothing written: {err}")
        units = getattr(layer, "units", None)
        meta = meta_from_layer({"scale": tuple(layer.scale), "metadata": layer.metadata,
                                "units": None if units is None else tuple(units)}, labels.ndim)
        source = (image.metadata.get("source") if image is not None else None) or \
            layer.metadata.get("source")
        name = Path(source).name if source else (image.name if image is not None else layer.name)
        try:
            self.written = write(paths, labels, meta,
                                 image=pixels,
                                 image_name=name, records=layer.metadata.get("records"),
                                 replace=existing)
        except (OSError, ValueError) as err:
            return self._say(f"export failed: {err}")
        self._say("wrote " + ", ".join(str(p) for p in self.written))
        return self.written

    def _say(self, message: str) -> List[Path]:
        self.status.value = message
        return self.written

    def release(self) -> None:
        if self._closed:
            return
        self._closed = True
        for event in (self.viewer.layers.events.inserted, self.viewer.layers.events.removed):
            event.disconnect(self.reset_choices)


def source_image(labels, images):
    """The image a labels layer was made from, for the CSV's intensities, or None.

    `images`: (name, layer) pairs. Among the images of the labels' plane shape: the one whose
    name starts the labels' ("nuclei" for "nuclei labels" / "nuclei automask"), else the one
    with the same source file, else the only one."""
    want = tuple(L.image_data(labels).shape[-2:])
    fits = [ly for _, ly in images if L.plane_shape(ly) == want]
    source = labels.metadata.get("source")
    for rule in (lambda ly: labels.name.startswith(ly.name + " "),
                 lambda ly: source is not None and ly.metadata.get("source") == source):
        hits = [ly for ly in fits if rule(ly)]
        if hits:
            return max(hits, key=lambda ly: len(ly.name))
    return fits[0] if len(fits) == 1 else None
