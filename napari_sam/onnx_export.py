"""ONNX export: the prompt encoder + mask decoder of any napari-sam model (SAM 1, MobileSAM,
the bundled model, SAM 2.1) and the image encoder of SAM 2.1 models, so that clicks can be
answered by onnxruntime (or a browser) from a saved embedding.

    paths = export_onnx(load_model("vit_b"), "exported/")   # decoder.onnx, model.json

`decoder.onnx` (as SAM's own export, in the model's input frame):

- inputs: `image_embeddings` (1, C, g, g) float32 (what `Predictor.set_image` stores),
  `point_coords` (1, N, 2) float32 (x, y) in the model's input frame, `point_labels`
  (1, N) float32 (1 object, 0 background, 2 / 3 box corners, -1 padding), `mask_input`
  (1, 1, m, m) float32 logits, `has_mask_input` (1,) float32 (0 or 1), `orig_im_size` (2,)
  float32 (rows, columns of the image);
- outputs: `masks` (1, 4, rows, columns) logits at the image's size, `iou_predictions`
  (1, 4), `low_res_masks` (1, 4, m, m). Output 0 is the single-mask answer (for several
  points or a box; SAM 2.1 falls back to the best multimask output when it is unstable),
  outputs 1-3 the three multimask answers (for one click).

`onnx_prompts` turns (row, col) prompts into these inputs exactly as `Predictor` does for
an embedding made without object-size zoom (`Predictor(model, diameter="off")`).
`encoder.onnx` (SAM 2.1 only): `pixels` (1, 3, S, S) float32 in 0-255, the image already
resized to S x S (`Sam2.to_input`) -> `image_embeddings`. For SAM 1-family models embed
with `Predictor.set_image` and save `get_embedding().features` (their encoders use
in-place kernels that do not trace). `model.json` records sizes and rules. See
docs/onnx.md. onnx / onnxruntime are optional (`pip install "napari-sam[onnx]"`); the
export itself needs only torch.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Dict, Tuple

import numpy as np
import torch
from torch import nn
import torch.nn.functional as F

from .model.sam import Sam
from .model.sam2 import Sam2
from .model.sam2.decoder import high_res_from_packed
from .transforms import box_rc_to_xyxy, rc_to_xy

OPSET = 17
INPUTS = ("image_embeddings", "point_coords", "point_labels", "mask_input", "has_mask_input",
          "orig_im_size")
OUTPUTS = ("masks", "iou_predictions", "low_res_masks")


class DecoderGraph(nn.Module):
    """Prompt encoder + mask decoder + upscaling of `model`, traceable (see module doc).

    Parameters
    ----------
    model : Sam or Sam2
        The model whose prompt encoder and mask decoder are traced.
    """

    def __init__(self, model) -> None:
        super().__init__()
        self.model = model
        self.sam2 = isinstance(model, Sam2)
        self.size = model.config.image_size

    def _prompt(self, coords, labels, mask_input, has_mask):
        pe = self.model.prompt_encoder
        emb = pe.pe_layer.encode((coords + 0.5) * (1.0 / self.size))
        lab = labels[..., None]
        emb = torch.where(lab == -1, pe.not_a_point_embed.weight, emb)
        for k in range(4):
            emb = emb + (lab == k).to(emb.dtype) * pe.point_embeddings[k].weight
        dense = (pe.mask_downscaling(mask_input) * has_mask.view(1, 1, 1, 1)
                 + (1 - has_mask).view(1, 1, 1, 1) * pe.no_mask_embed.weight.view(1, -1, 1, 1))
        return emb, dense, pe.get_dense_pe()

    def forward(self, image_embeddings, point_coords, point_labels, mask_input,
                has_mask_input, orig_im_size):
        """Masks for one image's prompts, as `decoder.onnx` computes them.

        Parameters
        ----------
        image_embeddings : Tensor, (1, C, g, g) float32
            The image's embedding.
        point_coords : Tensor, (1, N, 2) float32
            Prompt points, (x, y) in the model's input frame.
        point_labels : Tensor, (1, N) float32
            1 object, 0 background, 2 / 3 box corners, -1 padding.
        mask_input : Tensor, (1, 1, m, m) float32
            Low-res logits of an earlier answer.
        has_mask_input : Tensor, (1,) float32
            1 when `mask_input` is used, else 0.
        orig_im_size : Tensor, (2,) float32
            (rows, columns) of the image.

        Returns
        -------
        masks : Tensor, (1, 4, rows, columns) float32
            Logits at the image's size (0: single mask, 1-3: multimask).
        iou_predictions : Tensor, (1, 4) float32
            Predicted IoU of each mask.
        low_res_masks : Tensor, (1, 4, m, m) float32
            Low-res logits.
        """
        sparse, dense, image_pe = self._prompt(point_coords, point_labels, mask_input,
                                               has_mask_input)
        if self.sam2:
            dec = self.model.sam_mask_decoder
            image, high_res = high_res_from_packed(image_embeddings,
                                                   self.model.config.prompt_embed_dim)
            masks, iou, _, _ = dec.predict_masks(image, image_pe, sparse, dense, high_res)
            single, single_iou = dec._most_stable(masks, iou)
            low = torch.cat([single, masks[:, 1:]], 1)
            iou = torch.cat([single_iou, iou[:, 1:]], 1)
        else:
            low, iou = self.model.mask_decoder.predict_masks(image_embeddings, image_pe,
                                                             sparse, dense)
        return self._upscale(low, orig_im_size), iou, low

    def _upscale(self, low, orig_im_size):
        hw = orig_im_size.to(torch.int64)
        if self.sam2:  # the low-res logits cover the whole (square-resized) image
            return F.interpolate(low, size=(hw[0], hw[1]), mode="bilinear", align_corners=False)
        s = self.size
        x = F.interpolate(low, size=(s, s), mode="bilinear", align_corners=False)
        inner = torch.floor(orig_im_size * (s / orig_im_size.max()) + 0.5).to(torch.int64)
        x = x[..., :inner[0], :inner[1]]
        return F.interpolate(x, size=(hw[0], hw[1]), mode="bilinear", align_corners=False)


class EncoderGraph(nn.Module):
    """SAM 2.1 image encoder: (1, 3, S, S) 0-255 pixels -> packed embedding.

    Parameters
    ----------
    model : Sam2
        The SAM 2.1 model whose image encoder is traced.
    """

    def __init__(self, model: Sam2) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixels):
        """Embed one image.

        Parameters
        ----------
        pixels : Tensor, (1, 3, S, S) float32
            The image resized to S x S (`Sam2.to_input`), values 0-255.

        Returns
        -------
        Tensor, (1, C, g, g) float32
            The packed embedding (`image_embeddings` of `decoder.onnx`).
        """
        return self.model.encode(pixels)


def example_inputs(model, n_points: int = 2) -> Tuple[torch.Tensor, ...]:
    """Inputs of the right shapes and dtypes for tracing and tests.

    Parameters
    ----------
    model : Sam or Sam2
        The model (its embedding, mask and input sizes).
    n_points : int
        Number of prompt points.

    Returns
    -------
    tuple of Tensor
        The six `decoder.onnx` inputs in `INPUTS` order, float32, random but seeded.
    """
    c, g, _ = model.embedding_shape
    m, s = model.config.mask_size, model.config.image_size
    gen = torch.Generator().manual_seed(0)
    return (torch.randn(1, c, g, g, generator=gen),
            torch.rand(1, n_points, 2, generator=gen) * s,
            torch.tensor([[1.0] + [0.0] * (n_points - 1)]),
            torch.randn(1, 1, m, m, generator=gen), torch.tensor([1.0]),
            torch.tensor([float(s) * 0.75, float(s)]))


def _trace_to_bytes(graph: nn.Module, args, input_names, output_names, dynamic, opset) -> bytes:
    buf = io.BytesIO()
    with torch.no_grad():
        torch.onnx.export(graph, args, buf, dynamo=False, opset_version=opset,
                          input_names=list(input_names), output_names=list(output_names),
                          dynamic_axes=dynamic, do_constant_folding=True)
    return buf.getvalue()


def export_onnx(model, out_dir, overwrite: bool = False, opset: int = OPSET) -> Dict[str, Path]:
    """Write `decoder.onnx`, `encoder.onnx` (SAM 2.1 only) and `model.json` into `out_dir`
    (created if needed; existing files are kept unless `overwrite`). Returns their paths.

    Parameters
    ----------
    model : Sam or Sam2
        A loaded napari-sam model (moved to CPU).
    out_dir : str or Path
        The output folder.
    overwrite : bool
        Replace existing files (else an error when one exists).
    opset : int
        The ONNX opset version.

    Returns
    -------
    dict of str to Path
        File name -> path of each file written.
    """
    from .io.atomic import atomic_write, check_writable

    if not isinstance(model, (Sam, Sam2)):
        raise ValueError(f"cannot export a {type(model).__name__}: give a loaded napari-sam model")
    model = model.cpu().eval()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sam2 = isinstance(model, Sam2)
    names = ["decoder.onnx"] + (["encoder.onnx"] if sam2 else []) + ["model.json"]
    for n in names:  # refuse before any work, so nothing is half-written
        check_writable(out / n, overwrite)
    blobs = {"decoder.onnx": _trace_to_bytes(
        DecoderGraph(model), example_inputs(model), INPUTS, OUTPUTS,
        {"point_coords": {1: "num_points"}, "point_labels": {1: "num_points"},
         "masks": {2: "rows", 3: "columns"}}, opset)}
    if sam2:
        s = model.config.image_size
        blobs["encoder.onnx"] = _trace_to_bytes(
            EncoderGraph(model), (torch.zeros(1, 3, s, s),), ("pixels",),
            ("image_embeddings",), None, opset)
    cfg = model.config
    meta = {"format": "napari-sam-onnx", "model": getattr(cfg, "name", "?"),
            "family": "sam2.1" if sam2 else "sam", "image_size": cfg.image_size,
            "mask_size": cfg.mask_size, "embedding_shape": list(model.embedding_shape),
            "resize": "square, antialiased bilinear" if sam2 else
                      "longest side to image_size, antialiased bilinear, zero-pad after normalising",
            "pixel_mean": list(cfg.pixel_mean), "pixel_std": list(cfg.pixel_std),
            "padding_point": "always" if sam2 else "only without a box",
            "outputs": "0: single mask, 1-3: multimask", "opset": opset}
    blobs["model.json"] = json.dumps(meta, indent=1).encode()
    paths = {}
    for n in names:
        with atomic_write(out / n, overwrite=overwrite) as f:
            f.write(blobs[n])
        paths[n] = out / n
    return paths


def onnx_prompts(model, original_size, points=None, point_labels=None, box=None,
                 mask_input=None) -> Dict[str, np.ndarray]:
    """The decoder's inputs (all but `image_embeddings`) for prompts in the image's (row,
    col) pixels, as `Predictor` builds them: points (N, 2), labels 1/0 (default 1), box
    (row0, col0, row1, col1), mask_input (m, m) low-res logits of an earlier answer.

    Parameters
    ----------
    model : Sam or Sam2
        The exported model.
    original_size : (int, int)
        The image's (rows, columns).
    points : array_like, (N, 2) float, optional
        Points, (row, col) image pixels.
    point_labels : array_like, (N,), optional
        1 object, 0 background (None: all 1).
    box : array_like, (4,), optional
        (row0, col0, row1, col1) in image pixels.
    mask_input : array_like, (m, m) float, optional
        Low-res logits of an earlier answer.

    Returns
    -------
    dict of str to ndarray
        "point_coords" (1, K, 2) float32 (x, y) model-input pixels, "point_labels" (1, K)
        float32, "mask_input" (1, 1, m, m) float32, "has_mask_input" (1,) float32 and
        "orig_im_size" (2,) float32 (rows, columns).
    """
    h, w = (int(v) for v in original_size)
    ih, iw = model.input_hw(h, w)
    scale = np.array([iw / w, ih / h])
    xy, lab = [], []
    if points is not None:
        p = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        xy.append(rc_to_xy(p) * scale)
        lab.append(np.ones(len(p)) if point_labels is None else np.asarray(point_labels, float))
    if box is not None:
        xy.append(box_rc_to_xyxy(box).reshape(2, 2) * scale)
        lab.append(np.array([2.0, 3.0]))
        if isinstance(model, Sam2):  # SAM 2: the box corners come first
            xy, lab = xy[::-1], lab[::-1]
    if box is None or isinstance(model, Sam2):
        xy.append(np.zeros((1, 2)))
        lab.append(np.array([-1.0]))
    m = model.config.mask_size
    has = mask_input is not None
    mask = (np.asarray(mask_input, np.float32).reshape(1, 1, m, m) if has
            else np.zeros((1, 1, m, m), np.float32))
    return {"point_coords": np.concatenate(xy)[None].astype(np.float32),
            "point_labels": np.concatenate(lab)[None].astype(np.float32),
            "mask_input": mask, "has_mask_input": np.array([float(has)], np.float32),
            "orig_im_size": np.array([h, w], np.float32)}
