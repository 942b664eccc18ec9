"""Train the bundled model's instance head on synthetic microscopy (encoder frozen).

    python -m napari_sam.training.train_instance --out runs/ais --init napari_sam/weights/bundled.pt \
        --steps 6000
    python -m napari_sam.training.train_instance --out runs/ais --export napari_sam/weights/bundled.pt \
        --calibrate 16

Each step embeds a batch of pool images with the frozen encoder (no gradients) and trains
the head (`model.instance_head`) to predict foreground, centre and boundary distances
(`instance_targets`). Loss: BCE + dice on the foreground, L1 on both distance maps
(weighted towards object pixels). Running the same command again resumes from
`OUT/last.pt`; `--export` writes the init weights plus the head, with AIS parameters
chosen on validation images apart from the held-out test set.
"""

from __future__ import annotations

if __name__ == "__main__":  # run as a program, which owns its process: tune it for CPU
    # work before torch is imported (OpenMP wait policy; napari_sam/runtime/cpu.py)
    from napari_sam.runtime.cpu import tune_cpu_if_requested

    tune_cpu_if_requested(default=True)

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..model import Sam, save_checkpoint
from ..model.checkpoints import read_checkpoint
from ..model.config import BUNDLED
from ..runtime.session import InferenceSession
# validation and calibration live in instance_calibration; their names stay importable here
from .instance_calibration import (CALIBRATION_SEED, PARAM_GRID, calibrate,  # noqa: F401
                                   compare_modes, score, validation_maps, validation_sets)
from .instance_targets import instance_targets
from .pool import model_sample

# objects of the `--scaled` share of the pool: median diameters drawn log-uniformly from this
# range of model-input px (the default path zooms objects to the preferred 40 px; tiles and
# estimate errors spread them around it)
SCALED_DIAMETERS = (24.0, 72.0)


class TargetPool:
    """Synthetic (pixels, targets) pairs, refreshed as they are used; copies are flipped and
    rotated (the targets' meaning is unchanged by both). A share `scaled` of the items are
    nuclei or touching cells generated at the sizes the default path shows the model
    (`SCALED_DIAMETERS`), the rest the training mix (`pool.model_sample`).

    Parameters
    ----------
    rng : numpy.random.Generator
        Draws the samples, the replacements and the augmentations.
    n : int
        How many pairs the pool holds.
    size : int
        S, the side of the square images.
    scaled : float
        The share of pairs generated at `SCALED_DIAMETERS` (0: none).
    """

    def __init__(self, rng: np.random.Generator, n: int, size: int,
                 scaled: float = 0.0) -> None:
        self.rng, self.size, self.scaled = rng, size, float(scaled)
        self.items = [self._new() for _ in range(n)]

    def _new(self):
        if self.scaled and self.rng.random() < self.scaled:
            return self._scaled()
        px, lab = model_sample(self.rng, self.size)
        return px, instance_targets(lab)

    def _scaled(self):
        from ..transforms import to_model_pixels
        from .multiscale import scaled_sample

        lo, hi = np.log(SCALED_DIAMETERS)
        d = float(np.exp(self.rng.uniform(lo, hi)))
        kind = "cells" if self.rng.random() < 0.6 else "nuclei"
        # seeds far above every benchmark's and test's (those are below 10^8)
        seed = int(self.rng.integers(1 << 40, 1 << 41))
        image, lab = scaled_sample(kind, d, (self.size, self.size), seed,
                                   dtype=str(self.rng.choice(["uint8", "uint16"])))
        px = np.round(to_model_pixels(image)).astype(np.uint8)
        return px, instance_targets(lab)

    def refresh(self, k: int) -> None:
        """Replace `k` randomly chosen pairs with new ones.

        Parameters
        ----------
        k : int
            How many pairs to replace (the same one may be picked twice).
        """
        for _ in range(k):
            self.items[self.rng.integers(len(self.items))] = self._new()

    def batch(self, b: int):
        """`b` pairs drawn with replacement, each rotated by k * 90 degrees and maybe flipped.

        Parameters
        ----------
        b : int
            The batch size.

        Returns
        -------
        pixels : torch.Tensor, (b, 3, S, S) float32
            0-255, the model's pixel format.
        targets : torch.Tensor, (b, 3, S, S) float32
            `instance_targets`: foreground, centre and boundary distances.
        """
        xs, ts = [], []
        for i in self.rng.integers(len(self.items), size=b):
            px, tg = self.items[i]
            k = int(self.rng.integers(4))
            px, tg = np.rot90(px, k, (0, 1)), np.rot90(tg, k, (1, 2))
            if self.rng.random() < 0.5:
                px, tg = px[:, ::-1], tg[:, :, ::-1]
            xs.append(np.ascontiguousarray(px))
            ts.append(np.ascontiguousarray(tg))
        x = torch.from_numpy(np.stack(xs)).permute(0, 3, 1, 2).float()
        return x, torch.from_numpy(np.stack(ts))


