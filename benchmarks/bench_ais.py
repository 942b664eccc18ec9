"""AIS, APG and AMG side by side with micro-sam's implementations, one run each.

One random ViT-B and one random UNETR instance decoder (micro-sam's `get_unetr` layout,
random batch-norm statistics) are written as a micro-sam checkpoint; micro-sam loads it
with `get_predictor_and_decoder`, napari-sam with `load_model`. Both segment the same
512 x 512 uint8 RGB image:

- AIS: micro-sam `InstanceSegmentationWithDecoder.initialize(image)` + `generate()`;
  ours `Predictor.set_image` + `ais(predictor)` (instance maps + seeded watershed);
- APG: micro-sam `AutomaticPromptGenerator` (initialize + generate); ours `set_image` +
  `apg(predictor)`;
- AMG: micro-sam `AutomaticMaskGenerator(points_per_side=16)` (initialize + generate);
  ours `automask(image, points_per_side=16)`.

Every timing includes the image embedding (each side computes it once per mode). One timed
run per side after `--warmup` warm-ups of ours (micro-sam's side is not warmed up: one AMG
run alone takes about a minute here). Wall and process CPU time are recorded: on a shared
machine the CPU time is the steadier figure. With random weights the labels mean nothing; the object
counts and the fp32 map agreement are printed as a sanity check.

    .venv/bin/python benchmarks/bench_ais.py                      # ViT-B, several minutes
    .venv/bin/python benchmarks/bench_ais.py --arch test_vit --size 128   # smoke (no AMG ref)

`--tiled SIDE`: instead, tiled AIS with the bundled model on a SIDE x SIDE uint16 nuclei
field (synthetic tiles of 512 x 512, written to a disk-backed zarr first, not timed) read
lazily and labelled into a zarr on disk (`tiled_automask(..., out=...)` with the AIS tile
segmenter at the diameter the synthetic nuclei have): wall time, process CPU time, peak
resident memory (flat: it should not grow with SIDE) and the object count.

    .venv/bin/python benchmarks/bench_ais.py --tiled 8192     # the 8,192^2 goal (< 4 min)
    .venv/bin/python benchmarks/bench_ais.py --tiled 2048     # a check
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import _common  # noqa: F401  (paths; napari_sam first)
from _common import agreement, fmt_s, machine, make_image, save


def build_checkpoint(arch: str, path: Path):
    import reference_stub
    from napari_sam.model.registry import get_config

    reference_stub.install_micro_sam()
    from torch_em.model import UNETR

    torch.manual_seed(0)
    ref = reference_stub.build_reference(get_config(arch))
    unetr = UNETR(backbone="sam", encoder=ref.image_encoder, out_channels=3,
                  use_sam_stats=True, final_activation="Sigmoid", use_skip_connection=False,
                  resize_input=True, use_conv_transpose=False)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in unetr.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.rand(m.num_features, generator=g) * 0.6 - 0.3)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) * 1.5 + 0.5)
    torch.save({"model_state": {"sam." + k: v for k, v in ref.state_dict().items()},
                "decoder_state": {k: v for k, v in unetr.state_dict().items()
                                  if not k.startswith("encoder")}}, path)


def once(fn):
    c0, t0 = time.process_time(), time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0, time.process_time() - c0


def tiled_ais(side: int, diameter: float, save_as: str) -> int:
    """Tiled AIS with the bundled model on a side x side nuclei field, zarr in, zarr out."""
    import resource

    import zarr

    from napari_sam import AutoSegmenter
    from napari_sam.automask import tiled_automask
    from napari_sam.training.synthetic import nuclei_image

    m0 = machine()
    print(_common.describe(m0), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        src = zarr.open(str(Path(tmp) / "image.zarr"), mode="w", shape=(side, side),
                        chunks=(512, 512), dtype="uint16")
        n = side // 512
        for i in range(n):  # a few different fields, so tiles differ
            for j in range(n):
                src[i * 512:(i + 1) * 512, j * 512:(j + 1) * 512] = np.asarray(
                    nuclei_image(seed=(i * n + j) % 7)[0], np.uint16)
        seg = AutoSegmenter("bundled", mode="ais", diameter=diameter)
        plan = seg.plan(np.zeros((side, side), np.uint16))
        segmenter = seg.tile_segmenter(plan, (side, side))
        rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        (res, wall, cpu) = once(lambda: tiled_automask(
            src, seg.model, out=Path(tmp) / "labels.zarr", tile_size=plan.tile,
            overlap=plan.overlap, segmenter=segmenter, device=seg.predictor.device,
            precision=seg.predictor.precision))
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        out = {"machine": m0, "side": side, "diameter": diameter, "tile": plan.tile,
               "overlap": plan.overlap, "wall_s": wall, "cpu_s": cpu,
               "peak_rss_mb_before": rss0, "peak_rss_mb": rss,
               "objects": len(res.records)}
    print(f"tiled AIS {side}^2 (tile {plan.tile}, overlap {plan.overlap}): {fmt_s(wall)} wall, "
          f"{fmt_s(cpu)} CPU, peak RSS {rss:.0f} MB (before the run {rss0:.0f} MB), "
          f"{len(res.records)} objects", flush=True)
    print(f"saved {save(save_as, out)}")
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--arch", default="vit_b")
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--points-per-side", type=int, default=16)
    ap.add_argument("--precisions", default="auto,fp32")
    ap.add_argument("--skip-reference-amg", action="store_true")
    ap.add_argument("--warmup", type=int, default=1, help="warm-up runs of ours per mode")
    ap.add_argument("--save", default="ais")
    ap.add_argument("--tiled", type=int, default=0, metavar="SIDE",
                    help="tiled AIS with the bundled model on a SIDE^2 image (see above)")
    ap.add_argument("--diameter", type=float, default=20.0,
                    help="--tiled: the objects' diameter in px (the synthetic nuclei: ~20)")
    args = ap.parse_args(argv)
    if args.tiled:
        return tiled_ais(args.tiled, args.diameter, args.save + f"_tiled{args.tiled}")

    from napari_sam import Predictor, automask, load_model
    from napari_sam.automask.ais import ais
    from napari_sam.automask.apg import apg

    m0 = machine()
    print(_common.describe(m0), flush=True)
    image = make_image(args.size)
    res = {"machine": m0, "arch": args.arch, "size": args.size, "timings": {}, "counts": {}}
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(tmp) / "model.pt"
        build_checkpoint(args.arch, ckpt)
        import micro_sam.instance_segmentation as mis

        model = load_model(str(ckpt))
        ours_maps = None
        for prec in args.precisions.split(","):
            pred = Predictor(model, precision=prec, diameter="off")  # micro-sam has no zoom

            def run_ais():
                pred.set_image(image)
                return ais(pred)

            def run_apg():
                pred.set_image(image)
                return apg(pred)

            def run_amg():
                return automask(image, pred, points_per_side=args.points_per_side)

            for mode, fn in (("ais", run_ais), ("apg", run_apg), ("amg", run_amg)):
                for _ in range(args.warmup):
                    fn()
                labels, wall, cpu = once(fn)
                res["timings"][f"{mode} ours {prec}"] = {"wall_s": wall, "cpu_s": cpu}
                res["counts"][f"{mode} ours {prec}"] = int(labels.max())
                print(f"{mode} ours {prec}: {fmt_s(wall)} (cpu {fmt_s(cpu)}), "
                      f"{labels.max()} objects", flush=True)
                save(args.save, res)  # partial results survive an interrupted run
            if prec == "fp32":
                ours_maps = pred.instance_maps()

        predictor, decoder = mis.get_predictor_and_decoder(
            args.arch if args.arch.startswith("vit") else "vit_b", str(ckpt), device="cpu") \
            if args.arch.startswith("vit") else (None, None)
        if predictor is None:  # tiny smoke configs: micro-sam cannot build them by name
            import reference_stub
            from segment_anything import SamPredictor

            sd = torch.load(ckpt, weights_only=True)
            ref = reference_stub.build_reference(model.config)
            ref.load_state_dict({k[4:]: v for k, v in sd["model_state"].items()})
            predictor = SamPredictor(ref)
            decoder = mis.get_decoder(ref.image_encoder, sd["decoder_state"], "cpu")

        def ref_ais():
            seg = mis.InstanceSegmentationWithDecoder(predictor, decoder)
            seg.initialize(image)
            return seg.generate(), seg.get_state()

        def ref_apg():
            gen = mis.AutomaticPromptGenerator(predictor, decoder)
            gen.initialize(image)
            return gen.generate()

        def ref_amg():
            from micro_sam.util import precompute_image_embeddings

            gen = mis.AutomaticMaskGenerator(predictor, points_per_side=args.points_per_side)
            # its initialize() would take an (Y, X, 3) image for a 3-D stack: embed it as 2-D
            emb = precompute_image_embeddings(predictor, image, ndim=2, verbose=False)
            gen.initialize(image, image_embeddings=emb)
            return gen.generate(output_mode="instance_segmentation")

        steps = [("ais", ref_ais), ("apg", ref_apg)]
        if not args.skip_reference_amg:
            steps.append(("amg", ref_amg))
        for mode, fn in steps:
            out, wall, cpu = once(fn)
            if mode == "ais":
                out, state = out
                if ours_maps is not None:
                    res["map_agreement_fp32"] = {
                        k: agreement(ours_maps[k], state[k], 0.5) for k in state}
            res["timings"][f"{mode} micro-sam"] = {"wall_s": wall, "cpu_s": cpu}
            res["counts"][f"{mode} micro-sam"] = int(np.max(out)) if np.size(out) else 0
            print(f"{mode} micro-sam: {fmt_s(wall)} (cpu {fmt_s(cpu)}), "
                  f"{res['counts'][f'{mode} micro-sam']} objects", flush=True)
            save(args.save, res)
    for mode in ("ais", "apg", "amg"):
        ref = res["timings"].get(f"{mode} micro-sam")
        for k, t in res["timings"].items():
            if k.startswith(f"{mode} ours") and ref:
                t["speedup_wall"] = ref["wall_s"] / t["wall_s"]
                print(f"{k}: {t['speedup_wall']:.2f}x micro-sam", flush=True)
    if "map_agreement_fp32" in res:
        for k, a in res["map_agreement_fp32"].items():
            print(f"fp32 maps {k}: max rel diff {a['max_rel_diff']:.2e}", flush=True)
    res["machine_after"] = machine()
    print(f"saved {save(args.save, res)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
