"""InferenceSession: the one owner of the speed state kept between model calls.

A `Predictor` (and a tiled or video predictor) holds one session for its model and runs
every model call inside it (`with session: ...`). While a session is active in the current
thread (a context variable, never a process-wide setting) the fast paths in
`napari_sam.runtime.kernels` keep what they derive there:

- tensors derived from the weights: bf16 copies of linear layers, fused projection
  tables, relative-position tables, transposed convolutions as linear layers, the
  decoder's positional encoding (`derived`);
- constants that depend on shapes only (index tables, one-hot key positions) and mask
  upscalers (`constant`);
- per-thread scratch buffers reused across blocks and images (`scratch`);
- per-thread, per-image caches, e.g. the decoder's first-block projections of the image
  last prompted (`image_cache`).

Everything has the session's lifetime and goes with `invalidate()`. `refresh()` (called by
the predictors for each new image) invalidates when any parameter or buffer of the model
was changed through torch (`load_state_dict`, in-place ops, new tensors) or the model was
switched to training. Between two refreshes each derived tensor is checked against the
version counters and addresses of the tensors it comes from, so a weight change is seen by
the very next call, with or without a new image. Writes torch cannot see (through `.data`,
or into a parameter's memory from numpy) need an explicit `invalidate()`.

Without an active session the model runs its plain path: nothing is kept, and the fused
kernels fall back to the ordinary torch ops (`kernels`). Nothing is kept under autograd or
torch.compile either.
"""

from __future__ import annotations

import contextvars
import threading

import torch
from torch import nn

# the sessions entered in this context, innermost last (a tuple: entering and leaving set a new
# value, so no contextvars Token is kept anywhere, e.g. in a thread-local store, whose
# clean-up when a Qt pool thread's Python state is deleted crashed CPython 3.11)
_ACTIVE: contextvars.ContextVar = contextvars.ContextVar("napari_sam_sessions", default=())
# per-thread stores kept for at most this many threads (caches only: a dropped store is
# made again on the next use)
MAX_THREAD_STORES = 16

# attention formulations of the ViT encoder (see `napari_sam.runtime.vit_attention`)
ATTENTION_PATHS = ("auto", "bias", "augmented")


def current() -> "InferenceSession | None":
    """The session active in this thread's context, or None.

    Returns
    -------
    InferenceSession or None
    """
    active = _ACTIVE.get()
    return active[-1] if active else None


def caching() -> "InferenceSession | None":
    """The active session when results may be kept (inference: no autograd, no
    torch.compile tracing), else None.

    Returns
    -------
    InferenceSession or None
    """
    s = current()
    if s is None or torch.is_grad_enabled() or torch.compiler.is_compiling():
        return None
    return s


def version(t: torch.Tensor) -> int:
    """`t._version`, the in-place modification counter; -1 for inference tensors, which have
    none (they cannot be modified outside inference mode).

    Parameters
    ----------
    t : Tensor

    Returns
    -------
    int
    """
    return -1 if t.is_inference() else t._version


def tensor_state(*tensors) -> tuple:
    """What identifies the current values of `tensors` (None allowed): version counter,
    storage address, device and dtype of each. Equal states: nothing was changed in place
    or replaced.

    Parameters
    ----------
    *tensors : Tensor or None

    Returns
    -------
    tuple
        One (version, address, device, dtype) tuple, or None, per tensor.
    """
    return tuple(None if t is None else (version(t), t.data_ptr(), t.device, t.dtype)
                 for t in tensors)


def weights_state(model: nn.Module) -> tuple:
    """What identifies the current weights of `model`: `model.training` and, for every
    parameter and buffer in module order, (version counter, address, dtype, device, shape).
    Equal states: no weight was changed through torch, replaced or moved. A direct walk over
    the modules' own dicts, about 5x quicker than `parameters()` / `state_dict()` (it runs for
    every tile of a tiled image).

    Parameters
    ----------
    model : nn.Module

    Returns
    -------
    tuple
        `model.training`, then one tuple per parameter and buffer.
    """
    out = [model.training]
    stack = [model]
    while stack:
        m = stack.pop()
        for t in (*m._parameters.values(), *m._buffers.values()):
            if t is not None:
                out.append((version(t), t.data_ptr(), t.dtype, t.device, t.shape))
        stack.extend(c for c in reversed(m._modules.values()) if c is not None)
    return tuple(out)


