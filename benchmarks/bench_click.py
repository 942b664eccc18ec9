"""One click to a full-resolution mask, after the image is embedded, side by side with the
reference.

ViT-B with random weights (ours randomised, the state dict loaded strictly into Meta's
model), a 1024 x 1024 uint8 RGB image embedded once per side (not timed), then for each of
--points click positions: ours `Predictor.predict(points=[[row, col]], point_labels=[1])`
and the reference `SamPredictor.predict(point_coords=[[x, y]], point_labels=[1])`, both with
three masks (multimask) returned as numpy bool arrays at full resolution. Warm-up, then the
sides take turns; the median over all clicks and runs is reported with the ratio
reference / ours, and how far ours' masks agree with the reference's.

    .venv/bin/python benchmarks/bench_click.py
    .venv/bin/python benchmarks/bench_click.py --arch test_vit --size 256 --runs 3   # smoke
"""

from __future__ import annotations

import _common as C  # first: sets up paths and tunes the CPU before torch  # noqa: I001
import argparse
import statistics
import sys
import time

import numpy as np
import torch



def precision_label(pred) -> str:
    """"bfloat16", or "bfloat16, decoder float32" where the decoder runs in another dtype."""
    enc, dec = (str(d).replace("torch.", "") for d in (pred.dtype, pred.decoder_dtype))
    return enc if dec == enc else f"{enc}, decoder {dec}"

def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--arch", default="vit_b")
    ap.add_argument("--size", type=int, default=1024, help="image side (pixels)")
    ap.add_argument("--points", type=int, default=5, help="click positions")
    ap.add_argument("--runs", type=int, default=10, help="timed clicks per position and side")
    ap.add_argument("--precisions", default="auto,fp32", help="ours, comma-separated")
    ap.add_argument("--threads", type=int, default=0,
                    help="0: tune_cpu()'s count (all CPUs), or torch's if untuned")
    ap.add_argument("--skip-reference", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--save", default="")
    args = ap.parse_args(argv)

    from testing_utils import randomize_
    from reference_stub import build_reference, install

    install()
    from napari_sam.model import build_model
    from napari_sam.predictor import Predictor

    C.set_threads(args.threads)
    ours = randomize_(build_model(args.arch), seed=args.seed).eval()
    image = C.make_image(args.size, args.seed)
    m = C.machine()
    print(f"click benchmark: {args.arch}, image {image.shape}, {args.points} positions x "
          f"{args.runs} runs; {C.describe(m)}", flush=True)
    rng = np.random.default_rng(args.seed + 7)
    points = rng.uniform(0.15, 0.85, (args.points, 2)) * args.size  # (row, col)

    sides = {}
    with torch.inference_mode():
        for prec in args.precisions.split(","):
            p = Predictor(ours, "cpu", prec, diameter="off")
            p.set_image(image)
            sides[f"ours {prec} ({precision_label(p)})"] = (
                lambda pt, p=p: p.predict(points=[pt], point_labels=[1])[0])
        if not args.skip_reference:
            from segment_anything import SamPredictor

            ref = build_reference(ours.config)
            ref.load_state_dict(ours.state_dict(), strict=True)
            rp = SamPredictor(ref)
            rp.set_image(image)
            sides["reference"] = lambda pt: rp.predict(
                point_coords=np.array([[pt[1], pt[0]]]), point_labels=np.array([1]),
                multimask_output=True)[0]

        wall = {k: [] for k in sides}
        cpu = {k: [] for k in sides}
        masks = {}
        for k, fn in sides.items():  # warm-up, and the masks for the agreement check
            masks[k] = [fn(pt) for pt in points]
        for _ in range(args.runs):
            for pt in points:
                for k, fn in sides.items():
                    c0, t0 = time.process_time(), time.perf_counter()
                    fn(pt)
                    wall[k].append(time.perf_counter() - t0)
                    cpu[k].append(time.process_time() - c0)

    result = {"arch": args.arch, "size": args.size, "machine": m,
              "machine_after": C.machine(), "timings": {}, "agreement": {}}
    ref_med = statistics.median(wall["reference"]) if "reference" in wall else None
    ref_cpu = statistics.median(cpu["reference"]) if "reference" in cpu else None
    for k in sides:
        med, mc = statistics.median(wall[k]), statistics.median(cpu[k])
        s = {"median_s": med, "median_cpu_s": mc, "p90_s": float(np.percentile(wall[k], 90)),
             "n": len(wall[k])}
        line = f"{k:24s} median {C.fmt_s(med)} (cpu {C.fmt_s(mc)}, p90 {C.fmt_s(s['p90_s'])})"
        if ref_med is not None and k != "reference":
            s["speedup_wall"], s["speedup_cpu"] = ref_med / med, ref_cpu / mc
            line += f"  reference/ours = {ref_med / med:.2f}x wall, {ref_cpu / mc:.2f}x cpu"
        result["timings"][k] = s
        print(line)
    if "reference" in masks:
        for k in sides:
            if k == "reference":
                continue
            ious, areas = [], []
            for a, b in zip(masks[k], masks["reference"]):
                for i in range(a.shape[0]):
                    u = np.logical_or(a[i], b[i]).sum()
                    ious.append(np.logical_and(a[i], b[i]).sum() / u if u else 1.0)
                    areas.append(b[i].mean())
            result["agreement"][k] = {"min_iou": float(min(ious)), "mean_iou": float(np.mean(ious)),
                                      "mean_area_fraction": float(np.mean(areas))}
            print(f"{k} vs reference masks: mean IoU {np.mean(ious):.5f}, min {min(ious):.5f} "
                  f"({len(ious)} masks, mean area {np.mean(areas):.1%} of the image)")
    print(f"saved {C.save(args.save or f'click_{args.arch}', result)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
