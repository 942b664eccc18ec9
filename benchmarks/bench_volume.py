"""Volumes and time-lapses: accuracy of the bundled model on generated data, and propagation
speed against micro-sam's `segment_mask_in_volume` on the same random ViT-B.

    .venv/bin/python benchmarks/bench_volume.py                 # everything
    .venv/bin/python benchmarks/bench_volume.py --parts click,microsam

Parts (results in benchmarks/results/volume.json):

- click: one click on the largest cross-section of each generated nucleus
  (`training.synthetic3d.nuclei_volume`, seeds 100.., not those the stop rules were tuned on:
  0-2, nor those the intensity floor was chosen on: 200-202) -> `segment_volume` with its
  defaults (object size estimated on the middle slice, intensity floor 0.3; `--floor 0`
  gives the figure without the floor) -> mean 3D IoU with the truth; ms per slice of
  propagation after the volume is embedded (decode, masks, stop rules, floor).
- auto: `automask_volume` F1@0.5 / F1@0.75 with one-to-one 3D matching.
- track: `track` on generated time-lapses: division recall (a true division counts when the
  result has a division at the same frame whose mother and two daughters overlap the true
  ones most) and identity switches on isolated cells (cells that never come within 6 px of
  another and never divide: extra ids over their frames).
- microsam: the same random ViT-B (ours randomised, its state dict loaded strictly into
  Meta's `segment_anything` model) and the same per-slice embeddings (ours, handed to
  micro-sam in its precomputed-embeddings format) of a (6, 512, 512) volume, box prompts
  from the neighbour's mask, no stopping rule on either side (random weights); the sides
  take turns; the figure is the median wall time of a run divided by the slices it decoded
  (each side's decoder calls are counted), and the ratio micro-sam / ours. Ours runs at its
  default precision (the decoder in bf16 on CPUs with AMX / AVX-512 bf16), micro-sam in
  fp32 (the only precision it has on CPU).
"""

from __future__ import annotations

import argparse
import sys
import time
import types

import numpy as np

from _common import Timer, alternate, describe, machine, save  # noqa: I001

import torch  # noqa: E402

from napari_sam import Predictor, build_model, load_model  # noqa: E402
from napari_sam.training.evaluate import match_f1  # noqa: E402
from napari_sam.training.synthetic3d import nuclei_volume, timelapse  # noqa: E402
from napari_sam.volume import (SliceEmbeddings, StopRules, automask_volume,  # noqa: E402
                               segment_volume, track)
from napari_sam.volume.propagate import interior_points  # noqa: E402


def part_click(pred, seeds, floor=0.3) -> dict:
    ious, slices, seconds, zooms = [], 0, 0.0, []
    for seed in seeds:
        v = nuclei_volume(seed)
        emb = SliceEmbeddings(pred, v.image)  # object size estimated on the middle slice
        zooms.append(emb.zoom)
        for k in range(len(emb)):
            emb.embedding(k)
        loads = [0]
        load = emb.load

        def counted(k, _load=load):
            loads[0] += 1
            return _load(k)
        emb.load = counted
        for i in range(1, int(v.labels.max()) + 1):
            gt = v.labels == i
            z = int(np.argmax(gt.sum((1, 2))))
            t0 = time.perf_counter()
            m = segment_volume(v.image, embeddings=emb, z=z, points=interior_points(gt[z]),
                               spacing=v.spacing, floor=floor)
            seconds += time.perf_counter() - t0
            ious.append(float((m & gt).sum() / (m | gt).sum()))
        slices += loads[0]
    return {"volumes": len(seeds), "nuclei": len(ious), "floor": floor,
            "zoom_per_volume": zooms, "mean_3d_iou": float(np.mean(ious)),
            "median_3d_iou": float(np.median(ious)), "ms_per_slice": 1e3 * seconds / slices,
            "slices_decoded": slices}