class InferenceSession:
    """Owner of the derived tensors, scratch buffers and per-image caches of one model.

    Use as a context manager around model calls; it may be entered again (nested) and from
    several threads at once (scratch buffers and image caches are per thread).

    Parameters
    ----------
    model : nn.Module
        The module whose weights the state is derived from.
    attention : str
        How the ViT encoder's attention adds its relative positions: "auto" (folded into the
        dot product, "augmented", in bf16 / fp16; as an additive "bias" in fp32), or one of
        them forced.
    """

    def __init__(self, model: nn.Module, attention: str = "auto") -> None:
        if attention not in ATTENTION_PATHS:
            raise ValueError(f"attention must be one of {ATTENTION_PATHS}, got {attention!r}")
        self.model = model
        self.attention = attention
        self._derived: dict = {}
        self._constants: dict = {}
        # per-thread stores by thread id (not threading.local: see `_ACTIVE`)
        self._threads: dict = {}
        self._lock = threading.Lock()
        self._generation = 0
        self._weights = None

    def __reduce__(self):
        """Pickled (e.g. for worker processes) as a new, empty session of the model."""
        return (InferenceSession, (self.model, self.attention))

    # ---- lifetime ---------------------------------------------------------------------
    def __enter__(self) -> "InferenceSession":
        _ACTIVE.set(_ACTIVE.get() + (self,))
        return self

    def __exit__(self, *exc) -> None:
        active = _ACTIVE.get()
        _ACTIVE.set(active[:-1] if active and active[-1] is self else
                    tuple(s for s in active if s is not self))

    def refresh(self) -> bool:
        """Invalidate if the model's weights changed (through torch) or it was switched to
        training since the last call; True if so. A walk over all parameters (about a
        millisecond for ViT-B): the predictors call it once per image, not per prompt.

        Returns
        -------
        bool
            Whether the session was invalidated.
        """
        state = weights_state(self.model)
        changed = state != self._weights
        if changed:
            self.invalidate()
            self._weights = state
        return changed

    def invalidate(self) -> None:
        """Drop everything kept: derived tensors, constants, and (in every thread, on its
        next use) scratch buffers and image caches."""
        self._derived = {}
        self._constants = {}
        self._generation += 1
        with self._lock:
            self._threads = {}

    def _local(self) -> dict:
        """This thread's store ({"scratch": {...}, "images": {...}}), emptied after an
        `invalidate`."""
        ident = threading.get_ident()
        store = self._threads.get(ident)
        if store is None or store["generation"] != self._generation:
            store = {"generation": self._generation, "scratch": {}, "images": {}}
            with self._lock:
                if len(self._threads) >= MAX_THREAD_STORES:
                    self._threads.pop(next(iter(self._threads)))
                self._threads[ident] = store
        return store

    # ---- what is kept -----------------------------------------------------------------
    def derived(self, owner: nn.Module, name: str, make, *tensors, key=None):
        """`make()` for `owner` (a module of the model), kept under (`name`, `key`) while
        `tensors` (those it is derived from) are unchanged (`tensor_state`).

        Parameters
        ----------
        owner : nn.Module
        name : str
        make : callable
            Computes the value (run under no_grad).
        *tensors : Tensor or None
            What the value is derived from.
        key : hashable, optional
            Tells apart several values of one name (e.g. a dtype).

        Returns
        -------
        object
            What `make()` returned, now or when it was kept.
        """
        slot = (id(owner), name, key)
        state = tensor_state(*tensors)
        hit = self._derived.get(slot)
        if hit is None or hit[0] is not owner or hit[1] != state:
            with torch.no_grad():
                hit = self._derived[slot] = (owner, state, make())
        return hit[2]

    def constant(self, key, make, limit: int = 64):
        """`make()` kept under `key` (a tuple starting with a kind name; at most `limit`
        entries in all).

        Parameters
        ----------
        key : tuple
        make : callable
            Computes the value (run under no_grad).
        limit : int
            Entries kept before all are dropped.

        Returns
        -------
        object
            What `make()` returned, now or when it was kept.
        """
        hit = self._constants.get(key)
        if hit is None:
            if len(self._constants) >= limit:
                self._constants.clear()
            with torch.no_grad():
                hit = self._constants[key] = make()
        return hit

    def scratch(self, kind: str, key, make):
        """`make()` kept for this thread under (`kind`, `key`), at most 4 per kind. The
        caller may rely on whatever `make` wrote and it never overwrites (constant parts),
        not on anything else.

        Parameters
        ----------
        kind : str
        key : hashable
        make : callable
            Makes the buffer.

        Returns
        -------
        object
            The buffer (usually a Tensor).
        """
        cache = self._local()["scratch"].setdefault(kind, {})
        buf = cache.get(key)
        if buf is None:
            if len(cache) >= 4:
                cache.clear()
            buf = cache[key] = make()
        return buf

    def image_cache(self, name: str, key, make=None):
        """The value kept for this thread under `name` if its key equals `key`; else
        `make()` (kept, replacing the previous image's) or None without `make`.

        Parameters
        ----------
        name : str
        key : object
            Identifies the image (compared with ==).
        make : callable, optional
            Computes the value.

        Returns
        -------
        object or None
        """
        images = self._local()["images"]
        hit = images.get(name)
        if hit is not None and hit[0] == key:
            return hit[1]
        if make is None:
            return None
        value = make()
        images[name] = (key, value)
        return value
