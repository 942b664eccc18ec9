"""What a fine-tuning run (`finetune.finetune`) is set to do and what it returns.

`FinetuneConfig` holds the run's settings, `FinetuneResult` its outcome; `trained_part`
and the helpers below decide which of the model's weights are trained ("all", or the
"decoder" part: mask decoder, prompt encoder and instance decoder, plus any LoRA adapters),
copy them and set the training mode. `finetune` re-exports these names.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import List

import torch

from ..model import Sam


@dataclass
class FinetuneConfig:
    """The settings of a fine-tuning run.

    Parameters
    ----------
    base : str
        Registry name or checkpoint path of the model to start from.
    minutes : float
        Time budget of training and its evaluations (0: no limit).
    max_steps : int
        The most training steps (0: no limit).
    train : str
        "auto", "all" or "decoder" (see `trained_part`).
    batch : int
        Views per step.
    objects : int
        Objects prompted per view.
    lr : float
        Peak learning rate; 0: 2e-4 for "all", 3e-4 for "decoder".
    views : int
        Cached views per training sample (frozen encoder only).
    eval_every : int
        Steps between evaluations; 0: by time (`eval_seconds`).
    eval_seconds : float
        With `eval_every` 0: seconds between evaluations (0: about 8 per budget, else 60).
    val_objects : int
        Objects scored per validation sample.
    calibrate : bool
        Choose the automask thresholds (and AIS parameters) on the validation samples.
    seed : int
        Seeds the views, the prompts and torch.
    device : str
        "auto", "cpu", "cuda", ... (`device.resolve_device`).
    precision : str
        Autocast dtype: "auto" (bf16 on capable CPUs/GPUs), "fp32", "bf16" or "fp16".
    checkpoint_minutes : float
        Minutes between writes of the resumable state file.
    lora_rank : int
        > 0: LoRA adapters of this rank on the encoder's attention (with "decoder").
    lora_proj : bool
        Adapters on the attention output projections too.
    """

    base: str = "bundled"
    minutes: float = 10.0
    max_steps: int = 0
    train: str = "auto"
    batch: int = 4
    objects: int = 4
    lr: float = 0.0
    views: int = 16
    eval_every: int = 0
    eval_seconds: float = 0.0
    val_objects: int = 30
    calibrate: bool = True
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"
    checkpoint_minutes: float = 2.0
    lora_rank: int = 0
    lora_proj: bool = False


@dataclass
class FinetuneResult:
    """What a fine-tuning run did.

    Parameters
    ----------
    path : pathlib.Path
        The checkpoint written.
    before, after : dict
        `finetune_eval.validate` scores of the base model and of the best weights, at the
        estimated diameters (with automask F1 and, in `after`, the calibration).
    steps : int
        Training steps taken.
    seconds : float
        Time spent on training and its evaluations.
    history : list of dict
        One record per evaluation: "step", "seconds", "loss", "score", "click_miou",
        "box_miou", "best".
    stopped : bool
        The run was ended by `should_stop` (Cancel).
    """

    path: Path
    before: dict
    after: dict
    steps: int
    seconds: float
    history: List[dict] = field(default_factory=list)
    stopped: bool = False


def trained_part(model: Sam, train: str) -> str:
    """"all" or "decoder" for `train` ("auto": all weights when the encoder is small).

    Parameters
    ----------
    model : Sam
        Its image encoder's size decides "auto" (under 20 M parameters: "all").
    train : str
        "auto", "all" or "decoder" (else ValueError).

    Returns
    -------
    str
        "all" or "decoder".
    """
    if train not in ("auto", "all", "decoder"):
        raise ValueError(f"train must be auto, all or decoder, got {train!r}")
    if train != "auto":
        return train
    n = sum(p.numel() for p in model.image_encoder.parameters())
    return "all" if n < 20_000_000 else "decoder"


def _trainable(model: Sam, part: str) -> List[str]:
    for name, p in model.named_parameters():
        p.requires_grad_(name.startswith(_prefixes(part)) or ".lora_" in name)
    return [n for n, p in model.named_parameters() if p.requires_grad]


def _prefixes(part: str) -> tuple:
    return ("",) if part == "all" else ("mask_decoder.", "prompt_encoder.", "instance_head.",
                                        "instance_decoder.")


def _weights(model: Sam, part: str) -> dict:
    """A copy of the trained part's state (parameters and buffers)."""
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()
            if k.startswith(_prefixes(part)) or ".lora_" in k}


def _train_mode(model: Sam, part: str) -> None:
    """Training mode, except batch norms (a few views per step would drag their running
    statistics away from the pretrained ones) and a frozen encoder."""
    model.train()
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.eval()
    if part == "decoder":  # with LoRA adapters too: the encoder has no dropout to switch
        model.image_encoder.eval()