def part_auto(pred, seeds, points_per_side) -> dict:
    f5, f75 = [], []
    for seed in seeds:
        v = nuclei_volume(seed)
        labels = automask_volume(v.image, pred, spacing=v.spacing,
                                 points_per_side=points_per_side)
        m = match_f1(labels, v.labels)
        f5.append(m["f1@0.5"])
        f75.append(m["f1@0.75"])
    return {"volumes": len(seeds), "points_per_side": points_per_side,
            "f1@0.5": float(np.mean(f5)), "f1@0.75": float(np.mean(f75)), "per_volume": f5}


def _major(res_frame, truth_frame, i):
    ids = res_frame[(truth_frame == i) & (res_frame > 0)]
    return int(np.bincount(ids).argmax()) if len(ids) else 0


def part_track(pred, seeds, points_per_side, shape) -> dict:
    from scipy import ndimage as ndi

    found = total = switches = isolated = 0
    for seed in seeds:
        tl = timelapse(seed, shape=shape)
        res = track(tl.image, pred, points_per_side=points_per_side)
        divs = {(t, p): set(kids) for t, p, kids in res.divisions}
        for t, p, a, b in tl.divisions:
            total += 1
            mother = _major(res.labels[t - 1], tl.labels[t - 1], p)
            kids = {_major(res.labels[t], tl.labels[t], a), _major(res.labels[t], tl.labels[t], b)}
            found += divs.get((t, mother)) == kids
        for i, (a, b, parent) in tl.lineage.items():
            if parent or any(p == i for _, _, p in tl.lineage.values()):
                continue  # dividing or born from a division
            near = False
            for t in range(a, b + 1):
                grown = ndi.binary_dilation(tl.labels[t] == i, iterations=6)
                near |= bool(((tl.labels[t] > 0) & (tl.labels[t] != i) & grown).any())
            if near:
                continue
            isolated += 1
            ids = {_major(res.labels[t], tl.labels[t], i) for t in range(a, b + 1)}
            switches += len(ids - {0}) - 1 if ids - {0} else 0
    return {"movies": len(seeds), "divisions": total, "found": found,
            "division_recall": found / total if total else 1.0,
            "isolated_cells": isolated, "identity_switches": switches}


def _micro_sam():
    """micro-sam's volume function through the test stand-ins (torchvision, and matplotlib
    / scikit-learn names that are imported but unused on this path)."""
    import reference_stub

    if hasattr(reference_stub, "install_micro_sam"):
        reference_stub.install_micro_sam()
    else:
        reference_stub.install()
        tv = sys.modules["torchvision"]
        tv.utils = types.ModuleType("torchvision.utils")
        tv.utils.make_grid = None
        sys.modules["torchvision.utils"] = tv.utils
        try:
            import matplotlib.colors  # noqa: F401
        except ImportError:
            mpl = types.ModuleType("matplotlib")
            mpl.colors = types.ModuleType("matplotlib.colors")
            mpl.colors.ListedColormap = object
            sys.modules.update({"matplotlib": mpl, "matplotlib.colors": mpl.colors})
    from micro_sam.multi_dimensional_segmentation import segment_mask_in_volume
    from segment_anything import sam_model_registry
    from segment_anything.predictor import SamPredictor

    return segment_mask_in_volume, sam_model_registry, SamPredictor


