"""The automask widget's computation, without Qt: check the input, run, re-filter.

`run_job(request, progress, cancelled)` is what the worker thread runs: it loads the model
(unless one is given), embeds the image and decodes the point grid -- the expensive
`AutoMaskGenerator.initialize` -- and returns a `Session`. `Session.result(thresholds)` then
re-filters the kept candidates (`generate`, no model call), as often as a slider moves.

Stacks, "all slices": `napari_sam.automask.automask_stack` does the slicing, the common
intensity range and the ids unique across the stack. It is given a `SliceGenerators` in place
of a generator: the first pass keeps one initialised generator per slice, later passes
replay them, so re-filtering a stack runs the same stack code again without the model.

Large 2D layers (`Request.tiled`, the interactive widget's rule) go through
`automask_tiled.run_tiled` instead: tile by tile at native resolution, no Session (their
thresholds apply at the next run).

Decoder modes (`Request.method` "ais" / "apg", or "auto" on a model with an instance
decoder): the worker embeds the image once and keeps the decoder's three maps in a
`decoder_job.DecoderSession`; its `result` re-runs only the seeded watershed (AIS) or the prompts on the
held embedding (APG) for new centre / boundary / foreground thresholds and min size. The
widget hands the session back in `Request.cached` when the image layer, model, device,
diameter, channels and slice are unchanged, so a new Run does not embed again either.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np

from ..automask import SAM_THRESHOLDS, AutoMaskGenerator, AutoMaskResult, default_thresholds
from ..automask.stack import automask_stack
from ..progress import null_progress
from ..scale import plan_zoom, resolve_diameter
from .embedding import EXPECTED_ERRORS, TiledSetup, _text

CURRENT, ALL, CHANNELS = "current slice", "all slices", "channels (first axis)"
LINK3D, TRACKS = "all slices: 3D objects", "all frames: tracks"
STACK_MODES = (CURRENT, ALL, LINK3D, TRACKS, CHANNELS)
LINKED = {LINK3D: False, TRACKS: True}  # mode -> divisions (automask.volume.link_stack_result)

_INIT = inspect.signature(AutoMaskGenerator.__init__).parameters
_GEN = inspect.signature(AutoMaskGenerator.generate).parameters
#: the core's defaults; the thresholds' defaults are the model's (`default_thresholds`)
DEFAULTS = {"min_area": _GEN["min_area"].default,
            "points_per_side": 0}  # 0: from the object size (32 when it is off)
#: candidates below these are not kept (lowered for a model whose defaults are lower)
FLOORS = {"pred_iou_thresh": _INIT["min_candidate_iou"].default,
          "stability_thresh": _INIT["min_candidate_stability"].default}
THRESHOLDS = tuple(FLOORS)


def floors_for(defaults: dict) -> dict:
    """Candidate floors that let the sliders reach the model's default thresholds."""
    return {k: min(FLOORS[k], defaults[k]) for k in THRESHOLDS}


def stored_thresholds(model_name: str, given=None) -> dict:
    """The automask thresholds of a model choice before it is loaded: those stored with the
    weights of `given` (a Sam), of "bundled", of a checkpoint path or of a downloaded registry
    model; else SAM's. Reads only the checkpoint's small entries (memory-mapped), not its
    tensors; a file that cannot be read gives SAM's (loading it will say what is wrong)."""
    if given is not None:
        return default_thresholds(given)
    from pathlib import Path

    from ..model import hub
    from ..model.registry import BUNDLED_PATH

    known = hub.KNOWN_CHECKPOINTS.get(str(model_name))
    path = (BUNDLED_PATH if model_name == "bundled" else hub._paths(known, None)[0]
            if known is not None else Path(str(model_name)))
    stored = {}
    if path.is_file():
        import torch

        try:
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            stored = obj.get("automask", {}) if obj.get("format") == "napari-sam" else {}
        except Exception:  # noqa: BLE001 - any unreadable file: SAM's until it is loaded
            stored = {}
    stored = stored if isinstance(stored, dict) else {}
    return {**SAM_THRESHOLDS, **{k: float(v) for k, v in stored.items() if k in THRESHOLDS}}


class Cancelled(Exception):
    """Raised from the progress callback when the user pressed Cancel."""


@dataclass
class Request:
    """What to segment and how. `data` is the layer's full-resolution array; `index` the
    displayed slice of a stack's leading axes (() for 2D); `mode` one of STACK_MODES."""

    data: object
    rgb: bool = False
    index: Tuple[int, ...] = ()
    mode: str = CURRENT
    channels: Optional[Sequence[int]] = None
    model: object = None          # a loaded Sam, else `model_name` is loaded
    model_name: str = "bundled"
    device: str = "auto"
    points_per_side: int = DEFAULTS["points_per_side"]
    #: pred_iou_thresh, stability_thresh (None: the model's default) and min_area (None:
    #: from the object size, `automask.segmenter.auto_min_area`)
    thresholds: dict = field(default_factory=lambda: {
        "pred_iou_thresh": None, "stability_thresh": None, "min_area": DEFAULTS["min_area"]})
    #: the layer's tiling rule and file; large 2D layers are segmented tile by tile
    tiled: Optional[TiledSetup] = None
    #: the objects' diameter: None (estimated), "off" or image pixels (`scale.plan_zoom`)
    diameter: object = None
    #: "auto", "amg", "ais" or "apg" (`automask.segmenter.resolve_mode`)
    method: str = "auto"
    #: decoder-mode thresholds (`DECODER_KEYS`; None or missing: the model's)
    ais: dict = field(default_factory=dict)
    #: a `DecoderSession` of the same image, model and size to reuse (no encoder pass)
    cached: object = None


