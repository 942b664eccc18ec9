"""Object size: fixed resize (SAM's rule, `diameter="off"`) against scale-aware defaults.

Generated nuclei and cells (`training.multiscale.scaled_sample`) with median diameters from
a few to 150 pixels, on images sized so each holds enough objects (256 to 4,096 px). Per
diameter bin: 1-click and box mean IoU (the evaluation's fixed prompt rules), automask
F1@0.5 / 0.75, and seconds per image, for both paths, in one run on the same images.

    python benchmarks/bench_object_size.py --model bundled --images 2 \
        --diameters 8,16,32,64,128 --json benchmarks/results/object_size.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from napari_sam import AutoSegmenter, Predictor, load_model  # noqa: E402
from napari_sam.training.evaluate import match_f1, prompt_ious  # noqa: E402
from napari_sam.training.multiscale import scaled_sample  # noqa: E402


def image_side(diameter: float) -> int:
    """Image side for objects of `diameter` px: about 12 diameters, 256 to 4,096 px."""
    return int(np.clip(2 ** np.ceil(np.log2(12 * diameter)), 256, 4096))


# image seeds of this benchmark: apart from those the size sweep (`training.size_sweep`, which
# chose the bundled model's preferred diameter) used, 0 .. images - 1
BENCH_SEED = 1000


def measure(model, diameter: float, kind: str, seed: int, mode: str) -> dict:
    side = image_side(diameter)
    image, labels = scaled_sample(kind, diameter, (side, side), BENCH_SEED + seed)
    setting = "off" if mode == "fixed" else None
    t0 = time.perf_counter()
    pred = Predictor(model, diameter=setting)
    click, box = prompt_ious(pred, image, labels, max_objects=12)
    t1 = time.perf_counter()
    seg = AutoSegmenter(pred, diameter=setting)
    f1 = match_f1(seg(image).labels, labels)
    t2 = time.perf_counter()
    return {"diameter": diameter, "kind": kind, "side": side, "mode": mode,
            "click": float(np.mean(click)) if click else float("nan"),
            "box": float(np.mean(box)) if box else float("nan"),
            "f1@0.5": f1["f1@0.5"], "f1@0.75": f1["f1@0.75"],
            "prompt_s": t1 - t0, "automask_s": t2 - t1}


def heldout_nuclei(model, n: int, side: int = 512) -> list:
    """The default path against SAM's fixed resize on `n` held-out fluorescence nuclei
    fields (`synthetic.nuclei_image`, seeds 10_000_019 + i: apart from training,
    calibration and the size sweep), like the plugin's sample image."""
    from napari_sam.training.synthetic import nuclei_image

    rows = []
    for i in range(n):
        image, labels = nuclei_image(10_000_019 + i, (side, side))
        for mode in ("fixed", "scale-aware"):
            r = {"image": i, "mode": mode}
            setting = "off" if mode == "fixed" else None
            t0 = time.perf_counter()
            pred = Predictor(model, diameter=setting)
            click, box = prompt_ious(pred, image, labels, max_objects=20)
            t1 = time.perf_counter()
            f1 = match_f1(AutoSegmenter(pred, diameter=setting)(image).labels, labels)
            r.update(click=float(np.mean(click)), box=float(np.mean(box)),
                     **{k: f1[k] for k in ("f1@0.5", "f1@0.75")},
                     prompt_s=t1 - t0, automask_s=time.perf_counter() - t1)
            print(json.dumps(r), flush=True)
            rows.append(r)
    return rows


def rescaled(model, diameters, images: int) -> list:
    """The default path (`AutoSegmenter(model)`, diameter estimated) on nuclei fields of each
    diameter and on the same fields resized x0.5 and x2 (image bilinear, labels nearest)."""
    from scipy import ndimage as ndi

    seg, rows = AutoSegmenter(model), []
    for d in diameters:
        side = image_side(d)
        for seed in range(images):
            image, labels = scaled_sample("nuclei", d, (side, side), BENCH_SEED + seed)
            for factor in (0.5, 1.0, 2.0):
                im = ndi.zoom(image.astype(np.float32), factor, order=1).astype(image.dtype)
                lab = ndi.zoom(labels, factor, order=0)
                t0 = time.perf_counter()
                f1 = match_f1(seg(im).labels, lab)
                r = {"diameter": d, "seed": seed, "factor": factor, "side": im.shape[0],
                     "estimated": seg.last_plan.diameter, "f1@0.5": f1["f1@0.5"],
                     "f1@0.75": f1["f1@0.75"], "seconds": time.perf_counter() - t0}
                print(json.dumps(r), flush=True)
                rows.append(r)
    return rows


