"""Automatic mask generation, end to end: Meta's `SamAutomaticMaskGenerator` vs `automask`.

Both run in this process on the same random-weight model (ours built with `build_model`,
randomised, and its state dict loaded strictly into the reference), the same 512 x 512
uint8 RGB image and the same settings (points_per_side=16, 64 points per batch, the
reference's default thresholds: predicted IoU 0.88, stability 0.95, box NMS 0.7). Each
side gets one warm-up run, then the median of N timed runs is reported (the reference
takes about a minute per run for ViT-B on a small CPU, so `--ref-runs 1` is the default:
a single timed run). The figure of merit is the ratio reference / ours.

    .venv/bin/python benchmarks/bench_automask.py                      # ViT-B, minutes
    .venv/bin/python benchmarks/bench_automask.py --arch test_vit --size 128 --runs 1  # smoke

"ours" runs once per --variants entry PRECISION:STABILITY: "auto" = bf16 where the CPU has
native bf16, else fp32; stability "lowres" is our default cheap path, "full" computes the
stability score on full-resolution masks as the reference does, so "fp32:full" is the
like-for-like figure. With random weights the masks
themselves mean nothing; their counts are printed only as a sanity check.

Both sides run under the same process settings: after `napari_sam.tune_cpu()` (the default,
as the command line runs) or, with NAPARI_SAM_TUNE_CPU=0, in an untouched process (as a
library user's or the napari plugin's by default). `run_all.py` runs both.
"""

from __future__ import annotations

import _common as C  # first: sets up paths and tunes the CPU before torch  # noqa: I001
import argparse
import statistics
import sys
import time

import numpy as np
import torch


def test_image(size: int, seed: int = 0) -> np.ndarray:
    """uint8 RGB synthetic nuclei: the model sees identical pixels on both sides."""
    from napari_sam.training.synthetic import nuclei_image

    image, _ = nuclei_image(seed, (size, size), dtype="uint8")
    return np.repeat(image[..., None], 3, axis=-1)


def timed(fn, runs: int, warmup: int = 1):
    for _ in range(warmup):
        fn()
    times, out = [], None
    for _ in range(runs):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times, out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--arch", default="vit_b", help="our registry architecture (ViT only)")
    ap.add_argument("--size", type=int, default=512, help="image side in pixels")
    ap.add_argument("--points-per-side", type=int, default=16)
    ap.add_argument("--points-per-batch", type=int, default=64)
    ap.add_argument("--runs", type=int, default=3, help="timed runs of ours (median)")
    ap.add_argument("--ref-runs", type=int, default=1, help="timed runs of the reference")
    ap.add_argument("--no-warmup", action="store_true", help="skip the warm-up runs")
    ap.add_argument("--variants", default="auto:lowres,fp32:full",
                    help="ours, comma-separated PRECISION:STABILITY pairs (lowres = the "
                         "default cheap path; fp32:full = like for like with the reference)")
    ap.add_argument("--threads", type=int, default=0,
                    help="0: tune_cpu()'s count (all CPUs), or torch's if untuned")
    ap.add_argument("--pred-iou-thresh", type=float, default=0.88, help="both sides")
    ap.add_argument("--stability-thresh", type=float, default=0.95, help="both sides")
    ap.add_argument("--skip-reference", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    C.set_threads(args.threads)

    from conftest import randomize_
    from reference_stub import build_reference, install

    install()  # the torchvision stand-in, before segment_anything is imported

    from napari_sam import AutoMaskGenerator, build_model
    from napari_sam.device import resolve_precision

    ours = randomize_(build_model(args.arch), seed=args.seed).eval()
    image = test_image(args.size, args.seed)
    warm = 0 if args.no_warmup else 1
    print(f"automask benchmark: {args.arch}, image {image.shape}, points_per_side "
          f"{args.points_per_side}, batch {args.points_per_batch}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; cpu tuning (both sides): {C.cpu_tuning()}")

    ref_t = None
    if not args.skip_reference:
        from segment_anything import SamAutomaticMaskGenerator

        ref = build_reference(ours.config)
        ref.load_state_dict(ours.state_dict(), strict=True)
        ref_gen = SamAutomaticMaskGenerator(ref, points_per_side=args.points_per_side,
                                            points_per_batch=args.points_per_batch,
                                            pred_iou_thresh=args.pred_iou_thresh,
                                            stability_score_thresh=args.stability_thresh)
        with torch.inference_mode():
            ref_t, ref_all, ref_out = timed(lambda: ref_gen.generate(image), args.ref_runs, warm)
        print(f"reference SamAutomaticMaskGenerator: median {ref_t:.2f} s over {args.ref_runs} "
              f"run(s) {['%.2f' % t for t in ref_all]}; {len(ref_out)} masks")

    for variant in [v.strip() for v in args.variants.split(",") if v.strip()]:
        prec, _, stab = variant.partition(":")
        dtype = resolve_precision(prec, torch.device("cpu"))
        gen = AutoMaskGenerator(ours, points_per_side=args.points_per_side,
                                points_per_batch=args.points_per_batch, device="cpu",
                                precision=prec, min_candidate_iou=args.pred_iou_thresh,
                                min_candidate_stability=args.stability_thresh,
                                stability=stab or "lowres")
        marks = []

        def run():
            marks.clear()
            t0 = time.perf_counter()
            gen.initialize(image, lambda d, t, m="": marks.append(time.perf_counter() - t0))
            t1 = time.perf_counter()
            res = gen.generate(args.pred_iou_thresh, args.stability_thresh, nms_thresh=0.7)
            return res, marks[1] if len(marks) > 1 else 0.0, t1 - t0, time.perf_counter() - t1

        t, all_t, (res, t_embed, t_init, t_gen) = timed(run, args.runs, warm)
        line = (f"ours automask ({prec} -> {str(dtype).replace('torch.', '')}, stability "
                f"{stab or 'lowres'}): median {t:.2f} s "
                f"over {args.runs} run(s) [embed {t_embed:.2f} s, decode "
                f"{t_init - t_embed:.2f} s, generate {t_gen:.3f} s]; {len(res.records)} objects "
                f"from {len(gen.candidates)} candidates")
        if ref_t is not None:
            line += f"; speed-up reference/ours = {ref_t / t:.2f}x"
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
