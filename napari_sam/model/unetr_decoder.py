"""micro-sam's instance decoder: the convolutional half of a UNETR on the SAM embedding.

micro-sam's light-microscopy and EM checkpoints carry it as `decoder_state`; it predicts
three maps at input resolution (foreground, distance to the object centre, distance to the
object boundary: see `instance_head` for their meaning). Module and parameter names follow
that state dict, so it loads with `load_state_dict` as is (under the prefix
`instance_decoder.` inside `Sam`).

Layout (micro-sam's `get_unetr` without skip connections; F = initial features, 64, and
widths F*8, F*4, F*2, F from coarse to fine; g = the embedding grid):

- a chain of four upsampling blocks from the embedding: ``deconv1`` (2g, 8F channels),
  ``deconv2`` (4g, 4F), ``deconv3`` (8g, 2F), ``deconv4`` (16g, F); each is an upsampler
  (bilinear x2 + 1x1 conv, or a 2x2 transposed conv), a 3x3 conv, batch norm and ReLU;
- ``base`` (embedding -> 8F at g) and three ``decoder`` levels, each an upsampler and a
  conv block on the concatenation with the matching ``deconv`` output; that output is
  narrowed to the middle channels of the needed width (torch-em's decoder crops every
  axis after the batch axis, the channel axis included, to the shape of the upsampled
  features);
- ``deconv_out`` (x2), concatenation with ``deconv4``'s output, ``decoder_head`` and the
  1x1 ``out_conv`` to three channels. micro-sam applies a sigmoid; `forward` returns the
  values before it (logits), which `napari_sam.automask.ais.maps_from_logits` turns into maps.

Conv blocks are (instance norm, 3x3 conv, ReLU) twice; the instance norms have no weights.
The upsampling blocks' batch norms use each image's statistics, as micro-sam runs them
(see `UNETRDecoder`).
"""

from __future__ import annotations

from typing import Dict, Sequence

import torch
from torch import nn
import torch.nn.functional as F

KINDS = ("unetr", "unetr_transpose")  # bilinear + 1x1 conv, or transposed-conv upsampling


def decoder_kind(state: Dict[str, torch.Tensor], prefix: str = "") -> str:
    """"unetr_transpose" if the state dict's decoder upsamplers are transposed convolutions
    (micro-sam's rule: a `.block.` parameter under `decoder.samplers`), else "unetr".

    Parameters
    ----------
    state : dict of str to Tensor
        A decoder state dict (micro-sam's `decoder_state`, or a model's with `prefix`).
    prefix : str
        Prepended to the decoder's key names (e.g. "instance_decoder.").

    Returns
    -------
    str
        "unetr" or "unetr_transpose".
    """
    p = prefix + "decoder.samplers"
    return "unetr_transpose" if any(".block." in k for k in state if k.startswith(p)) \
        else "unetr"


def decoder_features(state: Dict[str, torch.Tensor], prefix: str = "") -> int:
    """Initial features F of a decoder state dict (out_conv's input channels).

    Parameters
    ----------
    state : dict of str to Tensor
    prefix : str
        As in `decoder_kind`.

    Returns
    -------
    int
    """
    return int(state[prefix + "out_conv.weight"].shape[1])


