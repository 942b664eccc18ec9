"""Choices offered by the widgets: models, devices, channel selections (Qt-free)."""

from __future__ import annotations

from typing import List, Optional, Tuple

FILE_CHOICE = "file..."
GIVEN_CHOICE = "given model"


def model_choices(given: bool = False) -> List[str]:
    """The bundled model, the registry's downloadable checkpoints, and a file."""
    from ..model.hub import KNOWN_CHECKPOINTS

    return ([GIVEN_CHOICE] if given else []) + ["bundled", *KNOWN_CHECKPOINTS, FILE_CHOICE]


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