def head_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """logits, target (B, 3, S, S) -> scalar loss.

    Parameters
    ----------
    logits : torch.Tensor, (B, 3, S, S)
        The head's logits: foreground, centre and boundary distance.
    target : torch.Tensor, (B, 3, S, S) float
        `instance_targets` of the labels.

    Returns
    -------
    torch.Tensor, () float32
        BCE + dice on the foreground plus 2 x the L1 of the sigmoid distances, weighted
        0.1 on background and 1.1 on objects.
    """
    logits = logits.float()
    fg_t = target[:, 0]
    p = logits.sigmoid()
    bce = F.binary_cross_entropy_with_logits(logits[:, 0], fg_t)
    inter = (p[:, 0] * fg_t).sum((1, 2))
    dice = 1 - (2 * inter + 1) / (p[:, 0].sum((1, 2)) + fg_t.sum((1, 2)) + 1)
    w = 0.1 + fg_t  # distances matter mostly on objects
    dist = ((p[:, 1:] - target[:, 1:]).abs() * w[:, None]).sum((2, 3)) / w.sum((1, 2))[:, None]
    return bce + dice.mean() + 2 * dist.mean()


def with_head(model: Sam) -> Sam:
    """A copy of `model` with the bundled instance head added (random), weights shared.

    Parameters
    ----------
    model : Sam
        Its own instance head config is kept if it has one.

    Returns
    -------
    Sam
        A new model with `model`'s weights and automask thresholds.
    """
    cfg = model.config.with_(instance_head=model.config.instance_head or BUNDLED.instance_head)
    out = Sam(cfg)
    missing, unexpected = out.load_state_dict(model.state_dict(), strict=False)
    assert not unexpected and all(k.startswith("instance_head.") for k in missing)
    out.automask_defaults = dict(model.automask_defaults)
    return out


def load_init(path: str) -> Sam:
    """The weights in `path` (with their thresholds and object size) plus a head.

    Parameters
    ----------
    path : str or os.PathLike
        A model checkpoint.

    Returns
    -------
    Sam
        The model with an instance head (its own, or a new random one).
    """
    from ..model.registry import model_from_checkpoint

    model = model_from_checkpoint(read_checkpoint(path), str(path))
    out = with_head(model)
    for name in ("object_size", "ais_defaults", "automask_mode"):
        if hasattr(model, name):
            setattr(out, name, getattr(model, name))
    return out


