"""The Predictor's tensor API in the model's input frame: batched prompts -> low-res logits,
and low-res logits -> masks at the image's size.

A mixin of `predictor.Predictor` (which holds `model`, `device`, `session`, `decode_chunk`,
`decoder_dtype` and the embedding of the current image). `Predictor.predict` answers one
object in numpy and (row, col) image pixels; automask, the tiled and volume code decode many
prompts at once through these methods instead.
"""

from __future__ import annotations

from typing import Optional, Tuple

import numpy as np
import torch

from .device import autocast
from .transforms import box_rc_to_xyxy, rc_to_xy


class LowResPrompts:
    """points_to_input, box_to_input, predict_lowres, upscale, upscale_masks (see Predictor).

    Parameters
    ----------
    None
        A mixin with no constructor of its own: `Predictor.__init__` sets the `model`,
        `device`, `session`, `decode_chunk` and `decoder_dtype` it uses.
    """

    def _scale(self) -> np.ndarray:
        emb = self.get_embedding()
        return np.array([emb.input_size[1] / emb.original_size[1],
                         emb.input_size[0] / emb.original_size[0]])

    def points_to_input(self, points_rc) -> torch.Tensor:
        """Points in image pixels -> the model's input frame.

        Parameters
        ----------
        points_rc : array-like, (N, 2) float
            (row, col) in pixels of the current image.

        Returns
        -------
        xy : Tensor, (N, 2) float32
            (x, y) in model-input pixels, on the Predictor's device.
        """
        return torch.as_tensor(rc_to_xy(points_rc) * self._scale(), dtype=torch.float32,
                               device=self.device)

    def box_to_input(self, box_rc) -> torch.Tensor:
        """A box in image pixels -> the model's input frame.

        Parameters
        ----------
        box_rc : array-like, (4,) float
            (row0, col0, row1, col1) in pixels of the current image, corners in any order.

        Returns
        -------
        xyxy : Tensor, (1, 4) float32
            (x0, y0, x1, y1) in model-input pixels, x0 <= x1 and y0 <= y1.
        """
        xyxy = box_rc_to_xyxy(box_rc) * np.tile(self._scale(), 2)
        return torch.as_tensor(xyxy, dtype=torch.float32, device=self.device)

    @torch.no_grad()
    def predict_lowres(self, xy: Optional[torch.Tensor], labels: Optional[torch.Tensor],
                       boxes: Optional[torch.Tensor] = None, mask_input=None, multimask=True
                       ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Batched prompts in the model's input frame -> low-res logits and scores.

        On CPU the prompts are decoded `decode_chunk` at a time: every prompt carries its
        own copy of the image tokens through the decoder.

        Parameters
        ----------
        xy : Tensor, (B, N, 2) float32, or None
            Points (x, y) in the input frame (`points_to_input`); batch 1 is shared by all.
        labels : Tensor, (B, N) int64, or None
            1 (object) or 0 (background) per point.
        boxes : Tensor, (B, 4) float32, optional
            (x0, y0, x1, y1) in the input frame (`box_to_input`).
        mask_input : Tensor, (B, 1, m, m) float32, optional
            Low-res logits of earlier predictions.
        multimask : bool
            K = 3 masks per prompt (True) or 1.

        Returns
        -------
        logits : Tensor, (B, K, m, m) float32
            Low-res mask logits (m = `model.config.mask_size`).
        scores : Tensor, (B, K) float32
            Predicted IoU per mask.
        """
        emb = self.get_embedding()
        n = next((t.shape[0] for t in (xy, boxes, mask_input) if t is not None), 1)
        step = self.decode_chunk or n

        def part(t, s):  # a batch-1 tensor is shared by all prompts (broadcast), as before
            return None if t is None else t if t.shape[0] == 1 else t[s:s + step]

        outs = []
        with self.session, autocast(self.device, self.decoder_dtype):
            for s in range(0, n, step):
                pts = None if xy is None else (part(xy, s), part(labels, s))
                outs.append(self.model.decode(emb.features, pts, part(boxes, s),
                                              part(mask_input, s), multimask))
        if len(outs) == 1:
            return outs[0][0].float(), outs[0][1].float()
        return torch.cat([o[0] for o in outs]).float(), torch.cat([o[1] for o in outs]).float()

    def upscale(self, logits: torch.Tensor) -> torch.Tensor:
        """Low-res logits -> logits at the image's size.

        Parameters
        ----------
        logits : Tensor, (B, K, m, m) float

        Returns
        -------
        Tensor, (B, K, Y, X) float
        """
        emb = self.get_embedding()
        return self.model.upscale_logits(logits, emb.input_size, emb.original_size)

    def upscale_masks(self, logits: torch.Tensor, threshold: float = 0.0) -> torch.Tensor:
        """Low-res logits -> bool masks at the image's size: `upscale(logits) > threshold`,
        computed only inside each mask's box.

        Parameters
        ----------
        logits : Tensor, (..., m, m) float
        threshold : float
            Logit cut-off.

        Returns
        -------
        Tensor, (..., Y, X) bool
        """
        return self._upscaler().masks(logits, threshold)

    def _upscaler(self):
        emb = self.get_embedding()
        with self.session:
            return self.model.mask_upscaler(emb.input_size, emb.original_size)

    def _masks_numpy(self, logits: torch.Tensor, threshold: float = 0.0) -> np.ndarray:
        """`upscale_masks(logits, threshold)` as a numpy array, for (K, m, m) logits on the
        CPU: the same upsampled block (`MaskUpscaler.crop`, inside the box of the low-res
        positives), thresholded by numpy straight into the output. numpy's comparison
        writes booleans about four times as fast as torch's here, and no torch bool
        intermediate is copied into the frame afterwards."""
        up = self._upscaler()
        out = np.zeros((logits.shape[0],) + tuple(up.out_hw), dtype=bool)
        for g, (r0, r1), (c0, c1), block in up.blocks(logits, threshold):
            np.greater(block.numpy(), threshold, out=out[g, r0:r1, c0:c1])
        return out
