"""Image embedding (`set_image`) side by side with the reference, and peak memory.

Timing mode (default): ours (`napari_sam.Predictor.set_image`, at each precision in
--precisions) and Meta's `SamPredictor.set_image` run in this process on the same image
(uint8 RGB, --size square) with the same random weights (ours randomised, its state dict
loaded strictly into the reference). One warm-up each, then the sides take turns for the
timed runs; medians and the ratio reference / ours are printed. The agreement of the
embeddings and of decoded mask logits (a few point and box prompts) is reported for ours at
reduced precision against ours in fp32, and for ours in fp32 against the reference.

Memory mode (--memory): each implementation runs in a fresh subprocess that builds the
model, embeds one image and reports its peak resident set size (`ru_maxrss`).

    .venv/bin/python benchmarks/bench_encoder.py                   # ViT-B, 1024 x 1024
    .venv/bin/python benchmarks/bench_encoder.py --arch vit_h --runs 2
    .venv/bin/python benchmarks/bench_encoder.py --arch vit_h --memory
    .venv/bin/python benchmarks/bench_encoder.py --arch test_vit --size 256 --runs 1  # smoke
"""

from __future__ import annotations

import _common as C  # first: sets up paths and tunes the CPU before torch  # noqa: I001
import argparse
import json
import resource
import subprocess
import sys

import numpy as np
import torch



def prompts(size: int, n: int = 4, seed: int = 1):
    """(row, col) points and (row0, col0, row1, col1) boxes inside a size x size image."""
    rng = np.random.default_rng(seed)
    pts = rng.uniform(0.1, 0.9, (n, 2)) * size
    a = rng.uniform(0.05, 0.5, (n, 2)) * size
    boxes = np.concatenate([a, a + rng.uniform(0.1, 0.4, (n, 2)) * size], 1)
    return pts, boxes


def decode_all(pred, pts, boxes) -> torch.Tensor:
    """Low-res logits of every point and box prompt, stacked."""
    out = []
    for p in pts:
        out.append(torch.as_tensor(pred.predict(points=[p], point_labels=[1])[2]))
    for b in boxes:
        out.append(torch.as_tensor(pred.predict(box=b, multimask=False)[2]))
    return torch.cat(out)


def timing(args) -> dict:
    from testing_utils import randomize_
    from reference_stub import build_reference

    from napari_sam.model import build_model
    from napari_sam.predictor import Predictor

    C.set_threads(args.threads)
    ours = randomize_(build_model(args.arch), seed=args.seed).eval()
    image = C.make_image(args.size, args.seed)
    m = C.machine()
    print(f"encoder benchmark: {args.arch}, image {image.shape}; {C.describe(m)}", flush=True)
    timers, preds = [], {}
    for prec in args.precisions.split(","):
        p = preds[prec] = Predictor(ours, "cpu", prec, diameter="off")
        timers.append(C.Timer(f"ours {prec} ({str(p.dtype).replace('torch.', '')})",
                              lambda p=p: p.set_image(image)))
    ref_pred = None
    if not args.skip_reference:
        from segment_anything import SamPredictor

        ref = build_reference(ours.config)
        ref.load_state_dict(ours.state_dict(), strict=True)
        ref_pred = SamPredictor(ref)
        timers.append(C.Timer("reference", lambda: ref_pred.set_image(image)))
    with torch.inference_mode():
        C.alternate(timers, args.runs, warmup=0 if args.no_warmup else 1,
                    runs_of={"reference": args.ref_runs or args.runs})
    result = {"arch": args.arch, "size": args.size, "machine": m,
              "machine_after": C.machine(), "timings": {}}
    ref_t = timers[-1] if ref_pred is not None else None
    for t in timers:
        s = t.summary()
        line = f"{t.name:28s} median {C.fmt_s(t.median)} (cpu {C.fmt_s(t.median_cpu)}) " \
               f"runs {[round(x, 2) for x in t.wall]}"
        if ref_t is not None and t is not ref_t:
            s["speedup_wall"] = ref_t.median / t.median
            s["speedup_cpu"] = ref_t.median_cpu / t.median_cpu
            line += f"  reference/ours = {s['speedup_wall']:.2f}x wall, " \
                    f"{s['speedup_cpu']:.2f}x cpu"
        result["timings"][t.name] = s
        print(line, flush=True)

    # agreement: reduced precision vs fp32 (ours), ours fp32 vs reference
    fp32 = preds.get("fp32") or Predictor(ours, "cpu", "fp32", diameter="off")
    pts, boxes = prompts(args.size)
    with torch.inference_mode():
        fp32.set_image(image)
        emb32 = fp32.get_embedding().features
        logits32 = decode_all(fp32, pts, boxes)
        agree = {}
        for prec, p in preds.items():
            if p.dtype == torch.float32:
                continue
            p.set_image(image)
            a = C.agreement(p.get_embedding().features, emb32)
            lg = C.agreement(decode_all(p, pts, boxes), logits32)
            agree[f"{prec} vs fp32"] = {"embedding": a, "mask_logits": lg}
            print(f"ours {prec} vs ours fp32: embedding corr {a['corr']:.5f}, max rel diff "
                  f"{a['max_rel_diff']:.3g}; mask logits corr {lg['corr']:.5f}, max rel diff "
                  f"{lg['max_rel_diff']:.3g}, mask IoU {lg['mask_iou']:.4f} "
                  f"({len(pts)} points x 3 masks + {len(boxes)} boxes)")
        if ref_pred is not None:
            ref_pred.set_image(image)
            a = C.agreement(emb32, ref_pred.features)
            agree["ours fp32 vs reference"] = {"embedding": a}
            print(f"ours fp32 vs reference: embedding corr {a['corr']:.7f}, max rel diff "
                  f"{a['max_rel_diff']:.3g}")
    result["agreement"] = agree
    return result


