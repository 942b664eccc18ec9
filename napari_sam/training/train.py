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
import torch.nn.functional as F

from ..model import Sam, build_model, save_checkpoint
from ..model.config import config_from_dict, config_to_dict
from ..runtime.session import InferenceSession
from ..transforms import rc_to_xy
from .pool import SamplePool
from .prompts import corrective_click, jittered_box, random_point

MODES = ("click", "box", "points")
MODE_P = (0.45, 0.3, 0.25)
MAX_POINTS = 6


@dataclass
class TrainConfig:
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
    # start from exported weights (e.g. the shipped bundled.pt) when `out` has no checkpoint;
    # the optimizer starts afresh and the step count continues from the file's trained_steps
    init: str = ""
    # step at which the learning-rate schedule (warm-up, cosine decay to `steps`) starts
    # again: a warm restart, e.g. when continuing from `init`
    restart: int = 0


def focal_dice(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-mask 20 * focal + dice; logits and target (..., H, W)."""
    p = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    pt = p * target + (1 - p) * (1 - target)
    alpha = 0.25 * target + 0.75 * (1 - target)
    focal = (alpha * ce * (1 - pt) ** 2).flatten(-2).mean(-1)
    inter = (p * target).flatten(-2).sum(-1)
    dice = 1 - (2 * inter + 1) / (p.flatten(-2).sum(-1) + target.flatten(-2).sum(-1) + 1)
    return 20 * focal + dice


def make_prompts(rng, labels_list, k: int, mode: str, size: int):
    """Choose k objects per image and their first prompts -> tensors in the input frame."""
    truths, pts, labs, boxes = [], [], [], []
    for labels in labels_list:
        ids = np.unique(labels)
        ids = ids[ids > 0]
        for i in rng.choice(ids, size=k, replace=len(ids) < k):
            truth = labels == i
            truths.append(truth)
            p, lab = np.zeros((MAX_POINTS, 2)), -np.ones(MAX_POINTS, dtype=np.int64)
            if mode == "click":
                p[0], lab[0] = random_point(rng, truth), 1
            elif mode == "points":
                npos, nneg = int(rng.integers(1, 4)), int(rng.integers(0, 3))
                for j in range(npos):
                    p[j], lab[j] = random_point(rng, truth, 0.3), 1
                ring = (labels != i) & _dilate(truth, 6)
                for j in range(npos, npos + nneg):
                    if ring.any():
                        p[j], lab[j] = random_point(rng, ring, 0.0), 0
            else:
                b = jittered_box(rng, truth, (size, size))
                boxes.append(np.concatenate([rc_to_xy(b[:2])[0], rc_to_xy(b[2:])[0]]))
            pts.append(rc_to_xy(p))
            labs.append(lab)
    truth_t = torch.from_numpy(np.stack(truths)).float()
    box_t = torch.tensor(np.stack(boxes), dtype=torch.float32) if boxes else None
    return truth_t, np.stack(pts), np.stack(labs), box_t


def _dilate(mask, r):
    from scipy import ndimage as ndi

    return ndi.binary_dilation(mask, iterations=r)


def decode_loss(model: Sam, emb, pts, labs, boxes, mask_in, truth, multimask: bool):
    """Decode, upsample to input size, and return (loss, best logits, best masks)."""
    use_pts = None
    if pts is not None and (labs >= 0).any():
        keep = int((labs >= 0).sum(1).max())
        use_pts = (torch.from_numpy(pts[:, :keep]).float(), torch.from_numpy(labs[:, :keep]))
    logits, iou_pred = model.decode(emb, use_pts, boxes, mask_in, multimask)
    logits, iou_pred = logits.float(), iou_pred.float()
    s = truth.shape[-1]
    up = F.interpolate(logits, (s, s), mode="bilinear", align_corners=False)
    per = focal_dice(up, truth[:, None].expand_as(up))  # (N, K)
    with torch.no_grad():
        pred = up > 0
        t = truth[:, None].bool()
        inter = (pred & t).flatten(-2).sum(-1).float()
        union = (pred | t).flatten(-2).sum(-1).float().clamp(min=1)
        real_iou = inter / union
    best = per.argmin(1)
    rows = torch.arange(len(best))
    loss = per[rows, best].mean() + F.mse_loss(iou_pred, real_iou)
    return loss, logits[rows, best][:, None].detach(), pred[rows, best].numpy()


def prompt_losses(model: Sam, emb, rng, labels_list, objects: int, mode: str,
                  loss_size: int = 0):
    """The two rounds of a simulated user on embedded images -> (loss1, loss2).

    emb: (B * objects, C, g, g) embeddings, each image's repeated `objects` times;
    labels_list: B label images (S, S) in the model's input frame, each with an object.
    Round 1 is the first prompt (`mode`: "click" with multimask output, "box" or "points"),
    round 2 adds one corrective click per object with round 1's logits as mask input.
    loss_size: compare masks at this side instead of the input's (e.g. 256 for SAM's 1024
    input: 16 x fewer pixels in the loss and its gradient).
    """
    size = model.config.image_size
    truth, pts, labs, boxes = make_prompts(rng, labels_list, objects, mode, size)
    f = 1.0
    if loss_size and loss_size < size:
        f = size / loss_size
        truth = (F.interpolate(truth[:, None], (loss_size, loss_size), mode="area")[:, 0]
                 > 0.5).float()
    loss1, prev, pred = decode_loss(model, emb, pts if mode != "box" else None, labs, boxes,
                                    None, truth, multimask=(mode == "click"))
    # refinement: one corrective click per object, previous logits as mask input
    truth_np = truth.numpy().astype(bool)
    if mode == "box":
        pts = np.zeros((len(truth_np), MAX_POINTS, 2))
        labs = -np.ones((len(truth_np), MAX_POINTS), dtype=np.int64)
    for n in range(len(truth_np)):
        click = corrective_click(rng, pred[n], truth_np[n])
        free = np.flatnonzero(labs[n] < 0)
        if click is not None and len(free):
            pts[n, free[0]] = rc_to_xy((click[0] + 0.5) * f - 0.5)[0]
            labs[n, free[0]] = click[1]
    loss2, _, _ = decode_loss(model, emb, pts, labs, boxes, prev, truth, multimask=False)
    return loss1, loss2


def train_step(model, opt, rng, pool: SamplePool, tc: TrainConfig):
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
    span = tc.steps
    if tc.restart and step >= tc.restart:  # a new schedule over the steps from `restart` on
        step, span = step - tc.restart, span - tc.restart
    if step < tc.warmup:
        return tc.lr * (step + 1) / tc.warmup
    t = min(1.0, (step - tc.warmup) / max(1, span - tc.warmup))
    return tc.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * t)))


def quick_eval(model: Sam, n_images: int = 12) -> dict:
    from ..predictor import Predictor
    from .evaluate import evaluate_prompts, heldout_set

    model.eval()
    try:
        pred = Predictor(model, device="cpu", precision="bf16", diameter="off")
        return evaluate_prompts(pred, heldout_set(n_images), max_objects=8)
    finally:
        model.train()


def save_state(path: Path, model, opt, step: int, tc: TrainConfig, rng) -> None:
    tmp = path.with_name(path.name + ".partial")
    torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "step": step,
                "config": config_to_dict(model.config), "train": asdict(tc),
                "rng": rng.bit_generator.state, "torch_rng": torch.get_rng_state()}, tmp)
    os.replace(tmp, path)


def train(tc: TrainConfig, log=print) -> Sam:
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
    (`synthetic.nuclei_image`, seeds from CALIBRATION_SEED, apart from the test seeds)."""
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
    `calibrate` > 0, automask thresholds chosen on that many validation images go with them."""
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
