"""`napari-sam models list` and `napari-sam models download NAME [NAME...]`."""

from __future__ import annotations

import sys


def _mb(n) -> str:
    return "-" if n is None else f"{n / 1e6:.1f}"


def _list(args) -> int:
    from ..model.hub import cache_dir, list_checkpoints
    from ..model.registry import BUNDLED_PATH

    rows = [(r["name"], r["arch"], _mb(r["size"]), "yes" if r["cached"] else "no",
             r["description"]) for r in list_checkpoints(args.cache)]
    if BUNDLED_PATH.is_file():
        rows.insert(0, ("bundled", "-", _mb(BUNDLED_PATH.stat().st_size), "yes",
                        f"shipped with napari-sam ({BUNDLED_PATH})"))
    else:
        rows.insert(0, ("bundled", "-", "-", "missing",
                        f"shipped with napari-sam; not found at {BUNDLED_PATH}"))
    head = ("NAME", "ARCH", "SIZE MB", "CACHED", "DESCRIPTION")
    widths = [max(len(r[i]) for r in rows + [head]) for i in range(4)]
    for r in [head] + rows:
        cells = [r[0].ljust(widths[0]), r[1].ljust(widths[1]), r[2].rjust(widths[2]),
                 r[3].ljust(widths[3]), r[4]]
        print("  ".join(cells).rstrip())
    print(f"\ncache folder: {args.cache or cache_dir()}")
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