def memory_child(impl: str, args) -> None:
    """One implementation in this (fresh) process: build, embed once, print peak RSS."""

    C.set_threads(args.threads)
    image = C.make_image(args.size, args.seed)
    if impl == "reference":
        from reference_stub import build_reference
        from segment_anything import SamPredictor

        from napari_sam.model import get_config

        pred = SamPredictor(build_reference(get_config(args.arch)))
    else:
        from napari_sam.model import build_model
        from napari_sam.predictor import Predictor

        pred = Predictor(build_model(args.arch), "cpu", impl.split(":", 1)[1], diameter="off")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with torch.inference_mode():
        pred.set_image(image)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"impl": impl, "peak_rss_mb": peak / 1024,
                      "rss_before_embed_mb": before / 1024}))


def memory(args) -> dict:
    m = C.machine()
    print(f"memory benchmark: {args.arch}, image {args.size}^2; {C.describe(m)}", flush=True)
    impls = [f"ours:{p}" for p in args.precisions.split(",")]
    if not args.skip_reference:
        impls.append("reference")
    out = {"arch": args.arch, "size": args.size, "machine": m, "peak_rss_mb": {}}
    for impl in impls:
        cmd = [sys.executable, __file__, "--_memory-child", impl, "--arch", args.arch,
               "--size", str(args.size), "--threads", str(args.threads)]
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode:
            print(res.stderr[-2000:])
            raise SystemExit(f"{impl} failed")
        r = json.loads(res.stdout.strip().splitlines()[-1])
        out["peak_rss_mb"][impl] = r
        print(f"{impl:12s} peak RSS {r['peak_rss_mb'] / 1024:.2f} GB "
              f"(after building the model {r['rss_before_embed_mb'] / 1024:.2f} GB)", flush=True)
    if "reference" in out["peak_rss_mb"]:
        ref = out["peak_rss_mb"]["reference"]["peak_rss_mb"]
        for impl in impls[:-1]:
            r = out["peak_rss_mb"][impl]["peak_rss_mb"]
            print(f"{impl}: {r / ref:.2f} x the reference's peak")
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--arch", default="vit_b")
    ap.add_argument("--size", type=int, default=1024, help="image side (pixels)")
    ap.add_argument("--runs", type=int, default=3, help="timed runs per side (median)")
    ap.add_argument("--ref-runs", type=int, default=0, help="timed runs of the reference "
                    "(default: --runs)")
    ap.add_argument("--no-warmup", action="store_true")
    ap.add_argument("--precisions", default="auto,fp32", help="ours, comma-separated")
    ap.add_argument("--threads", type=int, default=0,
                    help="0: tune_cpu()'s count (all CPUs), or torch's if untuned")
    ap.add_argument("--memory", action="store_true", help="peak RSS per implementation")
    ap.add_argument("--skip-reference", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--save", default="", help="results name under benchmarks/results/")
    ap.add_argument("--_memory-child", dest="memory_child", default="", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    from reference_stub import install

    install()
    if args.memory_child:
        memory_child(args.memory_child, args)
        return 0
    result = memory(args) if args.memory else timing(args)
    name = args.save or f"encoder_{args.arch}" + ("_memory" if args.memory else "")
    print(f"saved {C.save(name, result)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
