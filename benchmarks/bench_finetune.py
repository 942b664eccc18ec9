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
decoder-only training steps (`--batch` views x `--objects` prompted objects, a simulated
click / box round and a corrective click), with the decoder under bf16 autocast and in fp32
side by side (goal under 1 s).
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
    default inference (diameter estimated, mode "auto"); "off": the whole image resized to
    the model input, AMG (the geometry before `napari_sam.scale`)."""
    from napari_sam.predictor import Predictor
    from napari_sam.segment import resolve_mode
    from napari_sam.training.evaluate import evaluate_automask, evaluate_prompts

    if geometry == "off":
        pred = Predictor(model_path, diameter="off")
        res = evaluate_prompts(pred, pairs, max_objects=50)
        res.update(evaluate_automask(pairs, pred.model, mode="amg", diameter="off"))
        return res
    pred = Predictor(model_path, diameter=None)
    res = evaluate_prompts(pred, pairs, max_objects=50)
    res.update(evaluate_automask(pairs, pred.model, mode="auto", diameter=None))
    res["mode"] = resolve_mode("auto", pred.model)
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
    rc = cli(["finetune", *map(str, sorted(work.glob("ring_?.tif"))), "--labels", str(work),
              "-o", str(out), "--minutes", str(args.minutes), "--overwrite",
              "--log", str(work / "log.jsonl")])
    wall = time.time() - t0
    if rc:
        raise SystemExit(rc)
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

    from napari_sam.model import build_model
    from napari_sam.training.finetune import FinetuneConfig, _trainable, _Views, step_loss
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
    cfg = FinetuneConfig(views=1, batch=args.batch, objects=args.objects)
    rng = np.random.default_rng(0)
    samples = from_arrays([ring_cells(i, (512, 512)) for i in range(args.images)])
    t = time.time()
    views = _Views(model, samples, rng, cfg, torch.device("cpu"), torch.bfloat16, True,
                   lambda m: print(m, file=sys.stderr))
    embed = (time.time() - t) / len(samples)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    res = {"arch": "vit_b (random weights)", "images": args.images, "batch": args.batch,
           "objects": args.objects, "runs": args.runs, "embed_one_view_s": round(embed, 2)}
    # the two decoder precisions alternate step by step, so both see the same load
    times = {"bf16": [], "fp32": []}
    for i in range(args.runs + 2):
        for name, amp in (("bf16", torch.bfloat16), ("fp32", None)):
            t = time.perf_counter()
            loss = step_loss(model, views, rng, cfg, amp)
            opt.zero_grad()
            loss.backward()
            opt.step()
            if i >= 2:  # the first steps allocate and warm up
                times[name].append(time.perf_counter() - t)
    for name, ts in times.items():
        res[f"step_median_s_{name}"] = round(statistics.median(ts), 3)
    res["fp32_over_bf16"] = round(res["step_median_s_fp32"] / res["step_median_s_bf16"], 2)
    res.update(threads=torch.get_num_threads(), load=load())
    print(json.dumps(res))
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--work", default="", help="folder for the data and the model (default: temp)")
    ap.add_argument("--geometry", default="auto", choices=("auto", "off"),
                    help="held-out scoring: the default scale-aware inference, or no zoom")
    ap.add_argument("--vit-b-step", "--step-time", dest="step_time", action="store_true",
                    help="time decoder-only ViT-B training steps on cached embeddings")
    ap.add_argument("--images", type=int, default=3, help="--vit-b-step: cached 512^2 images")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--objects", type=int, default=4)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--json", default="", help="write the figures here")
    args = ap.parse_args()
    res = step_time(args) if args.step_time else accuracy(args)
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
