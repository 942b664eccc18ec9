"""Per-slice image embeddings of a stack, computed once and kept in memory or on disk.

`SliceEmbeddings(predictor, stack)` embeds slice k of a (N, Y, X) or (N, Y, X, C) stack the
first time `load(k)` asks for it and keeps the result, so propagating an object, linking
and tracking never embed a slice twice. All slices are contrast-normalised with one
intensity range taken over the whole stack (`value_range`), as `automask.stack.automask_stack`
does, so an object looks alike on every slice.

Object size, as on single images: `diameter=None` (the default) estimates the objects'
diameter once, on the `reference` slice (default: the middle one; `segment_volume` uses the
prompted slice), a number is the user's (image px), and "off" resizes each whole slice to
the model's input (SAM's rule). A diameter gives ONE zoom for every slice
(`scale.plan_zoom`), so that all slices share the model's input frame and a slice's low-res
logits can prompt the next one. When objects are so small that the zoom would need tiles,
the largest zoom at which a whole slice fits is used (and said).

With `cache=` a folder, embeddings go to the tiled package's zarr store
(`napari_sam.tiled.cache.ZarrStore`, one chunk per slice at grid index (k, 0)), signed with
the model, the stack's shape and dtype, the intensity range and a fingerprint of the pixels:
a folder made for another stack or model is refused (`CacheMismatchError`), an interrupted
run keeps every finished slice. Without it they stay in a dict.
"""

from __future__ import annotations

import hashlib
from typing import Optional, Sequence

import numpy as np
import torch

from ..predictor import ImageEmbedding, Predictor
from ..transforms import (intensity_range, select_channels, target_shape, to_model_pixels,
                          zoomed_shape)


def as_predictor(model, device="auto", precision="auto") -> Predictor:
    """A Predictor for `model`: a Predictor (returned as it is), a Sam, a registry name or a
    checkpoint path; None = the bundled model.

    Parameters
    ----------
    model : Predictor, Sam, str, os.PathLike or None
        What to predict with.
    device : str
        "auto", "cpu", "cuda" or "mps" (ignored for a Predictor).
    precision : str
        "auto", "fp32", "bf16" or "fp16" (ignored for a Predictor).

    Returns
    -------
    Predictor
    """
    if isinstance(model, Predictor):
        return model
    return Predictor(model, device=device, precision=precision)


def check_stack(stack, what: str = "volume") -> np.ndarray:
    """`stack` as an array of (N, Y, X) or (N, Y, X, C) slices; a clear error otherwise.

    Parameters
    ----------
    stack : array-like
        (N, Y, X) or (N, Y, X, C), channels last; numpy, or anything indexable with a
        shape (zarr, dask), which is kept as it is.
    what : str
        What it is, for error messages.

    Returns
    -------
    array-like
        `stack` (a numpy array when it had no shape).
    """
    arr = stack if hasattr(stack, "shape") and hasattr(stack, "__getitem__") else np.asarray(stack)
    if arr.ndim not in (3, 4):
        raise ValueError(f"{what} must be (Z, Y, X) or (Z, Y, X, C) (channels last), got "
                         f"shape {tuple(arr.shape)}; for a 2D image use Predictor or automask")
    if arr.shape[0] < 1 or min(arr.shape[1:3]) < 2:
        raise ValueError(f"{what} of shape {tuple(arr.shape)} has no slices to segment")
    return arr


