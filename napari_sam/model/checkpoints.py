"""Reading checkpoint files safely and turning them into a plain SAM state dict.

Understood layouts:
- Meta's SAM and MobileSAM files: a plain state dict (`image_encoder.*`, `prompt_encoder.*`,
  `mask_decoder.*`).
- micro-sam's fine-tuned models: `{"model_state": {"sam.image_encoder...": ...},
  "decoder_state": ...}`; the `sam.` prefix is dropped and the extra decoder is reported.
- napari-sam's own files: `{"format": "napari-sam", "config": {...}, "model": state_dict}`.
Everything is read with `torch.load(..., weights_only=True)`: no code runs from a file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

import torch

_PARTS = ("image_encoder.", "prompt_encoder.", "mask_decoder.")


class CheckpointError(ValueError):
    """A file that is not a usable Segment Anything checkpoint."""


@dataclass
class Checkpoint:
    state_dict: Dict[str, torch.Tensor]
    config: Optional[dict] = None  # only napari-sam's own files carry one
    notes: List[str] = field(default_factory=list)
    # napari-sam's own files: the entries besides format/config/model (trained_steps,
    # automask thresholds, ...)
    extra: Dict[str, object] = field(default_factory=dict)


def _strip(sd: dict, prefix: str) -> dict:
    if sd and all(k.startswith(prefix) for k in sd):
        return {k[len(prefix):]: v for k, v in sd.items()}
    return sd


def read_checkpoint(path) -> Checkpoint:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        # garbage makes the unpickler raise almost anything (RuntimeError, UnpicklingError,
        # EOFError, BadZipFile, IndexError for a text file, ...)
        raise CheckpointError(
            f"{path} could not be read as a PyTorch checkpoint ({type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else ''}). The file may be truncated or not a "
            "checkpoint: download it again (`napari-sam models download --force NAME` for a "
            "registry model) or check the path."
        ) from err
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path} holds a {type(obj).__name__}, not a state dict")

    notes: List[str] = []
    config, extra = None, {}
    if obj.get("format") == "napari-sam":
        sd, config = obj["model"], obj.get("config")
        extra = {k: v for k, v in obj.items() if k not in ("format", "config", "model")}
    elif "model_state" in obj:  # micro-sam
        sd = obj["model_state"]
        if "decoder_state" in obj:
            notes.append(
                f"ignored 'decoder_state' ({len(obj['decoder_state'])} tensors: micro-sam's "
                "instance-segmentation decoder, which napari-sam does not use)")
        other = sorted(set(obj) - {"model_state", "decoder_state"})
        if other:
            notes.append(f"ignored extra entries: {', '.join(other)}")
    elif "state_dict" in obj and isinstance(obj["state_dict"], dict):
        sd = obj["state_dict"]
    else:
        sd = obj
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise CheckpointError(f"{path} is a dict but not a state dict of tensors")
    for prefix in ("module.", "sam.", "model."):
        sd = _strip(sd, prefix)
    if not any(k.startswith(_PARTS) for k in sd):
        example = ", ".join(list(sd)[:3]) or "no keys"
        raise CheckpointError(
            f"{path} does not look like a Segment Anything checkpoint: expected keys starting "
            f"with {', '.join(_PARTS)}; found {example}")
    return Checkpoint(dict(sd), config, notes, extra)


def save_checkpoint(path, model, extra: Optional[dict] = None) -> None:
    """Write napari-sam's own format (config inside) atomically."""
    from .config import config_to_dict

    from ..io.atomic import atomic_path

    obj = {"format": "napari-sam", "config": config_to_dict(model.config),
           "model": model.state_dict(), **(extra or {})}
    with atomic_path(Path(path), overwrite=True) as tmp:
        torch.save(obj, tmp)
