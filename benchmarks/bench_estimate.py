"""Diameter estimate against the truth, on generated nuclei and touching cells.

For each kind, diameter and seed: the true median diameter of `scaled_sample`'s labels, the
estimate (`scale.estimate_diameter`), their ratio, the confidence and polarity; then per
kind the median and largest |ratio - 1| and how many images are off by more than 20 %.
With `--model NAME`, also the diameter the default path uses with that model (the estimate
checked by its instance decoder, `size_probe.refine_diameter`) and the seconds it takes.
Seeds default to 3000-3002 (apart from training 0-3, the object-size benchmark's 1000+ and
the held-out 10,000,019+). Image side: about 12 diameters, 256 to 2,048 px.

    python benchmarks/bench_estimate.py --seeds 3000,3001,3002
    python benchmarks/bench_estimate.py --model bundled --seeds 7002,7003,7004,7005
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from napari_sam.scale import estimate_diameter, resolve_diameter  # noqa: E402
from napari_sam.training.multiscale import median_diameter, scaled_sample  # noqa: E402


def image_side(diameter: float) -> int:
    """Image side for objects of `diameter` px: about 12 diameters, 256 to 2,048 px."""
    return int(np.clip(2 ** np.ceil(np.log2(12 * diameter)), 256, 2048))


def ratios(kinds, diameters, seeds, verbose: bool = True, model=None) -> dict:
    """{(kind, diameter, seed): estimated / true median diameter}; with a model, also
    {("model", kind, diameter, seed): model-checked / true} and {("s", ...): seconds}."""
    out = {}
    for kind in kinds:
        for d in diameters:
            side = image_side(d)
            for seed in seeds:
                image, labels = scaled_sample(kind, d, (side, side), seed)
                true, est = median_diameter(labels), estimate_diameter(image)
                out[(kind, d, seed)] = est.diameter / true
                extra = ""
                if model is not None:
                    t0 = time.perf_counter()
                    checked = resolve_diameter(image, None, None, model)
                    out[("s", kind, d, seed)] = time.perf_counter() - t0
                    out[("model", kind, d, seed)] = (checked or float("nan")) / true
                    extra = (f" checked={checked or float('nan'):6.1f} ratio="
                             f"{(checked or float('nan')) / true:5.2f}")
                if verbose:
                    print(f"{kind:6s} d={d:5g} side={side:4d} seed={seed} true={true:6.1f} "
                          f"est={est.diameter:6.1f} ratio={est.diameter / true:5.2f} "
                          f"conf={est.confidence:.2f} pol={est.polarity:+d}{extra}",
                          flush=True)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kinds", default="nuclei,cells")
    ap.add_argument("--diameters", default="8,12,16,24,32,48,64,100,150")
    ap.add_argument("--seeds", default="3000,3001,3002")
    ap.add_argument("--model", default="", help="also the diameter checked by this model")
    a = ap.parse_args(argv)
    kinds = a.kinds.split(",")
    model = None
    if a.model:
        from napari_sam.model import load_model

        model = load_model(a.model)
    r = ratios(kinds, [float(v) for v in a.diameters.split(",")],
               [int(v) for v in a.seeds.split(",")], model=model)
    for kind in kinds:
        for what, pre in (("pixel estimate", ()), ("model-checked", ("model",))):
            err = np.array([abs(v - 1) for k, v in r.items() if k[:-3] == pre
                            and k[-3] == kind])
            if len(err) == 0:
                continue
            print(f"{kind} {what}: median |ratio - 1| {np.median(err):.3f}, largest "
                  f"{err.max():.3f}, off by > 20 %: {(err > 0.2).sum()} / {len(err)}")
        if model is not None:
            s = [v for k, v in r.items() if k[0] == "s" and k[1] == kind]
            print(f"{kind}: model-checked diameter in {np.median(s):.2f} s median, "
                  f"{max(s):.2f} s at most")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
