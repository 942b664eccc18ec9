"""Choices offered by the widgets: models, devices, channel selections (Qt-free)."""

from __future__ import annotations

import weakref
from typing import List, Optional, Tuple

FILE_CHOICE = "file..."
GIVEN_CHOICE = "given model"

# checkpoints fine-tuned in this session (paths), offered by every model chooser
USER_MODELS: List[str] = []
_CHOOSERS: "weakref.WeakSet" = weakref.WeakSet()


def model_choices(given: bool = False) -> List[str]:
    """The bundled model, this session's fine-tuned models (file paths), the registry's
    downloadable checkpoints, and a file."""
    from ..model.hub import KNOWN_CHECKPOINTS

    return ([GIVEN_CHOICE] if given else []) + ["bundled", *USER_MODELS, *KNOWN_CHECKPOINTS,
                                                FILE_CHOICE]


def watch_choices(chooser) -> None:
    """Refresh `chooser` (a widget with `reset_choices`) when a model is added."""
    _CHOOSERS.add(chooser)


def add_user_model(path) -> None:
    """Offer the checkpoint at `path` in every model chooser (call on the GUI thread)."""
    path = str(path)
    if path not in USER_MODELS:
        USER_MODELS.append(path)
    for chooser in list(_CHOOSERS):
        try:
            chooser.reset_choices()
        except RuntimeError:  # its Qt widget was deleted
            _CHOOSERS.discard(chooser)


def device_choices() -> List[str]:
    import torch

    out = ["auto", "cpu"]
    if torch.cuda.is_available():
        out.append("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        out.append("mps")
    return out


DEVICES = device_choices()


def parse_channels(text: str) -> Optional[Tuple[int, ...]]:
    """"0, 2" -> (0, 2); "" -> None. Invalid text raises ValueError with what to type."""
    text = (text or "").strip()
    if not text:
        return None
    try:
        channels = tuple(int(t) for t in text.replace(";", ",").split(",") if t.strip())
    except ValueError:
        raise ValueError(f"channels must be up to 3 integers separated by commas, got {text!r}") from None
    if not 1 <= len(channels) <= 3:
        raise ValueError(f"choose 1 to 3 channels, got {len(channels)}")
    return channels