class _Interp(nn.Module):
    """x2 bilinear upsampling (align_corners=False), then a 1x1 conv."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False))


class _Transpose(nn.Module):
    """x2 upsampling by a 2x2, stride-2 transposed conv."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.block = nn.ConvTranspose2d(cin, cout, 2, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class _Conv3(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.block = nn.Conv2d(cin, cout, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class _ConvBlock(nn.Module):
    """(instance norm, 3x3 conv, ReLU) x 2."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.block = nn.Sequential(
            nn.InstanceNorm2d(cin), nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU(inplace=True),
            nn.InstanceNorm2d(cout), nn.Conv2d(cout, cout, 3, padding=1), nn.ReLU(inplace=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class _UpBlock(nn.Module):
    """Upsampler, 3x3 conv, batch norm, ReLU (torch-em's Deconv2DBlock). The batch norm
    normalises with each image's own statistics when `batch_statistics` (see
    `UNETRDecoder`), else with the stored running statistics."""

    def __init__(self, cin: int, cout: int, up: type) -> None:
        super().__init__()
        self.block = nn.Sequential(up(cin, cout), _Conv3(cout, cout), nn.BatchNorm2d(cout),
                                   nn.ReLU(inplace=True))
        self.batch_statistics = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        up, conv, bn, act = self.block
        x = conv(up(x))
        if not self.batch_statistics:
            return act(bn(x))
        if x.shape[0] == 1:  # exactly what batch norm in training mode computes
            x = F.batch_norm(x, None, None, bn.weight, bn.bias, True, 0.0, bn.eps)
        else:  # per image, so that tiles do not depend on each other
            x = F.instance_norm(x, None, None, bn.weight, bn.bias, True, 0.0, bn.eps)
        return act(x)


class _Levels(nn.Module):
    """The decoder levels: upsample, concatenate the narrowed skip features, conv block."""

    def __init__(self, widths: Sequence[int], up: type) -> None:
        super().__init__()
        pairs = list(zip(widths[:-1], widths[1:]))
        self.blocks = nn.ModuleList(_ConvBlock(cin, cout) for cin, cout in pairs)
        self.samplers = nn.ModuleList(up(cin, cout) for cin, cout in pairs)

    def forward(self, x: torch.Tensor, skips: Sequence[torch.Tensor]) -> torch.Tensor:
        for block, sampler, skip in zip(self.blocks, self.samplers, skips):
            x = sampler(x)
            c = x.shape[1]
            start = (skip.shape[1] - c) // 2  # the middle channels, as torch-em crops them
            x = block(torch.cat([x, skip[:, start: start + c]], 1))
        return x


class UNETRDecoder(nn.Module):
    """embed_dim: the embedding's channels (256 for SAM); features: F (64 in micro-sam);
    kind: "unetr" (bilinear) or "unetr_transpose"; out_channels: 3.

    Batch norm: micro-sam 1.8 never puts its decoder in eval mode (`get_unetr`,
    `get_decoder` and the segmenters leave it in training mode), so its four batch norms
    normalise with the statistics of the image being segmented, and the running statistics
    stored in `decoder_state` go unused. This module does the same by default, per image
    (`batch_statistics = True`, identical to micro-sam for its batch of one); set
    `use_running_statistics(True)` to normalise with the stored statistics instead.

    Parameters
    ----------
    embed_dim : int
        C, the embedding's channels.
    features : int
        F, the finest level's channels.
    kind : str
        "unetr" (bilinear + 1x1 conv upsampling) or "unetr_transpose" (transposed convs).
    out_channels : int
        Output maps.
    """

    def __init__(self, embed_dim: int, features: int = 64, kind: str = "unetr",
                 out_channels: int = 3) -> None:
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"unknown UNETR decoder kind {kind!r}; expected one of {KINDS}")
        up = _Transpose if kind == "unetr_transpose" else _Interp
        w = [features * 8, features * 4, features * 2, features]
        self.base = _ConvBlock(embed_dim, w[0])
        self.decoder = _Levels(w, up)
        self.deconv1 = _UpBlock(embed_dim, w[0], up)
        self.deconv2 = _UpBlock(w[0], w[1], up)
        self.deconv3 = _UpBlock(w[1], w[2], up)
        self.deconv4 = _UpBlock(w[2], w[3], up)
        self.deconv_out = up(w[3], w[3])
        self.decoder_head = _ConvBlock(2 * w[3], w[3])
        self.out_conv = nn.Conv2d(w[3], out_channels, 1)

    def use_running_statistics(self, on: bool = True) -> "UNETRDecoder":
        """Batch norm with the stored running statistics (on) or, as micro-sam, with each
        image's own (off, the default).

        Parameters
        ----------
        on : bool

        Returns
        -------
        UNETRDecoder
            The module itself.
        """
        for m in (self.deconv1, self.deconv2, self.deconv3, self.deconv4):
            m.batch_statistics = not on
        return self

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        """embeddings (B, C, g, g) -> logits (B, 3, 16g, 16g) (before micro-sam's sigmoid).

        Parameters
        ----------
        embeddings : Tensor, (B, C, g, g) float

        Returns
        -------
        Tensor, (B, out_channels, 16g, 16g)
            Foreground, centre-distance and boundary-distance logits.
        """
        z9 = self.deconv1(embeddings)
        z6 = self.deconv2(z9)
        z3 = self.deconv3(z6)
        z0 = self.deconv4(z3)
        x = self.decoder(self.base(embeddings), (z9, z6, z3))
        x = self.decoder_head(torch.cat([self.deconv_out(x), z0], 1))
        return self.out_conv(x)
