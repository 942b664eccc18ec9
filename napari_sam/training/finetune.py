"""Fine-tune a model on the user's annotated images (`user_data.Sample`s).

The training step is the bundled model's (`prompt_loss.prompt_losses`: a simulated click, box or
few clicks, then a corrective click with the previous logits as mask input; focal + dice on
the best output, MSE on the IoU head), on augmented views of the user's images
(`augment.random_view`). What is trained (`FinetuneConfig.train`):
- "all": every weight (the default for small encoders such as the bundled model's);
- "decoder": the mask decoder and the prompt encoder (the default for SAM / micro-sam ViTs);
  the encoder is frozen, so each view is embedded once and cached (`views` per image);
- with `lora_rank` > 0, "decoder" plus low-rank adapters on the image encoder's attention
  (`lora.py`), merged into the encoder's weights when the result is written.
A model with an instance decoder (`Sam.has_instance_head`: the bundled model's head or
micro-sam's UNETR decoder) trains it too (`train_instance.head_loss` on `instance_targets`).

Scale: the training views show the annotated objects at the base model's preferred diameter
(`augment.sample_zoom`; views jitter the zoom around it), and the evaluations that choose the
best weights see the validation images at that zoom too. The output's `object_size` keeps the
preferred diameter and stores how the diameter estimate reads these images
(`estimate_ratio`, `trained_object_size`), so the default, scale-aware inference (diameter
estimated) zooms new images of the same kind as the training did, and so does a typed one. "before" and "after" score the default inference (estimated diameters;
the base's and the output's object size, thresholds and automatic mode). The encoder runs under `precision`'s
autocast; the training step's decoder under `device.resolve_decoder_precision` (bf16 on CPU
only for decoders as large as SAM's, where it pays).

Every evaluation scores the validation samples with the fixed prompt rules of
`evaluate.prompt_ious` (score: mean of click and box mean IoU); the best weights are kept,
and a time budget (`minutes`: training and its evaluations, after the first validation)
or `max_steps` ends the run, as does `should_stop()` (Cancel: the best weights so far are still written). A state file beside the
output (`<output>.state.pt`) is written every `checkpoint_minutes`; running again with the
same output resumes from it. The result is a napari-sam checkpoint (`save_checkpoint`,
atomic) with the metadata under the key "finetune", recalibrated automask thresholds (AMG
"automask", AIS "ais", and the better of the two as "automask_mode"; `finetune_eval`) and
the object size.
"""

from __future__ import annotations

import copy
import math
import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable, List, Optional

import numpy as np
import torch

from ..io.atomic import atomic_path
from ..model import Sam, load_model, save_checkpoint
from .augment import sample_zoom
from .finetune_eval import validate
from .finetune_setup import (FinetuneConfig, FinetuneResult, _train_mode, _trainable, _weights,
                             trained_part)
from .finetune_steps import TrainingViews, step_loss
from .user_data import Sample, summary

STATE_SUFFIX = ".state.pt"


def _amp(precision: str, device: torch.device, config=None):
    """The autocast dtype (None: fp32) of the encoder, or with `config` of the decoder."""
    from ..device import resolve_decoder_precision, resolve_precision

    dtype = (resolve_precision(precision, device) if config is None
             else resolve_decoder_precision(precision, device, config))
    return dtype if dtype != torch.float32 else None


def _lr(cfg: FinetuneConfig, lr0: float, step: int, frac: float) -> float:
    warm = min(1.0, (step + 1) / 20)
    return lr0 * warm * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, frac))))


def _signature(train, val, cfg) -> list:
    return [cfg.base, [list(s.labels.shape) for s in train], [list(s.labels.shape) for s in val],
            [int(s.labels.max()) for s in train + val]]