def rescale_table(rows) -> str:
    out = ["| diameter px (x1) | F1@0.5 at x0.5 / x1 / x2 | F1@0.75 at x0.5 / x1 / x2 | "
           "largest F1@0.5 spread |", "|---|---|---|---|"]
    for d in sorted({r["diameter"] for r in rows}):
        f = {k: [np.mean([r[k] for r in rows if r["diameter"] == d and r["factor"] == x])
                 for x in (0.5, 1.0, 2.0)] for k in ("f1@0.5", "f1@0.75")}
        out.append(f"| {d:g} | {' / '.join(f'{v:.3f}' for v in f['f1@0.5'])} | "
                   f"{' / '.join(f'{v:.3f}' for v in f['f1@0.75'])} | "
                   f"{max(f['f1@0.5']) - min(f['f1@0.5']):.3f} |")
    return "\n".join(out)


def table(rows) -> str:
    out = ["| diameter px | image px | path | click mIoU | box mIoU | F1@0.5 | F1@0.75 | "
           "automask s/image |", "|---|---|---|---|---|---|---|---|"]
    keys = sorted({(r["diameter"], r["mode"]) for r in rows})
    for d, mode in keys:
        sel = [r for r in rows if r["diameter"] == d and r["mode"] == mode]
        m = {k: np.nanmean([r[k] for r in sel]) for k in
             ("click", "box", "f1@0.5", "f1@0.75", "automask_s")}
        out.append(f"| {d:g} | {sel[0]['side']} | {mode} | {m['click']:.3f} | {m['box']:.3f} "
                   f"| {m['f1@0.5']:.3f} | {m['f1@0.75']:.3f} | {m['automask_s']:.1f} |")
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="bundled")
    ap.add_argument("--images", type=int, default=2, help="images per kind and diameter")
    ap.add_argument("--diameters", default="8,16,32,64,150")
    ap.add_argument("--kinds", default="nuclei,cells")
    ap.add_argument("--json", default=None)
    ap.add_argument("--heldout-nuclei", type=int, default=0, metavar="N",
                    help="instead: the default path on N held-out 512^2 nuclei fields")
    ap.add_argument("--rescale", default="", metavar="D,D,...",
                    help="instead: the default path on nuclei of these diameters and on the "
                    "same images resized x0.5 and x2 (F1 should not depend on the zoom)")
    a = ap.parse_args(argv)
    import napari_sam

    if hasattr(napari_sam, "tune_cpu"):  # opt-in CPU settings, as the CLI uses
        napari_sam.tune_cpu()
    model = load_model(a.model)
    if a.heldout_nuclei:
        rows = heldout_nuclei(model, a.heldout_nuclei)
        for mode in ("fixed", "scale-aware"):
            sel = [r for r in rows if r["mode"] == mode]
            print(mode, {k: round(float(np.mean([r[k] for r in sel])), 3) for k in
                         ("click", "box", "f1@0.5", "f1@0.75", "automask_s")})
        return 0
    if a.rescale:
        rows = rescaled(model, [float(v) for v in a.rescale.split(",")], a.images)
        print(rescale_table(rows))
        if a.json:
            Path(a.json).write_text(json.dumps(rows, indent=1))
        return 0
    rows = []
    for d in [float(v) for v in a.diameters.split(",")]:
        for kind in a.kinds.split(","):
            for seed in range(a.images):
                for mode in ("fixed", "scale-aware"):
                    r = measure(model, d, kind, seed, mode)
                    print(json.dumps(r), flush=True)
                    rows.append(r)
    print(table(rows))
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