def stack_value_range(stack, channels: Optional[Sequence[int]] = None,
                      max_samples: int = 1_000_000):
    """One robust (low, high) intensity range over all slices (None for uint8 input, which
    goes to the model as it is).

    Parameters
    ----------
    stack : array-like
        (N, Y, X) or (N, Y, X, C), read one slice at a time.
    channels : sequence of int, optional
        Channels to use (as `transforms.select_channels`).
    max_samples : int
        About how many pixels to sample over the whole stack.

    Returns
    -------
    (low, high) or None
        Two float64 (K,) arrays, one value per channel used; None for uint8 or bool input.
    """
    first = select_channels(np.asarray(stack[0]), channels)
    if first.dtype == np.uint8 or first.dtype == bool:
        return None
    n = stack.shape[0]
    step = max(1, first.shape[0] * first.shape[1] * n // max_samples)
    sample = np.concatenate([select_channels(np.asarray(stack[k]), channels)
                             .reshape(-1, first.shape[-1])[::step] for k in range(n)])
    return intensity_range(sample)


def _fingerprint(stack) -> str:
    """A cheap hash of a strided sample of the stack's pixels (for the cache signature)."""
    h = hashlib.sha1()
    for k in np.linspace(0, stack.shape[0] - 1, min(stack.shape[0], 8)).astype(int):
        s = np.ascontiguousarray(np.asarray(stack[k])[::7, ::7])
        h.update(s.tobytes())
    return h.hexdigest()[:16]


class SliceEmbeddings:
    """Embeddings of the slices of one stack for one predictor (module doc).

    Parameters
    ----------
    predictor : Predictor
        Runs the encoder; it holds the current slice.
    stack : array-like (N, Y, X) or (N, Y, X, C)
        Numpy, or anything indexable by slice (zarr, dask: one slice is read at a time).
    channels : sequence of int, optional
        As for `Predictor.set_image`.
    value_range : (low, high), optional
        As for `Predictor.set_image`; None: one range computed over the whole stack.
    cache : None, str or path
        None (memory) or a folder for the slice embeddings.
    cache_dtype : str
        "float16" (half the disk) or "float32".
    diameter : None, float or "off"
        The objects' diameter in image pixels, which sets the zoom of every slice (None:
        estimated on slice `reference`; "off": SAM's whole-slice resize).
    reference : int, optional
        The slice the diameter is estimated on (None: the middle one).
    """

    def __init__(self, predictor: Predictor, stack, channels: Optional[Sequence[int]] = None,
                 value_range=None, cache=None, cache_dtype: str = "float32",
                 diameter=None, reference: Optional[int] = None) -> None:
        self.predictor = predictor
        self.stack = check_stack(stack)
        self.channels = channels
        self.value_range = (stack_value_range(self.stack, channels) if value_range is None
                            else value_range)
        model = predictor.model
        self.shape = tuple(int(s) for s in self.stack.shape[1:3])
        self.diameter, self.zoom = self._plan(diameter, reference)
        self.input_size = (target_shape(*self.shape, model.image_size) if self.zoom is None
                           else zoomed_shape(*self.shape, self.zoom, model.image_size))
        self._memory = {}
        self._pixels = {}  # slice -> (Y, X) float32, for the contrast rule
        self.store = None
        self.embedded = 0  # slices embedded by this object (not read back from the cache)
        self._cache_path = None
        if cache is not None and cache is not False:
            vr = None if self.value_range is None else [np.asarray(v, float).tolist()
                                                        for v in self.value_range]
            sig = {"kind": "volume-slices", "model": model.signature(),
                   "shape": list(self.stack.shape), "dtype": str(self.stack.dtype),
                   "channels": None if channels is None else list(channels),
                   "value_range": vr, "pixels": _fingerprint(self.stack), "zoom": self.zoom}
            self._sig, self._cache_path, self._cache_dtype = sig, cache, cache_dtype

    def _plan(self, diameter, reference=None):
        """(diameter in image px or None, zoom or None) for every slice (module doc)."""
        from ..scale import plan_zoom, resolve_diameter

        if isinstance(diameter, str) and diameter.lower() == "off":
            return None, None
        k = len(self) // 2 if reference is None else min(max(int(reference), 0), len(self) - 1)
        d = resolve_diameter(np.asarray(self.stack[k]), diameter, self.channels,
                             self.predictor.model)
        if d is None:
            return None, None
        model = self.predictor.model
        plan = plan_zoom(self.shape, model, d)
        if plan.tiled:
            import warnings

            fit = model.image_size / max(self.shape)
            warnings.warn(f"objects of {d:.0f} px are small for slices of {self.shape}: "
                          f"each slice is embedded whole at zoom {fit:.2f} (not tiled)",
                          stacklevel=3)
            return d, fit
        return d, plan.zoom

    def __len__(self) -> int:
        return int(self.stack.shape[0])

    def _open_store(self, features: np.ndarray):
        from ..tiled.cache import ZarrStore

        self.store = ZarrStore(self._cache_path, self._sig, (len(self), 1),
                               features.shape, self._cache_dtype)
        return self.store

    def _cached(self, k: int) -> Optional[np.ndarray]:
        if k in self._memory:
            return self._memory[k]
        if self._cache_path is not None:
            import os

            sig_file = os.path.join(str(self._cache_path), "signature.json")
            if self.store is None and os.path.isfile(sig_file):
                import json

                with open(sig_file) as f:  # the feature shape is the stored array's
                    old = json.load(f)
                shape = tuple(old.get("feature_shape", ()))
                if shape:
                    self._sig["feature_shape"] = list(shape)
                    self._open_store(np.zeros(shape, np.float32))
            if self.store is not None and self.store.has((k, 0)):
                return self.store.get((k, 0))
        return None

    def embedding(self, k: int) -> ImageEmbedding:
        """The embedding of one slice, computed and kept on first use.

        Parameters
        ----------
        k : int
            The slice index, 0 <= k < N (IndexError otherwise).

        Returns
        -------
        ImageEmbedding
            Features (1, C, g, g) float32 on the predictor's device, with the slice's (Y, X).
        """
        if not 0 <= k < len(self):
            raise IndexError(f"slice {k} is outside the stack of {len(self)} slices")
        feats = self._cached(k)
        sig = self.predictor.model.signature()
        if feats is None:
            return self.set_image(k)
        t = torch.from_numpy(np.asarray(feats, np.float32))[None].to(self.predictor.device)
        return ImageEmbedding(t, self.shape, self.input_size, sig)

    def set_image(self, k: int) -> ImageEmbedding:
        """Run the encoder on one slice at the stack's zoom and keep the embedding (the
        predictor then also holds the slice's pixels, which an instance head needs).

        Parameters
        ----------
        k : int
            The slice index.

        Returns
        -------
        ImageEmbedding
        """
        kw = {"zoom": self.zoom} if self.zoom is not None else {"diameter": "off"}
        emb = self.predictor.set_image(np.asarray(self.stack[k]), self.channels,
                                       self.value_range, **kw)
        self.embedded += 1
        if self._cached(k) is None:
            feats = emb.features[0].detach().cpu().numpy()
            if self._cache_path is not None:
                if self.store is None:
                    self._sig["feature_shape"] = list(feats.shape)
                    self._open_store(feats)
                self.store.put((k, 0), feats)
            else:
                self._memory[k] = feats
        return emb

    def pixels(self, k: int) -> np.ndarray:
        """One slice as the model sees its intensities (for the contrast rule); kept.

        Parameters
        ----------
        k : int
            The slice index.

        Returns
        -------
        ndarray (Y, X) float32
            0..255, the mean over the channels after the stack's normalisation.
        """
        px = self._pixels.get(k)
        if px is None:
            px = to_model_pixels(np.asarray(self.stack[k]), self.channels, self.value_range)
            px = self._pixels[k] = px.mean(-1).astype(np.float32)
        return px

    def load(self, k: int) -> Predictor:
        """Make one slice the predictor's image, embedding it if needed.

        Parameters
        ----------
        k : int
            The slice index.

        Returns
        -------
        Predictor
            The stack's predictor, now holding slice k.
        """
        emb = self.embedding(k)
        if self.predictor._emb is not emb:
            self.predictor.set_embedding(emb)
        return self.predictor
