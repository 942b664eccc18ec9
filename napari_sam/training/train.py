"""Train a small promptable segmentation model on synthetic microscopy (the bundled model).

    python -m napari_sam.training.train --out runs/bundled --steps 6000
    python -m napari_sam.training.train --out runs/bundled --export napari_sam/weights/bundled.pt \
        --calibrate 20
    python -m napari_sam.training.train --out runs/bundled --init napari_sam/weights/bundled.pt

Each step embeds a batch of images and, for several objects per image, simulates a user:
a first prompt (one click with multimask output, a jittered box, or a few positive and
negative clicks), then a refinement round with a corrective click and the previous
low-res logits as mask input. Losses: 20 x focal + dice on masks at input resolution
(the best of the multimask outputs), and MSE of the IoU head against the real IoU.
A checkpoint is written every few minutes; running the same command again resumes.
"""

from __future__ import annotations

if __name__ == "__main__":  # run as a program, which owns its process: tune it for CPU
    # work before torch is imported (OpenMP wait policy; napari_sam/runtime/cpu.py)
    from napari_sam.runtime.cpu import tune_cpu_if_requested

    tune_cpu_if_requested(default=True)

import argparse
import json
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from ..model import Sam, build_model, save_checkpoint
from ..model.config import config_from_dict, config_to_dict
from ..runtime.session import InferenceSession
from .pool import SamplePool
# the simulated-user loss lives in prompt_loss; its names stay importable from here
from .prompt_loss import (MAX_POINTS, MODE_P, MODES, decode_loss, focal_dice,  # noqa: F401
                          make_prompts, prompt_losses)


@dataclass
class TrainConfig:
    """The settings of a training run (each is also a command-line option of `main`).

    Parameters
    ----------
    out : str
        Run folder: `last.pt` (the resumable state) and `log.jsonl`.
    arch : str
        The architecture to build (`model.build_model`).
    steps, batch, objects : int
        Training steps; images per step; objects prompted per image.
    lr, weight_decay : float
        AdamW's peak learning rate and weight decay.
    warmup : int
        Steps of linear warm-up before the cosine decay.
    pool, refresh : int
        Synthetic images kept (`pool.SamplePool`); images replaced per step.
    seed : int
        Seeds the pool, the prompts and torch.
    eval_every : int
        Steps between held-out evaluations (`quick_eval`).
    ckpt_minutes : float
        Minutes between writes of the state.
    bf16 : bool
        Run the step under bfloat16 autocast (CPU).
    init : str
        Start from exported weights (e.g. the shipped bundled.pt) when `out` has no
        checkpoint; the optimizer starts afresh and the step count continues from the
        file's trained_steps. "": build a new model.
    restart : int
        Step at which the learning-rate schedule (warm-up, cosine decay to `steps`) starts
        again: a warm restart, e.g. when continuing from `init` (0: none).
    """

    out: str = "runs/bundled"
    arch: str = "bundled"
    steps: int = 6000
    batch: int = 8
    objects: int = 4
    lr: float = 4e-4
    weight_decay: float = 0.01
    warmup: int = 200
    pool: int = 1500
    refresh: int = 2
    seed: int = 0
    eval_every: int = 500
    ckpt_minutes: float = 3.0
    bf16: bool = True
    init: str = ""
    restart: int = 0


def train_step(model, opt, rng, pool: SamplePool, tc: TrainConfig):
    """One optimizer step on a pool batch with a randomly chosen prompt mode.

    Parameters
    ----------
    model : Sam
        Trained in place.
    opt : torch.optim.Optimizer
    rng : numpy.random.Generator
        Draws the batch, the mode and the prompts.
    pool : SamplePool
    tc : TrainConfig
        Its `batch`, `objects` and `bf16` are used.

    Returns
    -------
    loss1, loss2 : float
        The two rounds' losses (`prompt_loss.prompt_losses`).
    mode : str
        "click", "box" or "points".
    """
    batch = pool.batch(tc.batch)
    x = torch.from_numpy(np.stack([p for p, _ in batch])).permute(0, 3, 1, 2).float()
    mode = MODES[rng.choice(3, p=MODE_P)]
    # the model's fast forms (runtime.session); under autograd nothing is kept
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=tc.bf16), InferenceSession(model):
        emb = model.encode(x).repeat_interleave(tc.objects, 0)
        loss1, loss2 = prompt_losses(model, emb, rng, [lab for _, lab in batch], tc.objects,
                                     mode)
        loss = loss1 + loss2
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    return loss1.item(), loss2.item(), mode