def train(a) -> Sam:
    """Train (or resume training) the instance head; see the module docstring.

    Parameters
    ----------
    a : argparse.Namespace
        `main`'s options: out, init, steps, batch, lr, pool, refresh, seed, eval_every,
        scaled.

    Returns
    -------
    Sam
        The model with the trained head.
    """
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    ckpt = out / "last.pt"
    rng = np.random.default_rng(a.seed)
    torch.manual_seed(a.seed)
    model = load_init(a.init)
    step = 0
    opt = torch.optim.AdamW(model.instance_head.parameters(), lr=a.lr, weight_decay=0.01)
    if ckpt.is_file():
        st = torch.load(ckpt, map_location="cpu", weights_only=True)
        model.instance_head.load_state_dict(st["head"])
        opt.load_state_dict(st["opt"])
        step = st["step"]
        rng.bit_generator.state = st["rng"]
        print(f"resumed from {ckpt} at step {step}", flush=True)
    for p in model.parameters():
        p.requires_grad_(False)
    for p in model.instance_head.parameters():
        p.requires_grad_(True)
    model.eval()
    model.instance_head.train()
    pool = TargetPool(rng, a.pool, model.config.image_size, a.scaled)
    val = validation_sets(6)
    logf = open(out / "log.jsonl", "a")
    t0, last, hist = time.time(), time.time(), []
    session = InferenceSession(model)  # the frozen encoder's fast form, kept across steps
    while step < a.steps:
        t = step / max(1, a.steps)
        lr = a.lr * min(1.0, (step + 1) / 200) * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * t)))
        for g in opt.param_groups:
            g["lr"] = lr
        x, tgt = pool.batch(a.batch)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            with torch.no_grad(), session:
                emb = model.encode(x)
            loss = head_loss(model.instance_logits(emb, x), tgt)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        pool.refresh(a.refresh)
        step += 1
        hist.append(loss.item())
        if step % 25 == 0:
            rec = {"step": step, "loss": round(float(np.mean(hist)), 4), "lr": lr,
                   "s_per_step": round((time.time() - t0) / len(hist), 3)}
            print(rec, flush=True)
            logf.write(json.dumps(rec) + "\n")
            logf.flush()
            hist, t0 = [], time.time()
        if step % a.eval_every == 0 or step == a.steps:
            model.instance_head.eval()
            rec = {"step": step, "eval": score(validation_maps(model, val))}
            model.instance_head.train()
            print(rec, flush=True)
            logf.write(json.dumps(rec) + "\n")
            logf.flush()
        if time.time() - last > 120 or step == a.steps:
            tmp = ckpt.with_name("last.pt.partial")
            torch.save({"head": model.instance_head.state_dict(), "opt": opt.state_dict(),
                        "step": step, "rng": rng.bit_generator.state}, tmp)
            tmp.replace(ckpt)
            last = time.time()
    return model


def export(a) -> None:
    """Write the init weights plus the trained head, optionally calibrated and compared.

    Parameters
    ----------
    a : argparse.Namespace
        `main`'s options: out, init, export (the file to write), calibrate and compare
        (images per set, 0: skip).
    """
    model = load_init(a.init)
    st = torch.load(Path(a.out) / "last.pt", map_location="cpu", weights_only=True)
    model.instance_head.load_state_dict(st["head"])
    model.eval()
    extra = dict(read_checkpoint(a.init).extra)
    # the run continued the init's head (if it had one): count its steps too
    extra["instance_head_steps"] = int(extra.get("instance_head_steps", 0)) + int(st["step"])
    if a.calibrate:
        extra.update(calibrate(model, a.calibrate))
        model.ais_defaults = dict(extra["ais"])
    if a.compare:
        extra["mode_comparison"] = compare_modes(model, a.compare)
        extra["automask_mode"] = extra["mode_comparison"]["best"]
    save_checkpoint(a.export, model, extra)


def main(argv=None) -> int:
    """Command line: train the head, or `--export` it.

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
    ap.add_argument("--out", default="runs/ais")
    ap.add_argument("--init", default=str(Path(__file__).resolve().parents[1] / "weights"
                                          / "bundled.pt"))
    ap.add_argument("--steps", type=int, default=6000)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--pool", type=int, default=600)
    ap.add_argument("--refresh", type=int, default=2)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--eval-every", type=int, default=500)
    ap.add_argument("--scaled", type=float, default=0.0, metavar="P",
                    help="share of the pool generated at the sizes the default path shows "
                         "the model (nuclei and touching cells, 24-72 px)")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--export", metavar="DEST")
    ap.add_argument("--calibrate", type=int, default=0, metavar="N")
    ap.add_argument("--compare", type=int, default=0, metavar="N",
                    help="with --export: compare AIS and AMG on N held-out images per set "
                         "and store the better one as the model's automatic mode")
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    if a.export:
        export(a)
    else:
        train(a)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
