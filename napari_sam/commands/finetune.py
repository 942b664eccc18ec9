"""`napari-sam finetune IMAGES... --labels LABELS... -o model.pt`: adapt a model to your data.

Images and label images (TIFF label images or COCO JSON files) are given as files, folders or
glob patterns and paired by name (`a.tif` <-> `a_labels.tif`); stacks give one sample per
slice. A part of the data is held out for validation (whole images, or a strip of a single
image). One line is printed per evaluation, then a table of the scores before and after.
The output is a napari-sam checkpoint: `--model model.pt` in the other commands, or "file..."
in the widgets. Running the same command again after an interruption resumes.
"""

from __future__ import annotations

import json
import sys


def _channels(text: str):
    try:
        out = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"--channels: expected comma-separated integers, got {text!r}") from None
    if not 1 <= len(out) <= 3:
        raise ValueError(f"--channels: choose 1 to 3 channels, got {len(out)}")
    return out


def add_parser(sub) -> None:
    """Add the `finetune` subcommand.

    Parameters
    ----------
    sub : argparse._SubParsersAction
        What `ArgumentParser.add_subparsers()` returned.
    """
    p = sub.add_parser(
        "finetune", help="fine-tune a model on your annotated images",
        description=__doc__.split("\n\n")[1])
    p.add_argument("images", nargs="+", metavar="IMAGES",
                   help="image files, folders or glob patterns")
    p.add_argument("--labels", nargs="+", required=True, metavar="LABELS",
                   help="label images (.tif) or COCO JSON files, folders or patterns")
    p.add_argument("-o", "--output", required=True, metavar="MODEL.pt",
                   help="the fine-tuned checkpoint to write")
    p.add_argument("--base", default="bundled", metavar="NAME|PATH",
                   help="model to start from: bundled (default), a registry name or a file")
    p.add_argument("--minutes", type=float, default=10.0,
                   help="time budget of training and its evaluations (default 10; the first validation and the final calibration come on top)")
    p.add_argument("--max-steps", type=int, default=0, help="stop after N steps (0: no limit)")
    p.add_argument("--channels", default=None, metavar="0,1",
                   help="channels (1 to 3) for images with more than three")
    p.add_argument("--train", default="auto", choices=("auto", "all", "decoder"),
                   help="what to train: all weights (default for the bundled model) or the "
                        "mask decoder and prompt encoder (default for SAM ViTs)")
    p.add_argument("--lora", type=int, default=0, metavar="R",
                   help="also train rank-R LoRA adapters on the image encoder's attention "
                        "(qkv; with --train decoder), merged into the weights at export")
    p.add_argument("--lora-proj", action="store_true",
                   help="with --lora: adapters on the attention output projections too")
    p.add_argument("--validation", type=float, default=0.25, metavar="F",
                   help="fraction of the images (or of a single image) held out (default 0.25)")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--lr", type=float, default=0.0, help="learning rate (0: automatic)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda", "mps"))
    p.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.add_argument("--log", metavar="FILE", help="also append each evaluation as JSON to FILE")
    p.set_defaults(func=run)


def table(before: dict, after: dict) -> str:
    """Before/after scores as aligned text rows.

    Parameters
    ----------
    before, after : dict of str to float
        Validation scores (click_miou, box_miou, automask_f1@0.5, automask_f1@0.75); only
        keys present in both are shown.

    Returns
    -------
    str
        A header row and one row per score (before, after, change), newline-separated.
    """
    keys = [k for k in ("click_miou", "box_miou", "automask_f1@0.5", "automask_f1@0.75")
            if k in before and k in after]
    rows = [("validation", "before", "after", "change")]
    rows += [(k, f"{before[k]:.3f}", f"{after[k]:.3f}", f"{after[k] - before[k]:+.3f}")
             for k in keys]
    w = [max(len(r[i]) for r in rows) for i in range(4)]
    return "\n".join("  ".join([r[0].ljust(w[0])] + [c.rjust(w[i + 1]) for i, c in
                                                     enumerate(r[1:])]) for r in rows)


def run(args) -> int:
    """Fine-tune a model on the given images and write the checkpoint (resumable).

    Parameters
    ----------
    args : argparse.Namespace
        Parsed `finetune` arguments.

    Returns
    -------
    int
        Exit status 0 (bad input raises ValueError).
    """
    from pathlib import Path

    from ..io.atomic import check_writable
    from ..training.finetune import STATE_SUFFIX, FinetuneConfig, finetune
    from ..training.user_data import load_files, split_validation

    out = Path(args.output)
    state = out.with_name(out.name + STATE_SUFFIX)
    if not state.is_file():
        try:
            check_writable(out, args.overwrite)
        except FileExistsError as err:
            raise ValueError(err.strerror) from None
    if args.lora < 0 or (args.lora_proj and not args.lora):
        raise ValueError("--lora takes a rank of at least 1 (--lora-proj needs --lora)")
    channels = _channels(args.channels) if args.channels else None
    samples = load_files(args.images, args.labels, channels)
    inputs = {Path(s).resolve() for s in list(args.images) + list(args.labels)}
    if out.resolve() in inputs:
        raise ValueError(f"{out} is one of the inputs; choose another output file")
    train, val = split_validation(samples, args.validation, args.seed)
    print(f"{len(train)} training and {len(val)} validation samples "
          f"({sum(s.n_objects for s in train)} + {sum(s.n_objects for s in val)} objects)")
    cfg = FinetuneConfig(base=args.base, minutes=args.minutes, max_steps=args.max_steps,
                         train=args.train, batch=args.batch, lr=args.lr, seed=args.seed,
                         device=args.device, precision=args.precision,
                         lora_rank=args.lora, lora_proj=args.lora_proj)
    logf = open(args.log, "a") if args.log else None

    def progress(rec):
        loss = "-" if rec["loss"] is None else f"{rec['loss']:.3f}"
        print(f"step {rec['step']:5d}  {rec['seconds'] / 60:5.1f} min  loss {loss}  "
              f"click {rec['click_miou']:.3f}  box {rec['box_miou']:.3f}  "
              f"score {rec['score']:.3f}  best {rec['best']:.3f}", flush=True)
        if logf:
            logf.write(json.dumps(rec) + "\n")
            logf.flush()

    try:
        res = finetune(train, val, out, cfg, progress=progress,
                       log=lambda m: print(m, file=sys.stderr, flush=True))
    finally:
        if logf:
            logf.close()
    print(f"\n{res.steps} steps in {res.seconds / 60:.1f} min; best weights written to {out}")
    print(table(res.before, res.after))
    return 0
