"""The weights' signature of a model: the key of embedding caches, one rule for SAM and SAM 2.

`WeightsSignature` is a mixin of the model classes (`sam.Sam`, `sam2.Sam2`). `signature()`
is a fingerprint of the architecture and the current weights (16 hex digits). Computing it
reads every tensor, so it is kept on the model, together with each tensor's version counter
and address: any change made through torch (`load_state_dict`, in-place ops on parameters,
new parameters assigned) makes it compute again. Writes torch cannot see (through `.data`,
or into a tensor's memory from numpy) need `invalidate_caches()` afterwards.

The memo, and any cache a model class lists in `_TRANSIENT`, is left out of pickles: a model
sent to another process computes them again there.
"""

from __future__ import annotations

import hashlib

import torch

from ..runtime.session import weights_state


class WeightsSignature:
    """`signature`, `invalidate_caches` and pickling without memos (for nn.Module models).

    A subclass adds to `_TRANSIENT` the attributes of the model itself that hold caches
    (dropped from pickles); a submodule that keeps a cache drops it in its own
    `__getstate__`.

    Parameters
    ----------
    *args, **kwargs
        Passed on to the next class in the MRO: the mixin takes no arguments of its own.
    """

    _TRANSIENT = ("_signature",)

    def signature(self) -> str:
        """Fingerprint of the architecture and the current weights.

        Returns
        -------
        str
            16 hex digits; equal for equal configs and weights.
        """
        state = weights_state(self)  # a direct walk: it runs for every tile of an image
        if any(v[0] == -1 for v in state[1:]):  # inference tensors, no version counter
            return self._fingerprint()
        memo = self.__dict__.get("_signature")
        if memo is None or memo[0] != state:
            memo = self.__dict__["_signature"] = (state, self._fingerprint())
        return memo[1]

    def _fingerprint(self) -> str:
        h = hashlib.sha1(repr(self.config).encode())
        with torch.no_grad():
            for name, p in sorted(self.state_dict().items()):
                flat = p.detach().float().flatten()
                h.update(name.encode())
                h.update(torch.stack([flat.sum(), flat.abs().sum(), flat[:8].sum()])
                         .cpu().numpy().tobytes())
        return h.hexdigest()[:16]

    def invalidate_caches(self) -> None:
        """Forget the memo of `signature` (needed only after writes torch cannot see:
        through `.data`, or into a tensor's memory from numpy; see also
        `Predictor.invalidate`)."""
        self.__dict__.pop("_signature", None)

    def __getstate__(self):
        """Pickle without the memo and the caches named in `_TRANSIENT`."""
        state = super().__getstate__()
        for name in self._TRANSIENT:
            state.pop(name, None)
        return state
