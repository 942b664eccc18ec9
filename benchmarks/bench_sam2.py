"""SAM 2.1 side by side with Meta's `sam2` 1.1.0: image embedding and per-frame
propagation through a stack.

Both sides get the same random weights (the reference's, randomised with
`tests/testing_utils.randomize_`, loaded strictly into ours) and the same inputs, run in this
process, one warm-up each, then take turns for the timed runs; medians and the ratio
reference / ours are printed and saved to `benchmarks/results/sam2.json`.

- embedding: `Predictor.set_image` (ours at each of --precisions) against
  `SAM2ImagePredictor.set_image`, a --size x --size uint8 RGB image;
- propagation: one object clicked on frame 0 of a --frames clip, then `propagate()` over
  the clip; time per propagated frame (embedding of the frame, memory attention, decoder,
  memory encoder) against `SAM2VideoPredictor.propagate_in_video`. The reference is given
  the same preprocessed frames (its JPEG loader is bypassed). The memory attention's cost
  grows with the memory bank until it is full (the prompted frame + 6 recent ones, from
  the 8th frame on): the default 10 frames average over 3 frames with a full bank and 6
  filling it.

Both wall and process CPU time are reported with their ratios; on a machine shared with
other work the CPU-time ratio is the steadier one.

    .venv/bin/python benchmarks/bench_sam2.py                       # Hiera-T, 1024, 10 frames
    .venv/bin/python benchmarks/bench_sam2.py --size tiny --image 512 --runs 2
"""

from __future__ import annotations

import _common as C  # first: sets up paths and imports napari_sam before torch  # noqa: I001
import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def clip(n: int, size: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    frames = rng.integers(40, 120, (n, size, size, 3), dtype=np.uint8)
    s = size // 8
    for t in range(n):
        frames[t, 2 * s:4 * s, s + t * s // 4:3 * s + t * s // 4] = 230
    return frames


def embedding(args, ref, ours) -> dict:
    from sam2_reference import image_predictor

    from napari_sam.predictor import Predictor

    image = C.make_image(args.image, args.seed)
    timers, preds = [], {}
    for prec in args.precisions.split(","):
        p = preds[prec] = Predictor(ours, "cpu", prec, diameter="off")
        timers.append(C.Timer(f"ours {prec} ({str(p.dtype).replace('torch.', '')})",
                              lambda p=p: p.set_image(image)))
    rp = image_predictor(ref)
    timers.append(C.Timer("reference", lambda: rp.set_image(image)))
    with torch.inference_mode():
        C.alternate(timers, args.runs)
    return report("set_image", timers)


def propagation(args, ref, ours) -> dict:
    from napari_sam.transforms import to_model_pixels
    from napari_sam.video_predictor import VideoPredictor

    frames = clip(args.frames, args.image, args.seed)
    tmp = Path(tempfile.mkdtemp())
    from PIL import Image

    for t, f in enumerate(frames):
        Image.fromarray(f).save(tmp / f"{t:05d}.jpg")
    images = torch.cat([ours.preprocess(ours.to_input(to_model_pixels(f))) for f in frames])
    point = [args.image * 3 // 8, args.image * 3 // 8]  # (row, col) in the square

    def ours_run(prec):
        vp = VideoPredictor(ours, frames, device="cpu", precision=prec)
        vp.add_prompt(0, 1, points=[point])
        t0, c0 = time.perf_counter(), time.process_time()
        n = sum(1 for _ in vp.propagate())
        return ((time.perf_counter() - t0) / max(1, n - 1),
                (time.process_time() - c0) / max(1, n - 1))

    def ref_run():
        with torch.inference_mode():
            state = ref.init_state(str(tmp))
            state["images"] = images
            state["cached_features"] = {}
            ref.add_new_points_or_box(state, 0, 1, points=[point[::-1]], labels=[1])
            t0, c0 = time.perf_counter(), time.process_time()
            n = sum(1 for _ in ref.propagate_in_video(state))
            return ((time.perf_counter() - t0) / max(1, n - 1),
                    (time.process_time() - c0) / max(1, n - 1))

    per_frame = {}

    def recorded(name, fn):
        def run():
            v = fn()
            per_frame.setdefault(name, []).append(v)
            return v
        return run

    names = [f"ours {p}" for p in args.precisions.split(",")]
    timers = [C.Timer(n, recorded(n, lambda p=p: ours_run(p)))
              for n, p in zip(names, args.precisions.split(","))]
    timers.append(C.Timer("reference", recorded("reference", ref_run)))
    with torch.inference_mode():
        C.alternate(timers, args.runs)
    # per propagated frame (excluding the prompted first frame), timed runs only
    for t in timers:
        runs = per_frame[t.name][-len(t.wall):]
        t.wall, t.cpu = [w for w, _ in runs], [c for _, c in runs]
    return report("propagate, per frame", timers)


def report(what: str, timers) -> dict:
    ref_t = timers[-1]
    out = {}
    for t in timers:
        s = t.summary()
        line = (f"{what}: {t.name:24s} median {C.fmt_s(t.median)} (CPU {C.fmt_s(t.median_cpu)})"
                f" runs {[round(x, 2) for x in t.wall]}")
        if t is not ref_t:
            s["speedup_wall"] = ref_t.median / t.median
            s["speedup_cpu"] = ref_t.median_cpu / t.median_cpu
            line += (f"  reference/ours = {s['speedup_wall']:.2f}x wall, "
                     f"{s['speedup_cpu']:.2f}x CPU time")
        out[t.name] = s
        print(line, flush=True)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="tiny", choices=["tiny", "small", "base_plus", "large"])
    ap.add_argument("--image", type=int, default=1024, help="model input side (1024 published)")
    ap.add_argument("--frames", type=int, default=10)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--precisions", default="auto,fp32")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip", default="", help="comma list: embedding, propagation")
    args = ap.parse_args(argv)

    from sam2_reference import build_reference, ours_from

    from napari_sam.device import configure_threads

    configure_threads(args.threads or None)
    ref = build_reference(args.size, args.image, video=True, seed=args.seed)
    ours = ours_from(ref)
    m = C.machine()
    print(f"sam2 benchmark: {args.size} at {args.image}; {C.describe(m)}", flush=True)
    result = {"size": args.size, "image": args.image, "frames": args.frames, "machine": m}
    if "embedding" not in args.skip:
        result["set_image"] = embedding(args, ref, ours)
    if "propagation" not in args.skip:
        result["propagate"] = propagation(args, ref, ours)
    result["machine_after"] = C.machine()
    C.save("sam2", result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
