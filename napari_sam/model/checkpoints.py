"""Reading checkpoint files safely and turning them into a plain SAM state dict.

Understood layouts:
- Meta's SAM and MobileSAM files: a plain state dict (`image_encoder.*`, `prompt_encoder.*`,
  `mask_decoder.*`).
- micro-sam's fine-tuned models: `{"model_state": {"sam.image_encoder...": ...},
  "decoder_state": ...}`; the `sam.` prefix is dropped, and the instance decoder's tensors
  (`decoder_state`, see `unetr_decoder`) join the state dict under `instance_decoder.`.
- SAM 2 / 2.1 releases: `{"model": state_dict}` (`sam_mask_decoder.*`, memory modules).
- napari-sam's own files: `{"format": "napari-sam", "config": {...}, "model": state_dict}`.
Everything is read with `torch.load(..., weights_only=True)`: no code runs from a file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

import torch

_PARTS = ("image_encoder.", "prompt_encoder.", "mask_decoder.")
DECODER_PREFIX = "instance_decoder."


class CheckpointError(ValueError):
    """A file that is not a usable Segment Anything checkpoint.

    Parameters
    ----------
    message : str
        What is wrong with the file, and where it is.
    """


@dataclass
class Checkpoint:
    """What `read_checkpoint` found in a file.

    Parameters
    ----------
    state_dict : dict of str to Tensor
        SAM-style names (micro-sam's decoder under `DECODER_PREFIX`), tensors on the CPU.
    config : dict, optional
        The model config of napari-sam's own files; None for every other layout.
    notes : list of str
        What was ignored or loaded besides the SAM tensors.
    extra : dict
        napari-sam's own files: the entries besides format/config/model.
    """

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
    """Read a Segment Anything checkpoint of any of the known layouts.

    Reads napari-sam's own files (config inside), micro-sam's ({"model_state",
    "decoder_state"}), SAM 2's ({"model": state dict}), {"state_dict": ...} and plain
    state dicts, with "module." / "sam." / "model." prefixes removed.

    Parameters
    ----------
    path : str or Path

    Returns
    -------
    Checkpoint
        state_dict (name -> Tensor, micro-sam's decoder under `DECODER_PREFIX`), the config
        dict of napari-sam's own files (else None), notes on what was ignored, and the
        extra entries of napari-sam's own files.

    Raises
    ------
    FileNotFoundError, CheckpointError
    """
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
    config, extra, decoder = None, {}, None
    if obj.get("format") == "napari-sam":
        sd, config = obj["model"], obj.get("config")
        extra = {k: v for k, v in obj.items() if k not in ("format", "config", "model")}
    elif "model_state" in obj:  # micro-sam
        sd = obj["model_state"]
        decoder = obj.get("decoder_state")
        if decoder is not None:
            decoder = _decoder_state(decoder, path, notes)
        other = sorted(set(obj) - {"model_state", "decoder_state"})
        if other:
            notes.append(f"ignored extra entries: {', '.join(other)}")
    elif isinstance(obj.get("model"), dict):  # SAM 2's releases: {"model": state_dict}
        sd = obj["model"]
        other = sorted(set(obj) - {"model"})
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
    if decoder:
        sd = {**sd, **{DECODER_PREFIX + k: v for k, v in decoder.items()}}
    if not any(k.startswith(_PARTS) for k in sd):
        example = ", ".join(list(sd)[:3]) or "no keys"
        raise CheckpointError(
            f"{path} does not look like a Segment Anything checkpoint: expected keys starting "
            f"with {', '.join(_PARTS)}; found {example}")
    return Checkpoint(dict(sd), config, notes, extra)


def _decoder_state(decoder, path: Path, notes: List[str]) -> Dict[str, torch.Tensor]:
    """micro-sam's `decoder_state` without the image encoder's tensors (a UNETR state dict
    may repeat them under `encoder.`; the SAM image encoder already has its own); {} with a
    note when it is not micro-sam's UNETR decoder."""
    from .unetr_decoder import decoder_kind

    if not isinstance(decoder, dict) or not all(isinstance(v, torch.Tensor)
                                                for v in decoder.values()):
        notes.append("ignored 'decoder_state': not a state dict of tensors")
        return {}
    kept = {k: v for k, v in decoder.items() if not k.startswith("encoder.")}
    if "out_conv.weight" not in kept:  # another decoder: the SAM model still loads
        notes.append(
            f"ignored 'decoder_state' ({len(decoder)} tensors): not micro-sam's UNETR "
            f"instance decoder (no out_conv.weight among {', '.join(list(kept)[:3]) or 'no keys'})"
            "; automatic instance segmentation is not available with this file")
        return {}
    kind = decoder_kind(kept)
    notes.append(f"loaded 'decoder_state' ({len(kept)} tensors): micro-sam's instance "
                 f"decoder, {'transposed-convolution' if kind == 'unetr_transpose' else 'bilinear'}"
                 " upsampling")
    if len(kept) != len(decoder):
        notes.append(f"ignored {len(decoder) - len(kept)} 'encoder.' tensors in 'decoder_state'")
    return kept


def save_checkpoint(path, model, extra: Optional[dict] = None) -> None:
    """Write napari-sam's own format (the config inside), atomically.

    Parameters
    ----------
    path : str or Path
    model : Sam or Sam2
    extra : dict, optional
        More entries to store beside format, config and model (e.g. automask thresholds);
        `read_checkpoint` returns them as `Checkpoint.extra`.
    """
    from .config import SamConfig, config_to_dict
    from .sam2.config import sam2_config_to_dict

    from ..io.atomic import atomic_path

    cfg = model.config
    cfg_dict = config_to_dict(cfg) if isinstance(cfg, SamConfig) else sam2_config_to_dict(cfg)
    obj = {"format": "napari-sam", "config": cfg_dict,
           "model": model.state_dict(), **(extra or {})}
    with atomic_path(Path(path), overwrite=True) as tmp:
        torch.save(obj, tmp)
