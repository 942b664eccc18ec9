"""`napari-sam export-onnx MODEL -o DIR`: the decoder (and SAM 2.1's encoder) as ONNX."""

from __future__ import annotations


def _run(args) -> int:
    import sys

    from ..model import load_model
    from ..onnx_export import export_onnx

    model = load_model(args.model, "cpu")
    try:
        paths = export_onnx(model, args.output, overwrite=args.overwrite, opset=args.opset)
    except FileExistsError as err:
        print(f"napari-sam: error: {err.strerror or err}", file=sys.stderr)
        return 1
    for name, path in paths.items():
        print(f"{name}: {path}")
    return 0


def add_parser(subparsers) -> None:
    """Add the `export-onnx` subcommand.

    Parameters
    ----------
    subparsers : argparse._SubParsersAction
        What `ArgumentParser.add_subparsers()` returned.
    """
    p = subparsers.add_parser(
        "export-onnx", help="export a model's prompt encoder + mask decoder to ONNX",
        description="Write decoder.onnx (prompt encoder + mask decoder, any number of points, "
                    "optional mask input, masks at the image's size), encoder.onnx for SAM 2.1 "
                    "models, and model.json into a folder. See docs/onnx.md.")
    p.add_argument("model", metavar="MODEL",
                   help="bundled, a registry name (see `models list`) or a checkpoint file")
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="output folder")
    p.add_argument("--overwrite", action="store_true", help="replace existing files")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    p.set_defaults(func=_run)
