"""SAM 2.1 video / volume predictor: prompts on any frame, masks propagated through the
stack with SAM 2's memory of earlier frames.

    vp = VideoPredictor(load_model("sam2.1_hiera_tiny"), stack)   # (T or Z, Y, X[, C])
    vp.add_prompt(frame=10, obj_id=1, points=[[120, 80]])         # (row, col), label 1
    vp.add_prompt(frame=10, obj_id=2, box=[30, 40, 90, 120])      # (row0, col0, row1, col1)
    for t, obj_ids, logits in vp.propagate():                     # frames 10, 11, ...
        ...                                                       # logits (N, Y, X) float32
    for t, obj_ids, logits in vp.propagate(reverse=True):         # frames 10, 9, ..., 0
        ...

`track_objects` wraps this for whole stacks and returns uint32 labels (for
`napari_sam.volume.segment_volume` and other callers).

Frames are read lazily (`stack[t]` of any array-like: numpy, memmap, zarr, dask, a list)
and embedded on demand; at most `cache_frames` embeddings are kept. The memory bank is
bounded too: an object keeps the outputs of the frames within `memory_frames` of its
prompted frames and of the last frame processed (16 by default: everything SAM 2 can read,
so results equal the reference's), and drops the rest. Intensities follow the image
rules (`napari_sam.transforms`): uint8 RGB unchanged, anything else scaled by one robust
range computed from a sample of frames, so every frame is scaled alike.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from .device import autocast, configure_threads, resolve_device, resolve_precision
from .model import load_model
from .model.sam2 import Sam2
from .model.sam2 import tracking as T
from .runtime.session import InferenceSession
from .transforms import box_rc_to_xyxy, intensity_range, rc_to_xy, select_channels, to_model_pixels


@dataclass
class _Object:
    points: Dict[int, Tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)
    temp: Dict[bool, Dict[int, T.FrameOutput]] = field(
        default_factory=lambda: {True: {}, False: {}})  # is_cond -> frame -> output
    cond: Dict[int, T.FrameOutput] = field(default_factory=dict)
    non_cond: Dict[int, T.FrameOutput] = field(default_factory=dict)
    tracked: Dict[int, bool] = field(default_factory=dict)  # frame -> tracked in reverse


class VideoPredictor:
    """SAM 2.1 prompts and propagation on a stack of frames (module doc).

    Parameters
    ----------
    model : Sam2, str or Path
        A `Sam2`, or the name or path of a SAM 2.1 checkpoint.
    frames : array_like, (T, Y, X) or (T, Y, X, C)
        The stack, read a frame at a time.
    channels : sequence of int, optional
        As for `Predictor.set_image`.
    device, precision : str or torch.device
        Where the model runs; "fp32", "bf16" or "auto" (see `Predictor`).
    cache_frames : int
        Frame embeddings kept in memory.
    memory_frames : int, optional
        See the module doc (None: keep every frame's output).
    num_threads : int, optional
        CPU threads (`configure_threads`).
    memory_dtype : torch.dtype
        How memories are stored (bfloat16 as in SAM 2; float32 doubles their size).
    value_range : (low, high), optional
        Intensity range for every frame (None: one robust range from a sample of frames;
        ignored for uint8).
    """

    def __init__(self, model, frames, channels: Optional[Sequence[int]] = None,
                 device="auto", precision="auto", cache_frames: int = 2,
                 memory_frames: Optional[int] = 16, num_threads: Optional[int] = None,
                 memory_dtype: torch.dtype = torch.bfloat16, value_range=None) -> None:
        self.device = resolve_device(device)
        self.model = model.to(self.device) if isinstance(model, Sam2) else load_model(model, self.device)
        if not isinstance(self.model, Sam2):
            raise ValueError(f"VideoPredictor needs a SAM 2.1 model, got {type(self.model).__name__}"
                             " (use napari_sam.volume for SAM 1 models)")
        self.model.eval()
        # the speed state of the model calls (see `Predictor`)
        self.session = InferenceSession(self.model)
        self.dtype = resolve_precision(precision, self.device)
        if self.device.type == "cpu":
            configure_threads(num_threads)
        shape = tuple(getattr(frames, "shape", ()))
        if len(shape) < 3:
            shape = (len(frames),) + tuple(np.shape(frames[0]))
        if len(shape) not in (3, 4):
            raise ValueError(f"frames must be (T, Y, X) or (T, Y, X, C), got shape {shape}")
        self.frames, self.channels = frames, channels
        self.num_frames, self.hw = shape[0], tuple(shape[1:3])
        self.value_range = self._value_range() if value_range is None else value_range
        self.cache_frames, self.memory_frames = max(1, cache_frames), memory_frames
        self.memory_dtype = memory_dtype
        self._features: "OrderedDict[int, T.FrameFeatures]" = OrderedDict()
        self._objects: "OrderedDict[int, _Object]" = OrderedDict()
        g = self.model.config.embed_grid
        self._mem_pos = T.memory_position(self.model, g, self.device)

    # ---- frames ------------------------------------------------------------------------
    def _frame(self, t: int) -> np.ndarray:
        return np.asarray(self.frames[t])

    def _value_range(self):
        """None for uint8 (used as it is), else one (low, high) from <= 16 frames."""
        first = select_channels(self._frame(0), self.channels)
        if first.dtype == np.uint8:
            return None
        idx = np.unique(np.linspace(0, self.num_frames - 1, min(16, self.num_frames)).astype(int))
        sample = np.concatenate([select_channels(self._frame(i), self.channels).reshape(
            -1, first.shape[-1])[:: max(1, first.size // 65536)] for i in idx])
        return intensity_range(sample[:, None, :])

    @torch.no_grad()
    def features(self, t: int) -> T.FrameFeatures:
        """Embedding of frame t (computed on first use, a few kept).

        Parameters
        ----------
        t : int
            The frame index, 0 <= t < T.

        Returns
        -------
        FrameFeatures
            The frame's float32 image features, high-resolution features and positions.
        """
        if not 0 <= t < self.num_frames:
            raise IndexError(f"frame {t} is outside the stack of {self.num_frames} frames")
        ff = self._features.get(t)
        if ff is None:
            px = to_model_pixels(self._frame(t), self.channels, self.value_range)
            x = self.model.to_input(px, self.device)
            self.session.refresh()
            with self.session, autocast(self.device, self.dtype):
                ff = T.frame_features(self.model, x)
            ff = T.FrameFeatures([h.float() for h in ff.high_res], ff.feats.float(),
                                 ff.pos.float())
            self._features[t] = ff
            while len(self._features) > self.cache_frames:
                self._features.popitem(last=False)
        else:
            self._features.move_to_end(t)
        return ff

    # ---- prompts -----------------------------------------------------------------------
    def _to_model(self, xy: np.ndarray) -> torch.Tensor:
        """(N, 2) image (x, y) -> model frame: per axis to the S x S input."""
        s = self.model.config.image_size
        h, w = self.hw
        t = torch.as_tensor(xy, dtype=torch.float32, device=self.device)
        return t / torch.tensor([w, h], dtype=torch.float32, device=self.device) * s

    def _object(self, obj_id: int) -> _Object:
        if obj_id not in self._objects:
            self._objects[obj_id] = _Object()
        return self._objects[obj_id]

    @property
    def obj_ids(self) -> List[int]:
        return list(self._objects)

    @torch.no_grad()
    def add_prompt(self, frame: int, obj_id: int, points=None, point_labels=None, box=None,
                   mask=None, clear: bool = True) -> np.ndarray:
        """Prompt object `obj_id` on `frame` (points and/or a box, or instead a mask).

        Parameters
        ----------
        frame, obj_id : int
            The frame index and the object's id.
        points : array_like, (N, 2) float, optional
            Points, (row, col) pixels.
        point_labels : array_like, (N,) int, optional
            1 object, 0 background (None: all 1).
        box : array_like, (4,) float, optional
            (row0, col0, row1, col1).
        mask : array_like, (Y, X) bool, optional
            A mask, instead of points and box.
        clear : bool
            False adds the points to the frame's earlier ones.

        Returns
        -------
        ndarray, (Y, X) float32
            The object's mask logits on that frame.
        """
        if not 0 <= frame < self.num_frames:
            raise IndexError(f"frame {frame} is outside the stack of {self.num_frames} frames")
        obj = self._object(obj_id)
        first = frame not in obj.tracked
        reverse = obj.tracked.get(frame, False)
        if mask is not None:
            if points is not None or box is not None:
                raise ValueError("give either a mask or points/box, not both")
            out = self._mask_output(frame, mask)
            obj.points.pop(frame, None)
        else:
            xy, lab = self._prompt_tensors(points, point_labels, box)
            if not clear:
                if box is not None:
                    raise ValueError("a box must come first: add it with clear=True")
                if frame in obj.points:
                    old_xy, old_lab = obj.points[frame]
                    xy, lab = torch.cat([old_xy, xy], 1), torch.cat([old_lab, lab], 1)
            obj.points[frame] = (xy, lab)
            prev = (obj.temp[first].get(frame) or obj.cond.get(frame) or obj.non_cond.get(frame))
            prev_logits = None if prev is None else prev.pred_masks.clamp(-32.0, 32.0)
            out = self._step(obj, frame, first, (xy, lab), prev_logits, reverse, False)
        obj.temp[first][frame] = out
        return self._video_res(out.pred_masks)[0, 0].cpu().numpy()

    def _prompt_tensors(self, points, labels, box):
        h, w = self.hw
        parts_xy, parts_lab = [], []
        if box is not None:
            b = np.asarray(box, dtype=np.float64).reshape(-1)
            if b.shape != (4,) or not np.isfinite(b).all():
                raise ValueError("box must be [row0, col0, row1, col1] with finite numbers")
            parts_xy.append(box_rc_to_xyxy(b).reshape(2, 2))
            parts_lab.append([2, 3])
        if points is not None:
            p = np.asarray(points, dtype=np.float64).reshape(-1, 2)
            if len(p) == 0 or not np.isfinite(p).all():
                raise ValueError("points must be a non-empty list of finite [row, col] pairs")
            if ((p[:, 0] < -0.5) | (p[:, 0] > h - 0.5) | (p[:, 1] < -0.5) | (p[:, 1] > w - 0.5)).any():
                raise ValueError(f"a point lies outside the frames of shape {(h, w)}")
            lab = np.ones(len(p), int) if labels is None else np.asarray(labels).reshape(-1)
            if len(lab) != len(p) or not np.isin(lab, (0, 1)).all():
                raise ValueError("point_labels must give 1 (object) or 0 (background) per point")
            parts_xy.append(rc_to_xy(p))
            parts_lab.append(lab)
        elif labels is not None:
            raise ValueError("point_labels given without points")
        if not parts_xy:
            raise ValueError("empty prompt: give points, a box or a mask")
        xy = self._to_model(np.concatenate(parts_xy))[None]
        lab = torch.as_tensor(np.concatenate(parts_lab), dtype=torch.long, device=self.device)[None]
        return xy, lab

    def _mask_output(self, frame: int, mask) -> T.FrameOutput:
        m = torch.as_tensor(np.asarray(mask), dtype=torch.float32, device=self.device)
        if m.shape != self.hw:
            raise ValueError(f"mask must have the frames' shape {self.hw}, got {tuple(m.shape)}")
        s = self.model.config.image_size
        m = m[None, None]
        if m.shape[-2:] != (s, s):
            m = F.interpolate(m, (s, s), mode="bilinear", align_corners=False, antialias=True)
            m = (m >= 0.5).float()
        with self.session, autocast(self.device, self.dtype):
            return T.mask_as_output(self.model, self.features(frame), m)

    def _step(self, obj: _Object, frame: int, first: bool, points, prev_logits, reverse: bool,
              run_memory: bool) -> T.FrameOutput:
        ff = self.features(frame)
        with self.session, autocast(self.device, self.dtype):
            pix = T.conditioned_features(self.model, ff, frame, first, obj.cond, obj.non_cond,
                                         self.num_frames, reverse, self._mem_pos)
            out = T.decode_frame(self.model, pix, ff, points, prev_logits)
            out.pred_masks = out.pred_masks.float()
            if run_memory:
                out.maskmem = T.encode_memory(self.model, ff, out, points is not None,
                                              self.memory_dtype)
        return out

    def _video_res(self, low: torch.Tensor) -> torch.Tensor:
        return F.interpolate(low.float(), self.hw, mode="bilinear", align_corners=False)

    # ---- propagation -------------------------------------------------------------------
    def _commit_prompts(self) -> None:
        """Prompted frames get their memory (masks binarised) and join the memory bank."""
        if not self._objects:
            raise RuntimeError("no prompts: call add_prompt first")
        for obj_id, obj in self._objects.items():
            for is_cond in (False, True):
                for frame, out in obj.temp[is_cond].items():
                    if out.maskmem is None:
                        with self.session, autocast(self.device, self.dtype):
                            out.maskmem = T.encode_memory(self.model, self.features(frame),
                                                          out, True, self.memory_dtype)
                    (obj.cond if is_cond else obj.non_cond)[frame] = out
                obj.temp[is_cond].clear()
            if not obj.cond:
                raise RuntimeError(f"object {obj_id} has no prompt: add one before propagating")
            for frame in obj.cond:
                obj.non_cond.pop(frame, None)

    @torch.no_grad()
    def propagate(self, start_frame: Optional[int] = None, max_frames: Optional[int] = None,
                  reverse: bool = False, progress=None
                  ) -> Iterator[Tuple[int, List[int], np.ndarray]]:
        """Yield (frame, obj_ids, logits (N, Y, X) float32) from `start_frame` (default:
        the first prompted frame) forwards, or backwards with `reverse`, over at most
        `max_frames` + 1 frames. Masks are `logits > 0`.

        Parameters
        ----------
        start_frame, max_frames : int, optional
            See above.
        reverse : bool
            Go backwards.
        progress : callable, optional
            `progress(done, total, message)`, once per frame.

        Yields
        ------
        frame : int
        obj_ids : list of int
            The N objects, in order of their first prompt.
        logits : ndarray, (N, Y, X) float32
            Each object's mask logits on that frame.
        """
        self._commit_prompts()
        if start_frame is None:
            start_frame = min(t for o in self._objects.values() for t in o.cond)
        n = self.num_frames if max_frames is None else max_frames
        if reverse:
            order = range(start_frame, max(start_frame - n, 0) - 1, -1) if start_frame > 0 else []
        else:
            order = range(start_frame, min(start_frame + n, self.num_frames - 1) + 1)
        order = list(order)
        for i, frame in enumerate(order):
            lows = []
            for obj in self._objects.values():
                out = obj.cond.get(frame)
                if out is None:
                    out = self._step(obj, frame, False, None, None, reverse, True)
                    obj.non_cond[frame] = out
                obj.tracked[frame] = reverse
                lows.append(out.pred_masks)
                self._forget(obj, frame)
            if progress is not None:
                progress(i + 1, len(order), "propagating")
            yield frame, self.obj_ids, self._video_res(torch.cat(lows)).squeeze(1).cpu().numpy()

    def _forget(self, obj: _Object, frame: int) -> None:
        """Drop outputs farther than `memory_frames` from `frame` and every prompted frame."""
        k = self.memory_frames
        if k is None:
            return
        keep = list(obj.cond) + [frame]
        for t in [t for t in obj.non_cond if min(abs(t - c) for c in keep) > k]:
            del obj.non_cond[t]

    def reset(self) -> None:
        """Forget every object and prompt (frame embeddings stay cached)."""
        self._objects.clear()


def track_objects(model, stack, prompts: Dict[int, dict], channels=None, device="auto",
                  precision="auto", progress=None) -> np.ndarray:
    """Segment objects through a stack with SAM 2.1 memory propagation.

    stack: (T or Z, Y, X[, C]) array-like. prompts: {obj_id (>= 1): {"frame": t, and any of
    "points" ((N, 2) (row, col)), "point_labels", "box" (row0, col0, row1, col1), "mask"
    ((Y, X) bool)}}; a list of such dicts per object prompts it on several frames.
    Propagates forwards from the first prompted frame and backwards from it, and returns
    uint32 labels (T, Y, X): each pixel gets the object with the highest positive logit.

    Parameters
    ----------
    model : Sam2, str or Path
        As for `VideoPredictor`.
    stack, prompts
        See above.
    channels : sequence of int, optional
        As for `Predictor.set_image`.
    device, precision : str
        As for `VideoPredictor`.
    progress : callable, optional
        `progress(done, total, message)`, per frame of each direction.

    Returns
    -------
    ndarray, (T, Y, X) uint32
        Object ids, 0 background.
    """
    vp = VideoPredictor(model, stack, channels, device, precision)
    for obj_id, spec in prompts.items():
        if int(obj_id) < 1:
            raise ValueError(f"object ids must be >= 1 (0 is background), got {obj_id}")
        for p in (spec if isinstance(spec, (list, tuple)) else [spec]):
            p = dict(p)
            vp.add_prompt(int(p.pop("frame")), int(obj_id), **p)
    labels = np.zeros((vp.num_frames,) + vp.hw, dtype=np.uint32)
    ids = np.asarray(vp.obj_ids, dtype=np.uint32)
    for reverse in (False, True):
        for t, _, logits in vp.propagate(reverse=reverse, progress=progress):
            best = logits.argmax(0)
            fg = np.take_along_axis(logits, best[None], 0)[0] > 0
            labels[t] = np.where(fg, ids[best], 0)
    return labels