def lr_at(step: int, tc: TrainConfig) -> float:
    """The learning rate at `step`: linear warm-up, then cosine decay to 5 % of `tc.lr`.

    Parameters
    ----------
    step : int
    tc : TrainConfig
        Its `lr`, `warmup`, `steps` and `restart` set the schedule.

    Returns
    -------
    float
    """
    span = tc.steps
    if tc.restart and step >= tc.restart:  # a new schedule over the steps from `restart` on
        step, span = step - tc.restart, span - tc.restart
    if step < tc.warmup:
        return tc.lr * (step + 1) / tc.warmup
    t = min(1.0, (step - tc.warmup) / max(1, span - tc.warmup))
    return tc.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * t)))


def quick_eval(model: Sam, n_images: int = 12) -> dict:
    """1-click and box mean IoU on held-out synthetic images (CPU, bf16, 8 objects each).

    Parameters
    ----------
    model : Sam
        Put in eval mode for the evaluation, back in training mode after.
    n_images : int
        Images of `evaluate.heldout_set`.

    Returns
    -------
    dict
        `evaluate.evaluate_prompts`'s figures.
    """
    from ..predictor import Predictor
    from .evaluate import evaluate_prompts, heldout_set

    model.eval()
    try:
        pred = Predictor(model, device="cpu", precision="bf16", diameter="off")
        return evaluate_prompts(pred, heldout_set(n_images), max_objects=8)
    finally:
        model.train()


def save_state(path: Path, model, opt, step: int, tc: TrainConfig, rng) -> None:
    """Write the resumable training state to `path` (through a `.partial` file).

    Parameters
    ----------
    path : pathlib.Path
    model : Sam
    opt : torch.optim.Optimizer
    step : int
        Steps done.
    tc : TrainConfig
    rng : numpy.random.Generator
        Its state is saved, with torch's.
    """
    tmp = path.with_name(path.name + ".partial")
    torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "step": step,
                "config": config_to_dict(model.config), "train": asdict(tc),
                "rng": rng.bit_generator.state, "torch_rng": torch.get_rng_state()}, tmp)
    os.replace(tmp, path)


def train(tc: TrainConfig, log=print) -> Sam:
    """Train (or resume training) until `tc.steps`; see the module docstring.

    Parameters
    ----------
    tc : TrainConfig
    log : callable
        Called with progress messages and records.

    Returns
    -------
    Sam
        The trained model, in eval mode.
    """
    out = Path(tc.out)
    out.mkdir(parents=True, exist_ok=True)
    ckpt_path = out / "last.pt"
    rng = np.random.default_rng(tc.seed)
    torch.manual_seed(tc.seed)
    step = 0
    if ckpt_path.is_file():
        state = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        model = Sam(config_from_dict(state["config"]))
        model.load_state_dict(state["model"])
        step = state["step"]
        rng.bit_generator.state = state["rng"]
        torch.set_rng_state(state["torch_rng"])
        log(f"resumed from {ckpt_path} at step {step}")
    elif tc.init:
        saved = torch.load(tc.init, map_location="cpu", weights_only=True)
        model = Sam(config_from_dict(saved["config"]))
        model.load_state_dict(saved["model"])
        step = int(saved.get("trained_steps", 0))
        state = None
        log(f"starting from the weights in {tc.init} (step {step}, fresh optimizer)")
    else:
        model = build_model(tc.arch)
        state = None
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay,
                            foreach=True)
    if state is not None:
        opt.load_state_dict(state["opt"])
    log(f"building a pool of {tc.pool} synthetic images")
    pool = SamplePool(rng, tc.pool, model.config.image_size)
    logf = open(out / "log.jsonl", "a")
    last_ckpt, t0, hist = time.time(), time.time(), []
    while step < tc.steps:
        for g in opt.param_groups:
            g["lr"] = lr_at(step, tc)
        l1, l2, mode = train_step(model, opt, rng, pool, tc)
        pool.refresh(tc.refresh)
        step += 1
        hist.append((l1, l2))
        if step % 25 == 0:
            a = np.mean(hist, axis=0)
            rec = {"step": step, "loss1": round(float(a[0]), 4), "loss2": round(float(a[1]), 4),
                   "lr": lr_at(step, tc), "s_per_step": round((time.time() - t0) / len(hist), 3)}
            logf.write(json.dumps(rec) + "\n")
            logf.flush()
            log(rec)
            hist, t0 = [], time.time()
        if step % tc.eval_every == 0 or step == tc.steps:
            res = quick_eval(model)
            logf.write(json.dumps({"step": step, "eval": res}) + "\n")
            logf.flush()
            log({"step": step, "eval": res})
        if time.time() - last_ckpt > tc.ckpt_minutes * 60 or step == tc.steps:
            save_state(ckpt_path, model, opt, step, tc, rng)
            last_ckpt = time.time()
    return model.eval()


