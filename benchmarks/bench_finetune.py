"""Fine-tuning on a synthetic domain shift: held-out accuracy before and after.

    .venv/bin/python benchmarks/bench_finetune.py --minutes 10
    .venv/bin/python benchmarks/bench_finetune.py --vit-b-step   # ViT-B decoder-only step

The domain: "ring cells" (`napari_sam.training.synthetic_shift`), bright rims around dark
insides, which the bundled model never saw. Four annotated 512 x 512 images go to
`napari-sam finetune` (the command's own code path: one is held out for validation); four
other images are the test set, scored as the default, scale-aware inference runs (the
objects' diameter estimated, the image zoomed to each model's preferred object size): the
fixed prompt rules (`evaluate`: one click at the most interior point, the tight box) and
the automatic segmentation F1@0.5 in mode "auto" with each model's own settings (the
shipped model's calibrated ones; the fine-tuned model's recalibrated AMG / AIS ones).
`--geometry off` scores as before the automatic zoom existed (the whole image resized to
the model input, AMG). Goal: both +0.15.

`--vit-b-step`: a random-weight ViT-B (no download), `--images` 512 x 512 images embedded
once as cached training views (frozen encoder), then the median time of `--runs`
decoder-only training steps for each of `--step-sizes` (B views x O prompted objects; a
simulated click / box round and a corrective click, forward and backward, AdamW), with the
decoder under bf16 autocast and in fp32 side by side, and the step's GFLOP (goal: a step
under 1 s).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def load() -> str:
    try:
        return f"{os.getloadavg()[0]:.1f}"
    except OSError:
        return "?"


def heldout(model_path: str, pairs, geometry: str = "auto") -> dict:
    """Click / box mean IoU and automask F1 on (image, labels) pairs. geometry "auto": the
    default inference (diameter estimated, mode "auto"); "annotated": each image's annotated
    median diameter given as the diameter, mode "auto"; "off": the whole image resized to
    the model input, AMG (the geometry before `napari_sam.scale`)."""
    import numpy as np

    from napari_sam.predictor import Predictor
    from napari_sam.automask.segmenter import automask, resolve_mode
    from napari_sam.training.evaluate import match_f1, prompt_ious

    off = geometry == "off"
    pred = Predictor(model_path)
    click, box, f1 = [], [], []
    for img, lab in pairs:
        areas = np.bincount(lab.ravel())[1:]
        d = {"off": "off", "auto": None}.get(
            geometry, float(np.sqrt(4 * np.median(areas[areas > 0]) / np.pi)))
        pred.diameter = d
        c, b = prompt_ious(pred, img, lab, 50)
        click, box = click + c, box + b
        f1.append(match_f1(automask(img, pred, mode="amg" if off else "auto", diameter=d), lab))
    res = {"click_miou": float(np.mean(click)), "box_miou": float(np.mean(box)),
           "objects": len(click), "images": len(pairs),
           **{k: float(np.mean([f[k] for f in f1])) for k in ("f1@0.5", "f1@0.75")}}
    res["mode"] = "amg" if off else resolve_mode("auto", pred.model)
    return res


def accuracy(args) -> dict:
    import tifffile

    from napari_sam.cli import main as cli
    from napari_sam.training.synthetic_shift import ring_cells

    work = Path(args.work or tempfile.mkdtemp(prefix="bench_finetune_"))
    work.mkdir(parents=True, exist_ok=True)
    for i in range(4):
        img, lab = ring_cells(i, (512, 512))
        tifffile.imwrite(work / f"ring_{i}.tif", img)
        tifffile.imwrite(work / f"ring_{i}_labels.tif", lab)
    test = [ring_cells(1000 + i, (512, 512)) for i in range(4)]
    out = work / "finetuned.pt"
    load_before = load()
    t0 = time.time()
    if not args.score_only:
        rc = cli(["finetune", *map(str, sorted(work.glob("ring_?.tif"))), "--labels",
                  str(work), "-o", str(out), "--minutes", str(args.minutes), "--overwrite",
                  "--log", str(work / "log.jsonl")])
        if rc:
            raise SystemExit(rc)
    wall = time.time() - t0
    before = heldout("bundled", test, args.geometry)
    after = heldout(str(out), test, args.geometry)
    res = {"minutes": args.minutes, "geometry": args.geometry, "wall_s": round(wall, 1),
           "load_before": load_before, "load_after": load(), "before": before, "after": after}
    print(json.dumps(res, indent=1))
    for k in ("click_miou", "box_miou", "f1@0.5", "f1@0.75"):
        print(f"{k:12s} {before[k]:.3f} -> {after[k]:.3f} ({after[k] - before[k]:+.3f})")
    return res


def step_time(args) -> dict:
    import numpy as np
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from napari_sam.model import build_model
    from napari_sam.training.finetune import FinetuneConfig, _trainable, TrainingViews, step_loss
    from napari_sam.training.synthetic_shift import ring_cells
    from napari_sam.training.user_data import from_arrays

    sys.path.insert(0, str(ROOT / "tests"))
    from testing_utils import randomize_

    torch.manual_seed(0)
    model = build_model("vit_b")  # random weights: nothing is downloaded
    randomize_(model)
    _trainable(model, "decoder")
    model.train()
    model.image_encoder.eval()
    sizes = [tuple(int(v) for v in t.split("x")) for t in args.step_sizes.split(",")]
    rng = np.random.default_rng(0)
    samples = from_arrays([ring_cells(i, (512, 512)) for i in range(args.images)])
    t = time.time()
    views = TrainingViews(model, samples, rng, FinetuneConfig(views=1), torch.device("cpu"),
                   torch.bfloat16, True, lambda m: print(m, file=sys.stderr))
    embed = (time.time() - t) / len(samples)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    res = {"arch": "vit_b (random weights)", "images": args.images, "runs": args.runs,
           "embed_one_view_s": round(embed, 2), "load_before": load(), "steps": []}

    def step(cfg, amp):
        loss = step_loss(model, views, rng, cfg, amp)
        opt.zero_grad()
        loss.backward()
        opt.step()

    for batch, objects in sizes:
        cfg = FinetuneConfig(views=1, batch=batch, objects=objects)
        with FlopCounterMode(display=False) as fc:
            step(cfg, torch.bfloat16)
        # the two decoder precisions alternate step by step, so both see the same load
        times = {"bf16": [], "fp32": []}
        for i in range(args.runs + 1):
            for name, amp in (("bf16", torch.bfloat16), ("fp32", None)):
                t = time.perf_counter()
                step(cfg, amp)
                if i >= 1:  # the first step of each allocates and warms up
                    times[name].append(time.perf_counter() - t)
        row = {"batch": batch, "objects": objects, "gflop": round(fc.get_total_flops() / 1e9, 1)}
        for name, ts in times.items():
            row[f"median_s_{name}"] = round(statistics.median(ts), 3)
        row["fp32_over_bf16"] = round(row["median_s_fp32"] / row["median_s_bf16"], 2)
        print(json.dumps(row), flush=True)
        res["steps"].append(row)
    res.update(threads=torch.get_num_threads(), load=load())
    print(json.dumps(res))
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--work", default="", help="folder for the data and the model (default: temp)")
    ap.add_argument("--geometry", default="auto", choices=("auto", "annotated", "off"),
                    help="held-out scoring: the default scale-aware inference (diameter "
                         "estimated), the annotated diameter given, or no zoom")
    ap.add_argument("--score-only", action="store_true",
                    help="score the finetuned.pt already in --work (no training)")
    ap.add_argument("--vit-b-step", "--step-time", dest="step_time", action="store_true",
                    help="time decoder-only ViT-B training steps on cached embeddings")
    ap.add_argument("--images", type=int, default=3, help="--vit-b-step: cached 512^2 images")
    ap.add_argument("--step-sizes", default="4x4,1x4", metavar="BxO,...",
                    help="--vit-b-step: steps of B views x O prompted objects to time "
                         "(default: the fine-tuning default 4x4, and 1x4)")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--json", default="", help="write the figures here")
    args = ap.parse_args()
    res = step_time(args) if args.step_time else accuracy(args)
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
