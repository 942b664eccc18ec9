"""SAM 2's mask decoder: SAM's two-way transformer plus an object-score token and the
encoder's stride-4 and stride-8 features added while the mask embedding is upsampled.

Keys follow Meta's checkpoints (`sam_mask_decoder.*`). The transformer is the SAM one in
`..transformer` (same weights, its MLP named `mlp.layers.*`).
"""

from __future__ import annotations

from typing import List, Optional, Tuple

import torch
from torch import nn
import torch.nn.functional as F

from ..common import MLP, LayerNorm2d
from ..transformer import TwoWayTransformer


class Sam2MaskDecoder(nn.Module):
    """SAM 2's mask decoder (Meta's keys, `sam_mask_decoder.*`).

    Parameters
    ----------
    dim : int
        C, the token and embedding channels.
    depth, heads, mlp_dim : int
        Two-way transformer blocks, attention heads and MLP hidden features.
    num_multimask_outputs, iou_head_hidden_dim : int
        Masks in multimask mode; hidden features of the IoU head.
    stability_delta, stability_thresh : float
        Single-mask fallback to the best multimask output (see `forward`).
    """

    def __init__(self, dim: int, depth: int, heads: int, mlp_dim: int,
                 num_multimask_outputs: int = 3, iou_head_hidden_dim: int = 256,
                 stability_delta: float = 0.05, stability_thresh: float = 0.98) -> None:
        super().__init__()
        self.num_mask_tokens = num_multimask_outputs + 1
        self.transformer = TwoWayTransformer(depth, dim, heads, mlp_dim, mlp_layers_keys=True)
        self.iou_token = nn.Embedding(1, dim)
        self.mask_tokens = nn.Embedding(self.num_mask_tokens, dim)
        self.obj_score_token = nn.Embedding(1, dim)
        self.output_upscaling = nn.Sequential(
            nn.ConvTranspose2d(dim, dim // 4, 2, stride=2), LayerNorm2d(dim // 4), nn.GELU(),
            nn.ConvTranspose2d(dim // 4, dim // 8, 2, stride=2), nn.GELU(),
        )
        # applied by the model to the encoder's stride-4 / stride-8 features (see Sam2.encode)
        self.conv_s0 = nn.Conv2d(dim, dim // 8, 1)
        self.conv_s1 = nn.Conv2d(dim, dim // 4, 1)
        self.output_hypernetworks_mlps = nn.ModuleList(
            MLP(dim, dim, dim // 8, 3) for _ in range(self.num_mask_tokens))
        self.iou_prediction_head = MLP(dim, iou_head_hidden_dim, self.num_mask_tokens, 3)
        self.pred_obj_score_head = MLP(dim, dim, 1, 3)
        # one mask asked for: fall back to the best of the multimask outputs when the
        # single-mask output is unstable (SAM 2.1's inference setting)
        self.stability_delta = stability_delta
        self.stability_thresh = stability_thresh

    def forward(self, image: torch.Tensor, image_pe: torch.Tensor, sparse: torch.Tensor,
                dense: torch.Tensor, high_res: List[torch.Tensor], multimask: bool,
                shared_dense: bool = False):
        """image: (1 or B, C, g, g); image_pe (1, C, g, g); sparse (B, N, C); dense (1 or B,
        C, g, g); high_res: [(1 or B, C/8, 4g, 4g), (1 or B, C/4, 2g, 2g)] (after conv_s0,
        conv_s1).

        Returns mask logits (B, K, 4g, 4g), IoU predictions (B, K) (K = 3 with
        `multimask`, else 1), the output token(s) for the object pointer (B, K or 1, C) and
        object-score logits (B, 1).

        Parameters
        ----------
        image : Tensor, (1 or B, C, g, g) float
        image_pe : Tensor, (1, C, g, g)
        sparse : Tensor, (B, N, C)
        dense : Tensor, (1 or B, C, g, g)
        high_res : list of 2 Tensor
            (1 or B, C/8, 4g, 4g) and (1 or B, C/4, 2g, 2g).
        multimask : bool
            The three multimask outputs; else one mask (in eval mode the single-mask output
            or, where it is unstable, the best multimask output).
        shared_dense : bool
            Every row of `dense` is the same.

        Returns
        -------
        masks : Tensor, (B, K, 4g, 4g)
        iou : Tensor, (B, K)
            In 0..1.
        ptr_tokens : Tensor, (B, K, C) or (B, 1, C)
        obj : Tensor, (B, 1)
        """
        masks, iou, tokens, obj = self.predict_masks(image, image_pe, sparse, dense, high_res,
                                                     shared_dense)
        if multimask:
            masks, iou = masks[:, 1:], iou[:, 1:]
            ptr_tokens = tokens[:, 1:]
        else:
            if self.training:
                masks, iou = masks[:, :1], iou[:, :1]
            else:
                masks, iou = self._most_stable(masks, iou)
            ptr_tokens = tokens[:, :1]
        return masks, iou, ptr_tokens, obj

    def predict_masks(self, image, image_pe, sparse, dense, high_res, shared_dense=False):
        """All 1 + num_multimask_outputs masks, without the single-mask selection.

        Parameters
        ----------
        image, image_pe, sparse, dense, high_res, shared_dense
            As in `forward`.

        Returns
        -------
        masks : Tensor, (B, K+1, 4g, 4g)
            Logits; index 0 is the single-mask output.
        iou : Tensor, (B, K+1)
            Predicted IoU in 0..1.
        mask_tokens : Tensor, (B, K+1, C)
            The mask tokens after the transformer.
        obj : Tensor, (B, 1)
            Object-score logits.

        Raises
        ------
        ValueError
            If there are neither 1 nor B image embeddings.
        """
        b = sparse.shape[0]
        out_tokens = torch.cat([self.obj_score_token.weight, self.iou_token.weight,
                                self.mask_tokens.weight], dim=0)
        tokens = torch.cat([out_tokens[None].expand(b, -1, -1).to(sparse.dtype), sparse], dim=1)
        if image.shape[0] not in (1, b):
            raise ValueError(f"{image.shape[0]} image embeddings for {b} prompts")
        _, c, h, w = image.shape
        if shared_dense and image.shape[0] == 1:
            src = image + dense[:1]  # one image and dense prompt shared by all prompts
        else:
            src = image + dense
            if src.shape[0] != b:
                src = src.expand(b, -1, -1, -1)
        hs, keys = self.transformer(src, image_pe[:1], tokens)
        iou_out, mask_out = hs[:, 1], hs[:, 2:2 + self.num_mask_tokens]
        feat_s0, feat_s1 = high_res
        dc1, ln1, act1, dc2, act2 = self.output_upscaling
        x = keys.transpose(1, 2).reshape(b, c, h, w)
        x = act1(ln1(dc1(x) + feat_s1))
        x = act2(dc2(x) + feat_s0)
        mlps = self.output_hypernetworks_mlps
        hyper = torch.stack([mlps[i](mask_out[:, i]) for i in range(self.num_mask_tokens)], 1)
        _, cu, hu, wu = x.shape
        masks = (hyper @ x.reshape(b, cu, hu * wu).to(hyper.dtype)).reshape(b, -1, hu, wu)
        iou = torch.sigmoid(self.iou_prediction_head(iou_out))
        obj = self.pred_obj_score_head(hs[:, 0])
        return masks, iou, mask_out, obj

    def _most_stable(self, masks: torch.Tensor, iou: torch.Tensor
                     ) -> Tuple[torch.Tensor, torch.Tensor]:
        """The single-mask output (token 0) where its stability score (area above +delta
        over area above -delta) reaches the threshold, else the multimask output with the
        best predicted IoU."""
        single, single_iou = masks[:, :1], iou[:, :1]
        flat = single.flatten(-2)
        inter = (flat > self.stability_delta).sum(-1).float()
        union = (flat > -self.stability_delta).sum(-1).float()
        stable = torch.where(union > 0, inter / union, torch.ones_like(inter)) >= self.stability_thresh
        best = iou[:, 1:].argmax(-1)
        rows = torch.arange(masks.shape[0], device=masks.device)
        best_masks = masks[:, 1:][rows, best][:, None]
        best_iou = iou[:, 1:][rows, best][:, None]
        return (torch.where(stable[..., None, None], single, best_masks),
                torch.where(stable, single_iou, best_iou))


def high_res_from_packed(packed: torch.Tensor, dim: int) -> Tuple[torch.Tensor, List[torch.Tensor]]:
    """Split a packed (B, C', g, g) embedding (see `Sam2.encode`) into the stride-16 image
    embedding (B, dim, g, g) and [stride-4 (B, dim/8, 4g, 4g), stride-8 (B, dim/4, 2g, 2g)].

    Parameters
    ----------
    packed : Tensor, (B, C', g, g)
        C' = `Sam2Config.embedding_channels`.
    dim : int
        The image embedding's channels (prompt_embed_dim).

    Returns
    -------
    image : Tensor, (B, dim, g, g)
    high_res : list of 2 Tensor
        (B, dim/8, 4g, 4g) and (B, dim/4, 2g, 2g), the order `Sam2MaskDecoder` reads.
    """
    c1, c0 = 4 * (dim // 4), 16 * (dim // 8)
    image, s1, s0 = packed.split([dim, c1, c0], dim=1)
    return image, [F.pixel_shuffle(s0, 4), F.pixel_shuffle(s1, 2)]


def pack(image: torch.Tensor, s0: torch.Tensor, s1: torch.Tensor) -> torch.Tensor:
    """Inverse of `high_res_from_packed`: the finer levels folded into the g x g grid
    (pixel unshuffle), concatenated after the image embedding along channels.

    Parameters
    ----------
    image : Tensor, (B, dim, g, g)
    s0 : Tensor, (B, dim/8, 4g, 4g)
        Stride-4 features (after conv_s0).
    s1 : Tensor, (B, dim/4, 2g, 2g)
        Stride-8 features (after conv_s1).

    Returns
    -------
    Tensor, (B, dim + dim + 2*dim, g, g)
        Channels: image, s1 unshuffled, s0 unshuffled.
    """
    return torch.cat([image, F.pixel_unshuffle(s1, 2), F.pixel_unshuffle(s0, 4)], dim=1)


def select_best(masks: torch.Tensor, iou: torch.Tensor, extra: Optional[torch.Tensor] = None):
    """The output with the highest predicted IoU per row: (B, K, ...) -> (B, 1, ...).

    Parameters
    ----------
    masks : Tensor, (B, K, H, W)
    iou : Tensor, (B, K)
    extra : Tensor, (B, K, ...) or (B, 1, ...), optional
        Selected alongside (e.g. the pointer tokens); with one entry that one is taken.

    Returns
    -------
    tuple of Tensor
        masks (B, 1, H, W), iou (B, 1), then, when `extra` is given, extra (B, ...).
    """
    rows = torch.arange(masks.shape[0], device=masks.device)
    best = iou.argmax(-1)
    out = (masks[rows, best][:, None], iou[rows, best][:, None])
    return out + ((extra[rows, best] if extra.shape[1] > 1 else extra[:, 0],)
                  if extra is not None else ())