CALIBRATION_SEED = 20_000_003  # disjoint from training (< 10**6) and the held-out test set


def calibrate_automask(model: Sam, n_images: int, log=print) -> dict:
    """Automask thresholds for these weights: the best F1@0.5 over a threshold grid on
    synthetic validation images (not the held-out test set, whose figures stay honest).

    Two validation sets count equally: `n_images` of the general synthetic mix (nuclei,
    cells, shapes) and `n_images` of fluorescence nuclei alone, the plugin's main use
    (`synthetic.nuclei_image`, seeds from CALIBRATION_SEED, apart from the test seeds).

    Parameters
    ----------
    model : Sam
    n_images : int
        Images per validation set.
    log : callable
        Called with the chosen thresholds and their figures.

    Returns
    -------
    dict
        "automask" {"pred_iou_thresh", "stability_thresh"} and "automask_calibration"
        (images, seed, sets and the F1 figures per set).
    """
    from ..predictor import Predictor
    from .evaluate import heldout_set, sweep_automask
    from .synthetic import nuclei_image

    predictor = Predictor(model, device="cpu", diameter="off")
    sets = {"mix": heldout_set(n_images, seed=CALIBRATION_SEED),
            "nuclei": [nuclei_image(CALIBRATION_SEED + i, (256, 256)) for i in range(n_images)]}
    table: dict = {}
    for name, pairs in sets.items():
        for row in sweep_automask(pairs, predictor):
            key = (row["pred_iou_thresh"], row["stability_thresh"])
            table.setdefault(key, {})[name] = row
    scored = sorted(table.items(), key=lambda kv: (
        -sum(r["f1@0.5"] for r in kv[1].values()), -sum(r["f1@0.75"] for r in kv[1].values())))
    (iou_t, stab_t), best = scored[0]
    figures = {f"{name} f1@{t}": best[name][f"f1@{t}"] for name in sets for t in ("0.5", "0.75")}
    log(f"automask thresholds: predicted IoU {iou_t}, stability {stab_t} (validation, "
        f"{n_images} images each: " + ", ".join(f"{k} {v:.3f}" for k, v in figures.items()) + ")")
    return {"automask": {"pred_iou_thresh": iou_t, "stability_thresh": stab_t},
            "automask_calibration": {"images": n_images, "seed": CALIBRATION_SEED,
                                     "sets": list(sets), **figures}}


def export(ckpt: Path, dest: Path, calibrate: int = 0) -> None:
    """Write the weights of a training checkpoint as a napari-sam model file; with
    `calibrate` > 0, automask thresholds chosen on that many validation images go with them.

    Parameters
    ----------
    ckpt : pathlib.Path
        A training state (`last.pt`).
    dest : pathlib.Path
        The model file to write.
    calibrate : int
        Validation images per set for `calibrate_automask` (0: none).
    """
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    model = Sam(config_from_dict(state["config"]))
    model.load_state_dict(state["model"])
    model.eval()
    extra = {"trained_steps": int(state["step"])}
    if calibrate:
        extra.update(calibrate_automask(model, calibrate))
    dest.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(dest, model, extra)


def main(argv=None) -> int:
    """Command line: train with `TrainConfig`'s options, or `--export` the weights.

    Parameters
    ----------
    argv : list of str or None
        The arguments; None: ``sys.argv[1:]``.

    Returns
    -------
    int
        The exit status, 0.
    """
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for f, v in asdict(TrainConfig()).items():
        kind = (lambda s: s.lower() in ("1", "true", "yes")) if isinstance(v, bool) else type(v)
        ap.add_argument("--" + f.replace("_", "-"), type=kind, default=v)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--export", metavar="DEST", help="write the last checkpoint's weights to DEST")
    ap.add_argument("--calibrate", type=int, default=0, metavar="N",
                    help="with --export: choose automask thresholds on N validation images")
    a = vars(ap.parse_args(argv))
    threads, dest, calibrate = a.pop("threads"), a.pop("export"), a.pop("calibrate")
    if threads:
        torch.set_num_threads(threads)
    tc = TrainConfig(**a)
    if dest:
        export(Path(tc.out) / "last.pt", Path(dest), calibrate)
        return 0
    train(tc)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