def finetune(train: List[Sample], val: List[Sample], output, cfg: FinetuneConfig = None,
             progress: Callable[[dict], None] = lambda rec: None,
             should_stop: Callable[[], bool] = lambda: False,
             log: Callable[[str], None] = lambda msg: None, model: Optional[Sam] = None
             ) -> FinetuneResult:
    """Fine-tune `cfg.base` (or the given `model`, left unchanged) on `train`, keep the best
    weights by the score on `val`, write them to `output` -> FinetuneResult.

    progress(record) is called after each evaluation with {"step", "seconds", "loss",
    "score", "click_miou", "box_miou", "best"}; log(message) with phase messages.

    Parameters
    ----------
    train, val : list of user_data.Sample
        Training and validation samples: pixels (Y, X, 3) uint8, labels (Y, X) uint32;
        both non-empty (else ValueError).
    output : str or os.PathLike
        The checkpoint to write (replaced); its state file resumes an interrupted run.
    cfg : FinetuneConfig or None
        The settings; None: the defaults.
    progress : callable
        Called with each evaluation's record (dict, see above).
    should_stop : callable
        Polled before each step; True ends the run and writes the best weights.
    log : callable
        Called with phase messages (str).
    model : Sam or None
        Start from a copy of this model instead of loading `cfg.base`.

    Returns
    -------
    FinetuneResult
        The checkpoint's path, the scores before and after, steps, seconds and history.
    """
    cfg = cfg or FinetuneConfig()
    if not train or not val:
        raise ValueError("fine-tuning needs training and validation samples")
    from ..device import resolve_device

    output = Path(output)
    state_path = output.with_name(output.name + STATE_SUFFIX)
    device = resolve_device(cfg.device)
    model = copy.deepcopy(model).to(device) if model is not None else load_model(cfg.base, device)
    part = trained_part(model, cfg.train)
    if cfg.lora_rank > 0:
        from .lora import add_lora

        if part == "all":
            raise ValueError("LoRA adapters go with train='decoder' (a frozen encoder); "
                             "train='all' trains every encoder weight already")
        n = add_lora(model, cfg.lora_rank, proj=cfg.lora_proj)
        log(f"LoRA adapters of rank {cfg.lora_rank} on {n} encoder linears")
    _trainable(model, part)
    # training views: annotated objects at the base's preferred diameter (jittered); the
    # output's object size makes the default inference (diameter estimated) zoom alike
    scales = [sample_zoom(model, s.pixels, s.labels) for s in train + val]
    zooms = [z for z, _, _ in scales[:len(train)]]
    size = trained_object_size(model, scales[:len(train)])
    diameters = [d or None for _, d, _ in scales[len(train):]]  # the training geometry
    estimated = [e for _, _, e in scales[len(train):]]  # what the default inference finds
    lr0 = cfg.lr or (2e-4 if part == "all" else 3e-4)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr0, weight_decay=0.01)
    amp = _amp(cfg.precision, device)
    dec_amp = _amp(cfg.precision, device, model.config)
    rng = np.random.default_rng(cfg.seed)
    torch.manual_seed(cfg.seed)
    sig = _signature(train, val, cfg)
    step, spent, history, losses = 0, 0.0, [], []
    if state_path.is_file():
        st = torch.load(state_path, map_location="cpu", weights_only=True)
        if st.get("signature") != sig:
            raise ValueError(f"{state_path} belongs to another run (other base model or data):"
                             " delete it to start afresh")
        model.load_state_dict(st["current"], strict=False)
        opt.load_state_dict(st["opt"])
        step, spent, history = st["step"], st["seconds"], st["history"]
        before, best_score, best = st["before"], st["best_score"], st["best"]
        rng.bit_generator.state = st["rng"]
        log(f"resumed from {state_path} at step {step} ({spent / 60:.1f} min spent)")
    if not state_path.is_file():
        log(f"validation before training ({len(val)} samples)")
        # "before": the base model as the default inference runs it; the evaluations that
        # choose the best weights use the training geometry (annotated diameters)
        before = validate(model, val, cfg.val_objects, automask=cfg.calibrate, amp=amp,
                          diameters=estimated)
        first = (before if estimated == diameters else
                 validate(model, val, cfg.val_objects, amp=amp, diameters=diameters))
        best_score, best = first["score"], _weights(model, part)
        history.append({"step": 0, "seconds": 0.0, "loss": None,
                        "score": first["score"], "click_miou": first["click_miou"],
                        "box_miou": first["box_miou"], "best": first["score"]})
        progress(history[-1])
    # the budget counts training and its evaluations, from here (not the first validation)
    t0 = time.monotonic() - spent
    _train_mode(model, part)
    views = TrainingViews(model, train, rng, cfg, device, amp, part == "decoder" and not cfg.lora_rank,
                   log, zooms)
    budget = cfg.minutes * 60 if cfg.minutes > 0 else math.inf
    every_s = cfg.eval_seconds or (budget / 8 if budget < math.inf else 60.0)
    last_eval = last_save = time.monotonic()
    stopped = False

    def save_state():
        tmp = state_path.with_name(state_path.name + ".partial")
        torch.save({"signature": sig, "current": _weights(model, part), "opt": opt.state_dict(),
                    "step": step, "seconds": time.monotonic() - t0, "history": history,
                    "before": before, "best_score": best_score, "best": best,
                    "rng": rng.bit_generator.state}, tmp)
        os.replace(tmp, state_path)

    while True:
        elapsed = time.monotonic() - t0
        if should_stop():
            stopped = True
            break
        if elapsed >= budget or (cfg.max_steps and step >= cfg.max_steps):
            break
        frac = max(elapsed / budget, step / cfg.max_steps if cfg.max_steps else 0.0)
        for g in opt.param_groups:
            g["lr"] = _lr(cfg, lr0, step, frac)
        loss = step_loss(model, views, rng, cfg, dec_amp)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        step += 1
        losses.append(loss.item())
        now = time.monotonic()
        due = (step % cfg.eval_every == 0) if cfg.eval_every else (now - last_eval >= every_s)
        end = now - t0 >= budget or (cfg.max_steps and step >= cfg.max_steps)
        if due or end:
            res = validate(model, val, cfg.val_objects, amp=amp, diameters=diameters)
            _train_mode(model, part)
            if res["score"] > best_score:
                best_score, best = res["score"], _weights(model, part)
            history.append({"step": step, "seconds": round(time.monotonic() - t0, 1),
                            "loss": round(float(np.mean(losses)), 4), "score": res["score"],
                            "click_miou": res["click_miou"], "box_miou": res["box_miou"],
                            "best": best_score})
            losses = []
        if time.monotonic() - last_save > cfg.checkpoint_minutes * 60:
            save_state()  # before `progress`, which may raise (e.g. Ctrl-C)
            last_save = time.monotonic()
        if due or end:
            progress(history[-1])
            last_eval = time.monotonic()
    seconds = time.monotonic() - t0
    model.load_state_dict(best, strict=False)
    model.eval()
    model.invalidate_caches()  # the weights changed under the signature memo
    if cfg.lora_rank > 0:
        from .lora import merge_lora

        merge_lora(model)  # plain linears again: the checkpoint has the base model's keys
    log("validation of the best weights" + (" and automask calibration" if cfg.calibrate else ""))
    model.object_size = {"diameter": size["diameter"], "range": size["range"]}
    after = validate(model, val, cfg.val_objects, automask=cfg.calibrate, amp=amp,
                     diameters=estimated, calibrate=cfg.calibrate)
    extra = _metadata(model, cfg, part, train, val, before, after, step, seconds, history,
                      size)
    output.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(output, overwrite=True) as tmp:
        save_checkpoint(tmp, model.to("cpu"), extra)
    state_path.unlink(missing_ok=True)
    return FinetuneResult(output, before, after, step, seconds, history, stopped)


