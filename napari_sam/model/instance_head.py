"""A small instance head for the bundled model: three maps from one pass.

The head reads the image embedding (B, C, g, g) and the normalised, padded model input
(B, 3, S, S), and predicts three maps at input resolution (B, 3, S, S), each in 0..1 after
a sigmoid, with the meaning micro-sam's instance decoders give them:

- channel 0, ``foreground``: probability that a pixel belongs to any object;
- channel 1, ``center_distances``: distance to the object's centre, divided by the largest
  such distance inside the object (0 at the centre, about 1 at the far edge; 1 outside);
- channel 2, ``boundary_distances``: 1 - distance to the object's edge divided by the
  largest such distance inside the object (0 deepest inside, 1 at the edge and outside).

Seeds are where both distances are small; a watershed on the boundary distances grows them
within the foreground (`napari_sam.automask.ais`). The layout is a light U-Net decoder: the
embedding is upsampled three times (stride 8 -> 1) and joined at each scale with features
computed from the input image by a few strided convolutions, so edges stay sharp.
"""

from __future__ import annotations

from typing import Dict, Sequence

import numpy as np

import torch
from torch import nn
import torch.nn.functional as F

MAP_NAMES = ("foreground", "center_distances", "boundary_distances")


def _conv(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    groups = 8 if cout % 8 == 0 else 1
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False),
                         nn.GroupNorm(groups, cout), nn.GELU())


class InstanceHead(nn.Module):
    """The three-map instance head (see the module docstring).

    Parameters
    ----------
    embed_dim : int
        The image embedding's channels.
    widths : sequence of int
        Channels at strides 8, 4, 2, 1 (e.g. (64, 48, 32, 16)): log2(stride) + 1 of them.
    stride : int
        The encoder's (8 for the bundled model, a power of 2).
    """

    def __init__(self, embed_dim: int, widths: Sequence[int], stride: int = 8) -> None:
        super().__init__()
        levels = stride.bit_length() - 1  # 3 upsampling steps for stride 8
        if 2 ** levels != stride or len(widths) != levels + 1:
            raise ValueError(f"need a power-of-two stride and {levels + 1} widths, got "
                             f"stride {stride}, widths {tuple(widths)}")
        w = list(widths)
        self.bottom = nn.Sequential(_conv(embed_dim, w[0]), _conv(w[0], w[0]))
        # image features at strides 1, 2, 4, ... (finest first), widths from the finest level
        skip_w = w[::-1][: levels]
        skips, cin = [], 3
        for i, cout in enumerate(skip_w):
            skips.append(_conv(cin, cout, 1 if i == 0 else 2))
            cin = cout
        self.skips = nn.ModuleList(skips)
        # decoder steps from stride `stride` down to 1
        ups = []
        for i in range(levels):
            cin, cskip, cout = w[i], skip_w[levels - 1 - i], w[i + 1]
            ups.append(nn.Sequential(_conv(cin + cskip, cout), _conv(cout, cout)))
        self.ups = nn.ModuleList(ups)
        self.out = nn.Conv2d(w[-1], len(MAP_NAMES), 1)

    def forward(self, embeddings: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        """embeddings (B, C, g, g), image (B, 3, S, S) normalised -> logits (B, 3, S, S).

        Parameters
        ----------
        embeddings : Tensor, (B, C, g, g) float
            Image embedding, g = S / stride.
        image : Tensor, (B, 3, S, S) float
            The normalised, padded model input.

        Returns
        -------
        Tensor, (B, 3, S, S)
            Logits of the maps in `MAP_NAMES` order (before the sigmoid), dtype of the
            computation.
        """
        # channels-last activations: oneDNN's convolutions run about twice as fast on the CPU
        # in that layout (fp32 and bf16); the values are the same up to rounding
        cl = torch.channels_last
        feats, x = [], image.contiguous(memory_format=cl)
        embeddings = embeddings.contiguous(memory_format=cl)
        for conv in self.skips:
            x = conv(x)
            feats.append(x)
        y = self.bottom(embeddings)
        for up, skip in zip(self.ups, reversed(feats)):
            y = F.interpolate(y, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            y = up(torch.cat([y, skip.to(y.dtype)], 1))
        return self.out(y)


def maps_from_logits(logits: torch.Tensor, input_hw, original_hw) -> Dict[str, np.ndarray]:
    """(1, 3, S, S) head logits in the model's padded input frame -> dict of (Y, X) float32
    maps (`foreground`, `center_distances`, `boundary_distances`) at the image's size:
    sigmoid, crop to the (h, w) image area, bilinear resize to `original_hw` (Y, X).

    Parameters
    ----------
    logits : Tensor, (1, 3, S, S)
        Output of `InstanceHead.forward` (or an equivalent decoder).
    input_hw : (int, int)
        (rows, cols) of the image inside the padded input frame.
    original_hw : (int, int)
        (rows, cols) of the original image.

    Returns
    -------
    dict of str to ndarray, (Y, X) float32
        Maps in 0..1 keyed by `MAP_NAMES`, C-contiguous, on the CPU.
    """
    p = logits.float().sigmoid()[..., : input_hw[0], : input_hw[1]]
    if tuple(p.shape[-2:]) != tuple(original_hw):
        p = F.interpolate(p, tuple(original_hw), mode="bilinear", align_corners=False)
    p = p[0].cpu().numpy()
    return {name: np.ascontiguousarray(p[i]) for i, name in enumerate(MAP_NAMES)}