def check_request(shape: Sequence[int], rgb: bool, mode: str,
                  channels: Optional[Sequence[int]]) -> Optional[str]:
    """None if `run_job` can segment an array of `shape`, else what to do instead."""
    ndim = len(shape) - (1 if rgb else 0)
    if ndim not in (2, 3) and not (ndim > 3 and mode != CHANNELS):
        return (f"the image has {ndim} dimensions; automask takes 2D images and stacks "
                "(Z or T, Y, X)")
    if mode in LINKED and ndim != 3:
        return f"{mode!r} needs a (Z or T, Y, X) stack; the image has {ndim} dimensions"
    n_channels = shape[-1] if rgb else (shape[0] if ndim == 3 and mode == CHANNELS else 1)
    if channels is not None:
        bad = [c for c in channels if not -n_channels <= c < n_channels]
        if bad:
            return (f"channel(s) {bad} do not exist: the image has {n_channels} channel(s), "
                    f"numbered 0 to {n_channels - 1}")
    elif n_channels > 4 or (n_channels == 4 and not rgb):
        return (f"the image has {n_channels} channels and the model takes up to 3: type the "
                "channels to use in 'channels', e.g. 0 or 0,1,2")
    return None


class SliceGenerators:
    """Stands in for an AutoMaskGenerator in `automask.stack.automask_stack`.

    Recording (the first pass): every `initialize` makes a new generator over the shared
    predictor and initialises it. Replaying (`replay()`, then another automask_stack pass):
    `initialize` takes the next recorded generator instead, so only `generate` runs.
    """

    def __init__(self, make: Callable[[], AutoMaskGenerator], zoom=None) -> None:
        self._make, self.zoom = make, zoom
        self.generators: List[AutoMaskGenerator] = []
        self._replaying = False
        self._next = 0
        self._current: Optional[AutoMaskGenerator] = None

    def replay(self) -> "SliceGenerators":
        self._replaying, self._next = True, 0
        return self

    def initialize(self, image, progress=null_progress, channels=None, value_range=None,
                   **kw):
        if self._replaying:
            self._current = self.generators[self._next]
            self._next += 1
        else:
            kw.setdefault("zoom", self.zoom)
            self._current = self._make().initialize(image, progress, channels, value_range, **kw)
            self.generators.append(self._current)
        return self._current

    def generate(self, **kw) -> AutoMaskResult:
        return self._current.generate(**kw)


class Session:
    """The kept candidates of one run; `result` re-filters them into full-size labels."""

    def __init__(self, shape: Tuple[int, ...], index: Tuple[int, ...] = (),
                 generator: Optional[AutoMaskGenerator] = None,
                 stack: Optional[np.ndarray] = None, slices: Optional[SliceGenerators] = None,
                 axes: Optional[str] = None, mode: str = CURRENT) -> None:
        self.mode = mode               # LINK3D / TRACKS: results are linked across slices
        self.lineage: Optional[dict] = None  # {id: (first, last, parent)} of a linked result
        self.shape = tuple(shape)      # of the labels: the image's spatial shape
        self.index = tuple(index)      # the segmented slice, for CURRENT on stacks
        self.generator, self.stack, self.slices, self.axes = generator, stack, slices, axes
        self.last: Optional[AutoMaskResult] = None

    def result(self, pred_iou_thresh: Optional[float], stability_thresh: Optional[float],
               min_area: int, first: Optional[AutoMaskResult] = None,
               **decoder_kw) -> AutoMaskResult:
        """Labels and records for these thresholds (None: the model's default); decoder
        thresholds (`decoder_kw`) do not apply to grid prompts and are ignored."""
        kw = dict(pred_iou_thresh=pred_iou_thresh, stability_thresh=stability_thresh,
                  min_area=int(min_area))
        if first is not None:
            res = first
        elif self.slices is not None:  # the stack code again, replaying the kept slices
            res = automask_stack(self.stack, self.slices.replay(), self.axes,
                                 value_range=(0.0, 1.0), **kw)
        else:
            res = self.generator.generate(**kw)
            if self.index:
                full = np.zeros(self.shape, np.uint32)
                full[self.index] = res.labels
                records = [dict(r, index=list(self.index)) for r in res.records]
                res = AutoMaskResult(full, records)
        if self.mode in LINKED and res.labels.ndim == 3:
            from ..automask.volume import link_stack_result

            res, self.lineage = link_stack_result(res, divisions=LINKED[self.mode])
        self.last = res
        return res


