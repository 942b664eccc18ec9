"""The automask panel's controls: building the form, and what its controls show and read.

A mixin of `automask_widget.AutomaskWidget`, which holds the state (`viewer`, `_given`,
`_follow`, ...) and the actions the buttons and sliders call (`run`, `cancel`, `refilter`).
Here: the layout, keeping the sliders on the chosen model's calibrated thresholds until the
user moves them, showing the sliders of the chosen mode, and reading the sliders back as
the keyword arguments of `automask_job` (None meaning "the model's own value").
"""

from __future__ import annotations

from magicgui.widgets import ComboBox, FloatSlider, Label, LineEdit, ProgressBar, PushButton
from magicgui.widgets import Slider, SpinBox

from ..automask import default_thresholds
from . import layers as L
from .automask_job import (CURRENT, DEFAULTS, FLOORS, STACK_MODES, THRESHOLDS, floors_for,
                           stored_thresholds)
from .controls import _expanding_text, _row, model_controls, tiling_controls
from .decoder_job import DECODER_KEYS
from .layers import is_kind
from .options import FILE_CHOICE, GIVEN_CHOICE, parse_channels

TILED_NOTE = ("large image, run tile by tile: the sliders apply at the next Run "
              "(re-filtering would run every tile's decoder again)")


class AutomaskForm:
    """The controls of the automask panel and their bookkeeping (see AutomaskWidget)."""

    # ---- layout --------------------------------------------------------------------------
    def _build(self, model, device: str, tiling: str = "auto", tile_above: int = 0) -> None:
        """Create the controls, lay them out in order and connect their signals."""
        self.image = ComboBox(label="image", choices=self._image_choices)
        self.slices = ComboBox(label="stack", choices=list(STACK_MODES), value=CURRENT,
                               tooltip="for (Z or T, Y, X) layers: segment the displayed slice, "
                               "every slice (ids unique across the stack), or read the first "
                               "axis as channels")
        self.channels = LineEdit(label="channels", tooltip="up to 3 channel indices, e.g. 0 or "
                                 "0,1,2 (empty: the image as it is)")
        self.model, self.model_file, self.device = model_controls(model, device,
                                                                  self._given is not None)
        self.method = ComboBox(label="mode", choices=["auto", "amg", "ais", "apg"],
                               value="auto", tooltip="amg: a grid of point prompts; ais: the "
                               "model's instance decoder and a seeded watershed (fast, "
                               "sliders re-threshold without the model); apg: the decoder's "
                               "seeds as prompts for SAM; auto: ais when the model has a "
                               "decoder, else amg")
        self.points_per_side = SpinBox(label="points per side", min=0, max=128,
                                       value=DEFAULTS["points_per_side"],
                                       tooltip="the prompt grid: N x N points (N^2 prompts) "
                                       "per model input; 0: from the object size")
        from .diameter import DiameterControl

        self.size = DiameterControl(self.viewer, lambda: self.image.value,
                                    self._channels_or_none,
                                    lambda text: setattr(self.status, "value", text),
                                    self._loaded_model)
        self.diameter = self.size.field
        self.tiling, self.tile_above = tiling_controls(
            tiling, tile_above, "segment tile by tile at native resolution, stitched across "
            "the seams")
        self.run_button = PushButton(text="Run")
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        self.progress = ProgressBar(label="", value=0, max=1, visible=False)
        self.status = Label(label="status", value="")
        self.note = Label(value=TILED_NOTE, visible=False)
        self.pred_iou = FloatSlider(label="pred IoU", min=FLOORS["pred_iou_thresh"], max=1.0,
                                    step=0.01, tooltip="keep masks whose predicted quality is "
                                    "at least this (default: the model's)")
        self.stability = FloatSlider(label="stability", min=FLOORS["stability_thresh"],
                                     max=1.0, step=0.01, tooltip="keep masks that barely "
                                     "change with the cut-off (default: the model's)")
        defaults = default_thresholds(self._given)  # the chosen model's: _show_model_defaults
        self._set_sliders(defaults, floors_for(defaults))
        self.min_area = Slider(label="min area", min=0, max=2000, value=DEFAULTS["min_area"],
                               tooltip="drop objects smaller than this many pixels")
        tips = {"center_distance_threshold": "seeds where the predicted distance to the "
                "object centre is below this", "boundary_distance_threshold": "seeds where "
                "the predicted distance to the boundary is below this",
                "foreground_threshold": "pixels whose foreground probability is above this "
                "belong to objects"}
        self.center = FloatSlider(label="centre distance", min=0.0, max=1.0, step=0.01,
                                  value=0.5, tooltip=tips["center_distance_threshold"])
        self.boundary = FloatSlider(label="boundary distance", min=0.0, max=1.0, step=0.01,
                                    value=0.5, tooltip=tips["boundary_distance_threshold"])
        self.foreground = FloatSlider(label="foreground", min=0.0, max=1.0, step=0.01,
                                      value=0.5, tooltip=tips["foreground_threshold"])
        self._decoder_sliders = dict(zip(DECODER_KEYS, (self.center, self.boundary,
                                                        self.foreground)))
        self._decoder_follow = True  # the decoder sliders show the model's until moved
        self.extend([self.image, self.slices, self.channels, self.model, self.model_file,
                     self.device, self.method, self.size.row, self.points_per_side,
                     _row(self.tiling, Label(value="above px"), self.tile_above,
                          label="tiling"),
                     _row(self.run_button, self.cancel_button), self.progress, self.status,
                     self.note, self.pred_iou, self.stability, self.center, self.boundary,
                     self.foreground, self.min_area])
        _expanding_text(self.status.native)
        _expanding_text(self.note.native)
        self.image.changed.connect(self._on_image_changed)
        for w in (self.model, self.model_file):
            w.changed.connect(self._on_model_changed)
        self._show_model_defaults()
        self.run_button.changed.connect(self.run)
        self.cancel_button.changed.connect(self.cancel)
        for slider in (self.pred_iou, self.stability):
            slider.changed.connect(self._on_threshold_moved)
        self.min_area.changed.connect(self._on_area_moved)
        for slider in self._decoder_sliders.values():
            slider.changed.connect(self._on_decoder_moved)
        self.method.changed.connect(self._on_method_changed)
        self._on_method_changed()

    # ---- what the controls show --------------------------------------------------------
    def _image_choices(self, *_):
        return [(ly.name, ly) for ly in self.viewer.layers if is_kind(ly, "Image")]

    def _on_image_changed(self, *_) -> None:
        image = self.image.value
        self.slices.visible = image is not None and image.ndim > 2
        if image is not None:
            area = L.plane_shape(image)[0] * L.plane_shape(image)[1]
            self.min_area.max = max(100, area // 20)

    def _on_model_changed(self, *_) -> None:
        self.model_file.visible = self.model.value == FILE_CHOICE
        self._follow = True  # the sliders show the new model's default thresholds
        self._show_model_defaults()

    def _loaded_model(self):
        """The chosen model if it is loaded already, else None (never loads it)."""
        if self.model.value == GIVEN_CHOICE:
            return self._given
        return self._loaded.get((self._model_name(), self.device.value))

    def _model_name(self) -> str:
        choice = self.model.value
        return str(self.model_file.value) if choice == FILE_CHOICE else choice

    def _show_model_defaults(self) -> None:
        """Put the chosen model's calibrated thresholds on the sliders before any run."""
        if not self._follow:
            return
        given = self._given if self.model.value == GIVEN_CHOICE else None
        defaults = stored_thresholds(self._model_name(), given)
        self._set_sliders(defaults, floors_for(defaults))

    def _on_method_changed(self, *_) -> None:
        """Show the sliders of the chosen mode (auto: both kinds until a run tells)."""
        method = self.method.value
        for w in (self.pred_iou, self.stability, self.points_per_side):
            w.visible = method in ("auto", "amg")
        for w in self._decoder_sliders.values():
            w.visible = method != "amg"

    def _on_decoder_moved(self, *_) -> None:
        self._decoder_follow = False
        self.refilter()

    def _decoder_values(self, defaults: bool = False) -> dict:
        """The decoder sliders' values; with `defaults`, None (the model's) while untouched."""
        follow = defaults and self._decoder_follow
        return {k: None if follow else float(s.value) for k, s in self._decoder_sliders.items()}

    def _on_threshold_moved(self, *_) -> None:
        self._follow = False
        self.refilter()

    def _on_area_moved(self, *_) -> None:
        self._area_follow = False  # the user's min area from now on, not the size's
        self.refilter()

    def _set_sliders(self, thresholds: dict, floors: dict) -> None:
        """Show `thresholds` on the sliders (clipped to their range) without re-filtering."""
        for key, slider in zip(THRESHOLDS, (self.pred_iou, self.stability)):
            with slider.changed.blocked():
                slider.min = min(max(floors[key], 0.0), FLOORS[key])
                slider.value = min(max(thresholds[key], slider.min), slider.max)

    # ---- what the controls read ---------------------------------------------------------
    def _thresholds(self, defaults: bool = False, run: bool = False) -> dict:
        """The sliders' values; with `defaults`, None (the model's) for untouched ones; with
        `run` too, min area None (from the object size) while its slider is untouched."""
        follow = defaults and self._follow
        area = None if run and self._area_follow else int(self.min_area.value)
        return {"pred_iou_thresh": None if follow else float(self.pred_iou.value),
                "stability_thresh": None if follow else float(self.stability.value),
                "min_area": area}

    def _show_min_area(self, value) -> None:
        """Show the min area a run used (from the object size) while the slider follows."""
        if self._area_follow and value is not None:
            with self.min_area.changed.blocked():
                self.min_area.value = min(int(value), self.min_area.max)

    def _channels_or_none(self):
        """The channel field as a list of indices, or None when it does not parse."""
        try:
            return parse_channels(self.channels.value)
        except ValueError:
            return None
