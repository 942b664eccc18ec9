"""Run every benchmark, one subprocess each, and write the figures into benchmarks/README.md.

    .venv/bin/python benchmarks/run_all.py            # everything (about 30-40 min on 2 cores)
    .venv/bin/python benchmarks/run_all.py --quick    # without ViT-H
    .venv/bin/python benchmarks/run_all.py --only click,bundled
    .venv/bin/python benchmarks/run_all.py --readme-only   # rewrite the README from results/

Each script stores its figures in benchmarks/results/<name>.json (bench_automask.py prints
them; its output is kept in results/automask.txt). The README's section between the
`figures` markers is regenerated from those files; the rest of the README is left alone.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
README = HERE / "README.md"
PY = sys.executable

UNTUNED = {"NAPARI_SAM_TUNE_CPU": "0"}  # an untouched process (see benchmarks/_common.py)
STEPS = [  # name, script and arguments, heavy (skipped by --quick), extra environment
    ("encoder_vit_b", ["bench_encoder.py", "--runs", "3"], False, {}),
    ("encoder_vit_b_1thread", ["bench_encoder.py", "--runs", "2", "--threads", "1",
                               "--precisions", "auto", "--save", "encoder_vit_b_1thread"],
     False, {}),
    ("click_vit_b", ["bench_click.py"], False, {}),
    ("bundled", ["bench_bundled.py"], False, {}),
    # automask in both process states; the 10x goal is judged on the tuned one
    ("automask", ["bench_automask.py"], False, UNTUNED),
    ("automask_tuned_ref", ["bench_automask.py", "--variants", "auto:lowres", "--ref-runs",
                            "3", "--runs", "5"], False, {}),
    ("encoder_vit_h", ["bench_encoder.py", "--arch", "vit_h", "--runs", "2",
                       "--precisions", "auto"], True, {}),
    ("encoder_vit_h_memory", ["bench_encoder.py", "--arch", "vit_h", "--memory"], True, {}),
]


def run_step(name: str, argv: list, extra_env: dict, untuned: bool = False) -> bool:
    """One benchmark script in a subprocess. Each script tunes its process for CPU inference
    (`napari_sam.tune_cpu()`, before torch is imported) unless NAPARI_SAM_TUNE_CPU=0 is in
    `extra_env` or `untuned` is set."""
    env = dict(os.environ)
    env.update(extra_env)
    if untuned:
        env.update(UNTUNED)
    print(f"\n=== {name}: {' '.join(argv)}  (load average {os.getloadavg()[0]:.2f}, CPU "
          f"tuning {'off' if env.get('NAPARI_SAM_TUNE_CPU') == '0' else 'on'})", flush=True)
    t0 = time.time()
    proc = subprocess.run([PY, str(HERE / argv[0])] + argv[1:], cwd=HERE.parent, env=env,
                          capture_output=True, text=True)
    out = proc.stdout + (("\n" + proc.stderr[-3000:]) if proc.returncode else "")
    print(out.rstrip())
    print(f"=== {name}: exit {proc.returncode} after {time.time() - t0:.0f} s", flush=True)
    if name.startswith("automask"):
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / f"{name}.txt").write_text(
            f"load average before: {os.getloadavg()}\n" + proc.stdout)
    return proc.returncode == 0


# --- README -----------------------------------------------------------------------------------

def automask_state(s: str):
    """(label, like for like, tuned) of a saved bench_automask.py output: its process
    settings, from the text itself (older outputs name the reference's allocator)."""
    m = re.search(r"cpu tuning \(both sides\): (.*)$", s, re.M)
    if m:
        tuned = m.group(1).startswith("tune_cpu()")
        return ("both sides after tune_cpu()" if tuned else
                "both sides in an untouched process"), True, tuned
    if "reference allocator: tuned" in s:
        return "reference under our allocator settings", True, True
    return "reference under glibc's defaults", False, False


def automask_rows(txt: Path) -> list:
    """Table rows from a saved bench_automask.py output. The 10x goal is judged on a run
    in a tuned process with both sides under the same settings (like for like)."""
    if not txt.is_file():
        return []
    s = txt.read_text()
    ref = re.search(r"reference SamAutomaticMaskGenerator: median ([\d.]+) s", s)
    lm = re.search(r"load average before: \(([\d.]+)", s)
    whose, like_for_like, tuned = automask_state(s)
    like_for_like = like_for_like and tuned
    rows = []
    for m in re.finditer(r"ours automask \(([^)]*)\): median ([\d.]+) s.*?(?:speed-up "
                         r"reference/ours = ([\d.]+)x)?$", s, re.M):
        sp = float(m.group(3)) if m.group(3) else None
        goal = ("ratio >= 10x: " + verdict(sp >= 10)) if (
            sp and "auto" in m.group(1) and like_for_like) else ""
        rows.append((f"automask 16 x 16 points, 512 x 512, ViT-B, {m.group(1)}; {whose}",
                     f"{float(m.group(2)):.2f} s",
                     f"{float(ref.group(1)):.2f} s" if ref else "-",
                     f"{sp:.2f}x" if sp else "-", goal,
                     f"{float(lm.group(1)):.2f}" if lm else ""))
    return rows


def load(name: str):
    p = RESULTS / f"{name}.json"
    return json.loads(p.read_text()) if p.is_file() else None


def ms(s: float) -> str:
    return f"{s * 1e3:.0f} ms" if s < 1 else f"{s:.2f} s"


def loads(r) -> str:
    before = r["machine"]["load_avg"][0]
    after = r.get("machine_after", {}).get("load_avg", [None])[0]
    return f"{before:.2f}" + (f" / {after:.2f}" if after is not None else "")


def verdict(ok) -> str:
    return "**met**" if ok else "not met"


def timing_rows(timings: dict, label: str, goal, load: str) -> list:
    """Table rows for every entry of a result's `timings` but the reference: label and name,
    ours, reference, ratio, `goal(name, timing)` (the goal column) and the load."""
    ref = timings.get("reference")
    rows = []
    for name, t in timings.items():
        if name == "reference":
            continue
        sp = t.get("speedup_wall")
        rows.append((f"{label}, {name}", ms(t["median_s"]), ms(ref["median_s"]) if ref else "-",
                     f"{sp:.2f}x" if sp else "-", goal(name, t), load))
    return rows


def figures() -> str:
    rows, notes, machine = [], [], None
    enc = load("encoder_vit_b")
    if enc:
        machine = enc["machine"]

        def vit_b_goal(name, t):
            sp = t.get("speedup_wall")
            return ("ratio >= 6x: " + verdict(sp >= 6)) if "auto" in name and sp else ""

        rows += timing_rows(enc["timings"], "ViT-B `set_image` 1024 x 1024", vit_b_goal,
                            loads(enc))
        for k, a in enc.get("agreement", {}).items():
            if "embedding" in a and "mask_logits" in a:
                e, lg = a["embedding"], a["mask_logits"]
                notes.append(
                    f"ViT-B random weights, {k}: embedding correlation {e['corr']:.5f}, max "
                    f"|diff| / max |fp32| {e['max_rel_diff']:.3g}; mask logits (4 point "
                    f"prompts x 3 masks + 4 boxes) correlation {lg['corr']:.5f}, max rel diff "
                    f"{lg['max_rel_diff']:.3g}, IoU of the low-res masks {lg['mask_iou']:.4f}.")
            elif "embedding" in a:
                notes.append(f"ViT-B, {k}: embedding max rel diff "
                             f"{a['embedding']['max_rel_diff']:.2g} (parity).")
    one = load("encoder_vit_b_1thread")
    if one:
        t = [v for k, v in one["timings"].items() if k != "reference"][0]
        ref = one["timings"].get("reference")
        rows.append(("ViT-B `set_image`, 1 thread, ours auto", ms(t["median_s"]),
                     ms(ref["median_s"]) if ref else "-",
                     f"{t.get('speedup_wall', 0):.2f}x", "", loads(one)))
    clk = load("click_vit_b")
    if clk:
        rows += timing_rows(
            clk["timings"], "click -> 3 full-res masks, 1024 x 1024, ViT-B",
            lambda name, t: "< 50 ms: " + verdict(t["median_s"] < 0.05) if "auto" in name else "",
            loads(clk))
        for k, a in clk.get("agreement", {}).items():
            notes.append(f"Click masks, {k} vs reference: mean IoU {a['mean_iou']:.4f} (min "
                         f"{a['min_iou']:.4f}); random weights give masks of "
                         f"{a['mean_area_fraction']:.0%} of the image on average, about the "
                         f"worst case for the in-box upsampling.")
    for name in ("automask", "automask_tuned_ref"):
        rows += automask_rows(RESULTS / f"{name}.txt")
    vh = load("encoder_vit_h")
    if vh:
        rows += timing_rows(vh["timings"], "ViT-H `set_image` 1024 x 1024",
                            lambda name, t: "", loads(vh))
    mem = load("encoder_vit_h_memory")
    if mem:
        peaks = mem["peak_rss_mb"]
        ref = peaks.get("reference", {}).get("peak_rss_mb")
        for impl, r in peaks.items():
            if impl == "reference":
                continue
            p = r["peak_rss_mb"]
            rows.append((f"ViT-H peak RSS (build + one `set_image`), {impl}",
                         f"{p / 1024:.2f} GB", f"{ref / 1024:.2f} GB" if ref else "-",
                         f"{p / ref:.2f} of it" if ref else "-",
                         "below the reference: " + verdict(ref is not None and p < ref),
                         f"{mem['machine']['load_avg'][0]:.2f}"))
    bun = load("bundled")
    if bun:
        notes.append(f"Bundled model: {bun['weights']}.")
        rows += timing_rows(bun["embed"], "bundled model, embed 512 x 512",
                            lambda name, t: "< 0.5 s: " + verdict(t["median_s"] < 0.5),
                            loads(bun))
        rows += timing_rows(bun["click"], "bundled model, click -> 3 masks at 512 x 512",
                            lambda name, t: "< 50 ms: " + verdict(t["median_s"] < 0.05),
                            loads(bun))
        for k, a in bun.get("agreement", {}).items():
            notes.append(f"Bundled model, clicks on nuclei, {k} vs MobileSAM's code: mask IoU "
                         f"mean {a['mean_iou']:.4f}, min {a['min_iou']:.4f}.")
    out = []
    if machine:
        out.append(f"Measured {machine['date']} on {machine['cpu']} ({machine['cores']} CPUs, "
                   f"AMX/AVX-512 bf16: {'yes' if machine['fast_bf16'] else 'no'}), torch "
                   f"{machine['torch']}, {machine['threads']} threads, OMP_WAIT_POLICY "
                   f"{machine.get('omp_wait_policy')}, CPU tuning "
                   f"{machine.get('cpu_tuning', 'by the Predictor (before tune_cpu existed)')}, "
                   f"{'GPU ' + machine['gpu'] if machine.get('gpu') else 'no GPU'}. The machine "
                   "was shared with a training run and other tests: the load column is the "
                   "1-minute load average before / after each comparison (2 CPUs).")
        out.append("")
    out.append("| comparison | ours (median) | reference (median) | reference / ours | goal | "
               "load |")
    out.append("|---|---|---|---|---|---|")
    out += [f"| {' | '.join(r)} |" for r in rows]
    if notes:
        out.append("")
        out += [f"- {n}" for n in notes]
    return "\n".join(out)


def write_readme() -> None:
    text = README.read_text() if README.is_file() else "<!-- figures:begin -->\n<!-- figures:end -->\n"
    begin, end = "<!-- figures:begin -->", "<!-- figures:end -->"
    head, _, rest = text.partition(begin)
    _, _, tail = rest.partition(end)
    README.write_text(f"{head}{begin}\n{figures()}\n{end}{tail}")
    print(f"wrote {README}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="skip the ViT-H benchmarks")
    ap.add_argument("--only", default="", help="comma-separated step names")
    ap.add_argument("--readme-only", action="store_true")
    ap.add_argument("--untuned", action="store_true",
                    help="every step in an untouched process (NAPARI_SAM_TUNE_CPU=0); the "
                         "results overwrite the tuned ones and say which state they are in")
    args = ap.parse_args(argv)
    ok = True
    if not args.readme_only:
        only = {s for s in args.only.split(",") if s}
        for name, argv_, heavy, extra_env in STEPS:
            if (only and name not in only) or (args.quick and heavy and name not in only):
                continue
            ok &= run_step(name, argv_, extra_env, args.untuned)
    write_readme()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