@dataclass
class JobResult:
    model: object = None
    session: Optional[Session] = None
    result: Optional[AutoMaskResult] = None
    thresholds: dict = field(default_factory=dict)  # those of `result`, None resolved
    floors: dict = field(default_factory=dict)      # the generators' candidate floors
    error: str = ""
    cancelled: bool = False
    tiled: object = None  # automask_tiled.TiledOutput of a tiled run (then no session)


def cancellable(progress: Callable, cancelled: Callable[[], bool]) -> Callable:
    """A progress callback that raises `Cancelled` once `cancelled()` is true."""
    def report(done, total, message=""):
        if cancelled():
            raise Cancelled()
        progress(done, total, message)
    return report


def request_plane(req: Request) -> Tuple[np.ndarray, Tuple[int, ...]]:
    """The 2D image to segment (Y, X[, C]) and the labels' shape."""
    data = req.data
    lead = np.ndim(data) - (3 if req.rgb else 2)
    if req.mode == CHANNELS and lead == 1:
        plane = np.moveaxis(np.asarray(data), 0, -1)
        return plane, plane.shape[:2]
    plane = np.asarray(data[req.index] if lead else data)
    return plane, tuple(np.shape(data)[:lead]) + plane.shape[:2]


def _size_plan(req: Request, model, lead: int, report):
    """(ZoomPlan, points per side) for the request: the diameter estimated on (a central
    window of) the displayed or middle slice when it is None."""
    from ..automask.segmenter import auto_points_per_side
    from .embedding import _central_window

    if req.mode == CHANNELS and lead == 1:
        sample = request_plane(req)[0]
        shape = sample.shape[:2]
    else:
        index = req.index if req.index or lead == 0 else tuple(
            s // 2 for s in np.shape(req.data)[:lead])
        sample = _central_window(req.data, index, 2048)
        shape = tuple(np.shape(req.data)[lead:lead + 2])
    if req.diameter is None:
        report(0, 1, "estimating the object size")
    plan = plan_zoom(shape, model, resolve_diameter(sample, req.diameter, req.channels, model))
    return plan, req.points_per_side or auto_points_per_side(model, plan, shape)


def run_job(req: Request, progress: Callable = null_progress,
            cancelled: Callable[[], bool] = lambda: False) -> JobResult:
    """Load the model, embed and decode the grid; returns the session and the first result.

    Expected failures come back as `error` text and a cancel as `cancelled`, so the worker
    never raises for them.
    """
    from ..model import load_model
    from ..predictor import Predictor

    report = cancellable(progress, cancelled)
    model = req.model
    try:
        if model is None:
            report(0, 1, f"loading model {req.model_name}")
            model = load_model(req.model_name, req.device)
        predictor = Predictor(model, req.device)
        defaults = default_thresholds(model)
        floors = floors_for(defaults)
        thresholds = {k: defaults[k] if v is None and k in defaults else v
                      for k, v in req.thresholds.items()}
        lead = np.ndim(req.data) - (3 if req.rgb else 2)
        plan, points = _size_plan(req, model, lead, report)
        if thresholds.get("min_area") is None:  # from the object size, as the core does
            from ..automask.segmenter import auto_min_area

            thresholds["min_area"] = auto_min_area(plan.diameter)
        from ..automask.segmenter import DECODER_MODES, resolve_mode

        method = resolve_mode(req.method, model)
        if method in DECODER_MODES:
            from .decoder_job import run_decoder

            return run_decoder(req, model, predictor, plan, lead, method, report, thresholds)
        make = lambda: AutoMaskGenerator(  # noqa: E731
            predictor, points_per_side=points,
            min_candidate_iou=floors["pred_iou_thresh"],
            min_candidate_stability=floors["stability_thresh"])
        if lead == 0 and (plan.tiled or (req.tiled is not None and req.tiled.wanted(model))):
            from .automask_tiled import run_tiled

            out = run_tiled(req, model, report, thresholds, plan, points)
            return JobResult(model, thresholds=thresholds, floors=floors, tiled=out)
        if plan.tiled:  # a stack: one embedding per slice, as near the zoom as fits
            plan = plan_zoom(np.shape(req.data)[lead:lead + 2], model, None)
        if req.mode in (ALL,) + tuple(LINKED) and lead > 0:
            slices = SliceGenerators(make, plan.zoom)
            stack = np.asarray(req.data)
            axes = "Z" * lead + "YX" + ("C" if req.rgb else "")
            first = automask_stack(stack, slices, axes, progress=report, channels=req.channels,
                                   **thresholds)
            session = Session(first.labels.shape, stack=stack, slices=slices, axes=axes,
                              mode=req.mode)
        else:
            plane, shape = request_plane(req)
            generator = make().initialize(plane, report, req.channels, zoom=plan.zoom)
            session = Session(shape, req.index if lead and req.mode != CHANNELS else (),
                              generator=generator)
            first = None
        report(1, 1, "filtering")
        return JobResult(model, session, session.result(**thresholds, first=first),
                         thresholds, floors)
    except Cancelled:
        return JobResult(model, cancelled=True)
    except EXPECTED_ERRORS as err:
        what = "load the model" if model is None else "segment the image"
        return JobResult(model, error=f"could not {what}: {_text(err)}")