def part_microsam(runs: int, shape) -> dict:
    from testing_utils import randomize_

    segment_mask_in_volume, registry, SamPredictor = _micro_sam()
    import micro_sam.multi_dimensional_segmentation as msd
    ours = randomize_(build_model("vit_b"), seed=0).eval()
    ref = registry["vit_b"]()
    ref.load_state_dict(ours.state_dict(), strict=True)
    ref.eval()
    v = nuclei_volume(7, shape=shape, n=8, radius=(30.0, 50.0), z_step=8.0)
    pred = Predictor(ours, device="cpu")
    emb = SliceEmbeddings(pred, v.image, diameter="off")  # whole slices, as micro-sam
    feats = torch.cat([emb.embedding(k).features for k in range(len(emb))])[:, None]
    e0 = emb.embedding(0)
    image_embeddings = {"features": feats, "input_size": tuple(e0.input_size),
                        "original_size": tuple(e0.original_size)}
    ref_pred = SamPredictor(ref)
    z = shape[0] // 2
    seed = np.zeros(v.labels.shape, np.uint32)
    seed[z] = (v.labels[z] > 0)  # every nucleus of the middle slice as one object
    loose = StopRules(min_area=1, min_area_ratio=0, max_area_ratio=1e9, min_iou=0,
                      min_contrast=0)
    counts = {"ours": 0, "micro-sam": 0}
    decode, from_mask = pred.predict_lowres, msd.segment_from_mask

    def count_ours(*a, **k):
        counts["ours"] += 1
        return decode(*a, **k)

    def count_ref(*a, **k):
        counts["micro-sam"] += 1
        return from_mask(*a, **k)
    pred.predict_lowres, msd.segment_from_mask = count_ours, count_ref
    per_run = {}

    def run_ours():
        before = counts["ours"]
        m = segment_volume(v.image, embeddings=emb, z=z, mask=seed[z].astype(bool),
                           prompt=("box",), rules=loose, floor=None)
        per_run["ours"] = counts["ours"] - before
        return m

    def run_ref():
        before = counts["micro-sam"]
        with torch.no_grad():
            out = segment_mask_in_volume(seed.copy(), ref_pred, image_embeddings,
                                         np.array([z]), False, False, None, "box")
        per_run["micro-sam"] = counts["micro-sam"] - before
        return out

    t_ours, t_ref = Timer("ours", run_ours), Timer("micro-sam", run_ref)
    alternate([t_ours, t_ref], runs)
    msd.segment_from_mask = from_mask
    per = {n: t.median / max(per_run[n], 1) for n, t in (("ours", t_ours), ("micro-sam", t_ref))}
    return {"shape": list(shape), "slices_decoded_per_run": per_run, "runs": runs,
            "ours_decoder_dtype": str(pred.decoder_dtype),
            "ours_s_per_slice": per["ours"], "micro_sam_s_per_slice": per["micro-sam"],
            "ratio_micro_sam_over_ours": per["micro-sam"] / per["ours"],
            "ours": t_ours.summary(), "micro_sam": t_ref.summary()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--parts", default="click,auto,track,microsam")
    ap.add_argument("--volumes", type=int, default=3)
    ap.add_argument("--movies", type=int, default=2)
    ap.add_argument("--points-per-side", type=int, default=16)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--floor", type=float, default=0.3,
                    help="segment_volume's intensity floor for the click part (0: off)")
    ap.add_argument("--seed0", type=int, default=100,
                    help="first seed of the generated volumes (the figures use 100)")
    args = ap.parse_args(argv)
    parts = args.parts.split(",")
    m = machine()
    print(describe(m), flush=True)
    out = {"machine": m}
    bundled = Predictor(load_model("bundled"), device="cpu")
    seeds = list(range(args.seed0, args.seed0 + args.volumes))
    if "click" in parts:
        out["click"] = part_click(bundled, seeds, args.floor)
        print("one click per nucleus:", out["click"], flush=True)
    if "auto" in parts:
        out["auto"] = part_auto(bundled, seeds, args.points_per_side)
        print("automatic 3D:", out["auto"], flush=True)
    if "track" in parts:
        out["track"] = part_track(bundled, list(range(100, 100 + args.movies)),
                                  args.points_per_side, (16, 128, 128))
        print("tracking:", out["track"], flush=True)
    if "microsam" in parts:
        out["microsam"] = part_microsam(args.runs, (6, 512, 512))
        r = out["microsam"]
        print(f"propagation, random ViT-B: ours {r['ours_s_per_slice'] * 1e3:.1f} ms/slice, "
              f"micro-sam {r['micro_sam_s_per_slice'] * 1e3:.1f} ms/slice, ratio "
              f"{r['ratio_micro_sam_over_ours']:.2f}x", flush=True)
    out["machine_after"] = {"load_avg": machine()["load_avg"]}
    print("saved", save("volume" if len(parts) == 4 else "volume_" + "_".join(parts), out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
