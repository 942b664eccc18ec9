"""`napari-sam models list` and `napari-sam models download NAME [NAME...]`."""

from __future__ import annotations

import sys


def _mb(n) -> str:
    return "-" if n is None else f"{n / 1e6:.1f}"


def _bundled_decoder(path) -> str:
    try:
        from ..model.checkpoints import read_checkpoint

        return "head" if (read_checkpoint(path).config or {}).get("instance_head") else "-"
    except Exception:  # a broken install is reported by the SIZE/CACHED columns
        return "?"


def _list(args) -> int:
    from ..model.hub import cache_dir, list_checkpoints
    from ..model.registry import BUNDLED_PATH

    decoders = {"unetr": "unetr", "": "-"}
    rows = [(r["name"], r["arch"], _mb(r["size"]), "yes" if r["cached"] else "no",
             decoders.get(r["instance_decoder"], r["instance_decoder"]), r["description"])
            for r in list_checkpoints(args.cache)]
    if BUNDLED_PATH.is_file():
        rows.insert(0, ("bundled", "-", _mb(BUNDLED_PATH.stat().st_size), "yes",
                        _bundled_decoder(BUNDLED_PATH),
                        f"shipped with napari-sam ({BUNDLED_PATH})"))
    else:
        rows.insert(0, ("bundled", "-", "-", "missing", "-",
                        f"shipped with napari-sam; not found at {BUNDLED_PATH}"))
    head = ("NAME", "ARCH", "SIZE MB", "CACHED", "DECODER", "DESCRIPTION")
    widths = [max(len(r[i]) for r in rows + [head]) for i in range(5)]
    for r in [head] + rows:
        cells = [r[0].ljust(widths[0]), r[1].ljust(widths[1]), r[2].rjust(widths[2]),
                 r[3].ljust(widths[3]), r[4].ljust(widths[4]), r[5]]
        print("  ".join(cells).rstrip())
    print("\nDECODER: the instance decoder for automatic instance segmentation (AIS, APG): "
          "unetr = micro-sam's, head = the bundled model's, - = none (grid automask only)")
    print(f"cache folder: {args.cache or cache_dir()}")
    return 0


def _download(args) -> int:
    from ..model.hub import DownloadError, fetch

    failed = 0
    for name in args.names:
        try:
            path = fetch(name, progress=not args.quiet, cache=args.cache,
                         verify=not args.no_verify, force=args.force)
        except (DownloadError, KeyError) as err:
            if isinstance(err, KeyboardInterrupt):
                raise
            msg = err.args[0] if isinstance(err, KeyError) and err.args else err
            print(f"napari-sam: error: {msg}", file=sys.stderr)
            failed += 1
            continue
        print(f"{name}: {path}")
    return 1 if failed else 0


def add_parser(subparsers) -> None:
    """Add the `models` subcommand and its actions.

    Parameters
    ----------
    subparsers : argparse._SubParsersAction
        What `ArgumentParser.add_subparsers()` returned.
    """
    parser = subparsers.add_parser(
        "models", help="list and download model checkpoints",
        description="Known Segment Anything checkpoints: list them, download them (hash-checked) "
                    "into the cache folder ($NAPARI_SAM_CACHE overrides it).")
    parser.set_defaults(func=lambda args: (parser.print_help(), 2)[1])
    sub = parser.add_subparsers(dest="models_command", metavar="ACTION")

    p = sub.add_parser("list", help="known checkpoints and whether they are cached")
    p.add_argument("--cache", default=None, help="cache folder (default: the user cache)")
    p.set_defaults(func=_list)

    p = sub.add_parser("download", help="download checkpoints into the cache, verifying hashes")
    p.add_argument("names", nargs="+", metavar="NAME", help="checkpoint names, see `models list`")
    p.add_argument("--cache", default=None, help="cache folder (default: the user cache)")
    p.add_argument("--no-verify", action="store_true",
                   help="allow files that have no checkable hash (sizes are still checked)")
    p.add_argument("--force", action="store_true",
                   help="download again even if a cached copy exists (e.g. one that fails to load)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_download)