def trained_object_size(model: Sam, scales: list) -> dict:
    """The checkpoint's `object_size` (see `scale.preferred_diameter`) from the training
    samples' `augment.sample_zoom` records (zoom, annotated diameter, estimated diameter).

    The training views show the annotated objects at the base model's preferred diameter,
    which is kept. Where the diameter estimate misjudges these images (e.g. it measures the
    bright rim of ring-like cells, not the cell), the median ratio estimated / annotated
    diameter is stored as `estimate_ratio`: inference divides estimates by it
    (`scale.resolve_diameter`), so images of the kind are zoomed as in training whether the
    diameter is estimated or typed. -> {"diameter", "range", "estimate_ratio",
    "annotated_px", "estimated_px"}.

    Parameters
    ----------
    model : Sam
        The base model (its preferred diameter and range, in model-input pixels).
    scales : list of tuple
        (zoom float, annotated diameter float (0: none), estimated diameter float or None)
        per training sample, in image pixels.

    Returns
    -------
    dict
        "diameter" float and "range" [low, high] in model-input pixels, "estimate_ratio"
        float, "annotated_px" float and "estimated_px" (float or None) medians in image
        pixels.
    """
    from ..scale import preferred_diameter

    pref, (lo, hi) = preferred_diameter(model)
    pairs = [(d, e) for _, d, e in scales if d and e]
    ratio = float(np.median([e / d for d, e in pairs])) if pairs else 1.0
    return {"diameter": round(pref, 2), "range": [round(lo, 2), round(hi, 2)],
            "estimate_ratio": round(ratio, 4),
            "annotated_px": round(float(np.median([d for _, d, _ in scales if d] or [0])), 2),
            "estimated_px": round(float(np.median([e for _, e in pairs])), 2) if pairs else None}


def _metadata(model, cfg, part, train, val, before, after, step, seconds, history,
              size) -> dict:
    from ..model.checkpoints import read_checkpoint
    from ..model.registry import BUNDLED_PATH

    base_steps = 0
    base = BUNDLED_PATH if cfg.base == "bundled" else Path(cfg.base)
    if base.is_file():
        try:
            base_steps = int(read_checkpoint(base).extra.get("trained_steps", 0))
        except Exception:  # a checkpoint of another format: no step count
            base_steps = 0
    data = summary(train, val)
    extra = {"trained_steps": base_steps,
             "object_size": size,
             "finetune": {"base": str(cfg.base), "trained": part, "steps": int(step),
                          "seconds": round(seconds, 1), "data": data,
                          "lora": ({"rank": cfg.lora_rank, "proj": cfg.lora_proj, "merged": True}
                                   if cfg.lora_rank else None),
                          "before": before, "after": after,
                          "history": [[h["step"], h["score"]] for h in history],
                          "config": asdict(cfg)}}
    # automatic segmentation: recalibrated ones, else those the base model came with
    if "automask" in after:
        extra["automask_calibration"] = {"validation_samples": len(val),
                                         **after.get("calibration", {}),
                                         "f1@0.5": after.get("automask_f1@0.5"),
                                         "f1@0.75": after.get("automask_f1@0.75")}
    if model.automask_defaults:
        extra["automask"] = dict(model.automask_defaults)
    if getattr(model, "ais_defaults", None) and model.has_instance_head:
        extra["ais"] = dict(model.ais_defaults)
    if getattr(model, "automask_mode", None) in ("ais", "amg"):
        extra["automask_mode"] = model.automask_mode
    return extra
