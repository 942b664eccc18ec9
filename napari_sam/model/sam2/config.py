"""SAM 2.1 configurations as plain data, and the architecture read back from a state dict.

The four published SAM 2.1 models (tiny, small, base+, large) differ only in their Hiera
trunk; the FPN neck, prompt encoder, mask decoder, memory encoder and memory attention are
the same in all of them. A new size is a new `HieraConfig`, not new code.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field, replace
from typing import Dict, Tuple

import torch


@dataclass(frozen=True)
class HieraConfig:
    """Hiera trunk: four stages, each halving the resolution (q-pooling) and doubling the
    width and the head count; windowed attention except in `global_blocks`.

    Parameters
    ----------
    embed_dim, num_heads : int
        Width and attention heads of the first stage.
    stages : tuple of int
        Blocks per stage.
    global_blocks : tuple of int
        Indexes (over all blocks) of the blocks with global attention.
    window_spec : tuple of int
        Side of the attention windows per stage, in tokens.
    pos_embed_size : (int, int)
        (rows, cols) of the learnt background position embedding.
    mlp_ratio : float
        Hidden width of the MLPs over the block's width.
    """

    embed_dim: int = 96
    num_heads: int = 1
    stages: Tuple[int, ...] = (1, 2, 7, 2)
    global_blocks: Tuple[int, ...] = (5, 7, 9)
    window_spec: Tuple[int, ...] = (8, 4, 14, 7)
    # background position embedding (interpolated to the token grid), see Hiera._pos_embed
    pos_embed_size: Tuple[int, int] = (7, 7)
    mlp_ratio: float = 4.0

    @property
    def channels(self) -> Tuple[int, ...]:
        """Widths of the four stages' outputs, finest first."""
        return tuple(self.embed_dim * 2 ** i for i in range(len(self.stages)))


@dataclass(frozen=True)
class Sam2Config:
    """A SAM 2.1 model. Everything but `trunk` and `image_size` is fixed by the published
    configurations; the tiny test configuration below shrinks the rest too.

    Parameters
    ----------
    name : str
        The variant's name ("sam2.1_hiera_tiny", ...).
    trunk : HieraConfig
    image_size : int
        Side of the square model input, in pixels.
    prompt_embed_dim, mem_dim : int
        Channels of the neck, prompt tokens and decoder; of the memory features.
    num_maskmem : int
        Memory frames attended to (1 prompted frame + 6 recent ones).
    memory_layers, memory_ffn_dim : int
        Memory-attention layers and their feed-forward width.
    decoder_depth, decoder_heads, decoder_mlp_dim, iou_head_hidden_dim : int
        Sizes of the mask decoder.
    num_multimask_outputs, max_obj_ptrs : int
        Masks per prompt in multimask mode; object pointers attended to.
    pixel_mean, pixel_std : tuple of 3 float
        Normalisation of 0-255 RGB pixels.
    """

    name: str
    trunk: HieraConfig = field(default_factory=HieraConfig)
    image_size: int = 1024
    prompt_embed_dim: int = 256       # the neck's width and the decoder's
    mem_dim: int = 64                 # memory features
    num_maskmem: int = 7              # 1 prompted frame + 6 recent ones
    memory_layers: int = 4
    memory_ffn_dim: int = 2048
    decoder_depth: int = 2
    decoder_heads: int = 8
    decoder_mlp_dim: int = 2048
    iou_head_hidden_dim: int = 256
    num_multimask_outputs: int = 3
    max_obj_ptrs: int = 16
    pixel_mean: Tuple[float, float, float] = (123.675, 116.28, 103.53)
    pixel_std: Tuple[float, float, float] = (58.395, 57.12, 57.375)

    @property
    def embed_grid(self) -> int:
        """Side of the stride-16 image embedding the decoder reads (64 at 1024 pixels)."""
        return self.image_size // 16

    @property
    def mask_size(self) -> int:
        """Side of the low-resolution mask logits (256 at 1024 pixels)."""
        return 4 * self.embed_grid

    @property
    def image_token_values(self) -> int:
        """Values in one prompt's copy of the image tokens in the decoder."""
        return self.embed_grid ** 2 * self.prompt_embed_dim

    @property
    def embedding_channels(self) -> int:
        """Channels of the packed (C', g, g) embedding: the stride-16 features plus the
        stride-8 and stride-4 features folded into the grid (see `Sam2.encode`)."""
        d = self.prompt_embed_dim
        return d + 4 * (d // 4) + 16 * (d // 8)

    def with_(self, **changes) -> "Sam2Config":
        """A copy with some fields changed.

        Parameters
        ----------
        **changes
            Field names and their new values.

        Returns
        -------
        Sam2Config
        """
        return replace(self, **changes)


SAM21_TINY = Sam2Config("sam2.1_hiera_tiny", HieraConfig(96, 1, (1, 2, 7, 2), (5, 7, 9)))
SAM21_SMALL = Sam2Config("sam2.1_hiera_small", HieraConfig(96, 1, (1, 2, 11, 2), (7, 10, 13)))
SAM21_BASE_PLUS = Sam2Config(
    "sam2.1_hiera_base_plus",
    HieraConfig(112, 2, (2, 3, 16, 3), (12, 16, 20), pos_embed_size=(14, 14)))
SAM21_LARGE = Sam2Config(
    "sam2.1_hiera_large",
    HieraConfig(144, 2, (2, 6, 36, 4), (23, 33, 43), window_spec=(8, 4, 16, 8)))

# Tests only: every code path of the tiny model at a 256-pixel input and small widths.
TEST_SAM2 = Sam2Config(
    "test_sam2",
    HieraConfig(16, 1, (1, 1, 2, 1), (2,), window_spec=(4, 4, 4, 2), pos_embed_size=(4, 4)),
    image_size=256, prompt_embed_dim=64, mem_dim=16, memory_layers=1, memory_ffn_dim=64,
    decoder_heads=4, decoder_mlp_dim=128, iou_head_hidden_dim=64)

SAM2_CONFIGS: Dict[str, Sam2Config] = {
    c.name: c for c in (SAM21_TINY, SAM21_SMALL, SAM21_BASE_PLUS, SAM21_LARGE, TEST_SAM2)}


def is_sam2_state_dict(sd) -> bool:
    """Whether a state dict is SAM 2's (official key names: a `sam_mask_decoder`).

    Parameters
    ----------
    sd : dict of str to Tensor

    Returns
    -------
    bool
    """
    return any(k.startswith("sam_mask_decoder.") for k in sd)


def _count(sd, pattern: str) -> int:
    rx = re.compile(pattern)
    return len({m.group(1) for k in sd for m in [rx.match(k)] if m})


def infer_sam2_config(sd: Dict[str, torch.Tensor]) -> Sam2Config:
    """The architecture of a SAM 2(.1) state dict (official key names) from names and shapes.

    The weights show the trunk's width, stage depths, first window and background position
    embedding, but not its head counts, global-attention blocks or later windows: those
    are taken from the published configuration with the same visible shape. A trunk that
    matches none of them is refused with an error naming the shapes found.

    Parameters
    ----------
    sd : dict of str to Tensor
        SAM 2 state dict with the official key names.

    Returns
    -------
    Sam2Config
        One of `SAM2_CONFIGS`.

    Raises
    ------
    ValueError
        If no known configuration fits (a missing key raises KeyError).
    """
    t = "image_encoder.trunk."
    dim = sd[t + "patch_embed.proj.weight"].shape[0]
    depth = _count(sd, re.escape(t) + r"blocks\.(\d+)\.")
    # a block that changes the width (the first of stages 2-4) has its own projection
    starts = [i for i in range(depth) if t + f"blocks.{i}.proj.weight" in sd]
    bounds = [0] + starts + [depth]
    stages = tuple(b - a for a, b in zip(bounds[:-1], bounds[1:]))
    pos = tuple(sd[t + "pos_embed"].shape[-2:])
    window0 = sd[t + "pos_embed_window"].shape[-1]
    d = sd["sam_prompt_encoder.no_mask_embed.weight"].shape[1]
    g = sd["sam_prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"]
    seen = dict(embed_dim=dim, stages=stages, pos_embed_size=pos, window0=window0)
    for known in SAM2_CONFIGS.values():
        k = known.trunk
        if (dict(embed_dim=k.embed_dim, stages=k.stages, pos_embed_size=k.pos_embed_size,
                 window0=k.window_spec[0]) == seen and known.prompt_embed_dim == d
                and g.shape[1] * 2 == d):
            mem = sd["maskmem_tpos_enc"].shape
            layers = _count(sd, r"memory_attention\.layers\.(\d+)\.")
            if (mem[0], mem[-1], layers) == (known.num_maskmem, known.mem_dim, known.memory_layers):
                return known
    raise ValueError(
        f"a SAM 2 state dict whose Hiera trunk (width {dim}, stages {stages}, position "
        f"embedding {pos}, first window {window0}) or memory matches none of the known "
        f"configurations ({', '.join(SAM2_CONFIGS)})")


def sam2_config_to_dict(cfg: Sam2Config) -> dict:
    """Plain dict (str/int/float/list only) that can be stored inside a checkpoint.

    Parameters
    ----------
    cfg : Sam2Config

    Returns
    -------
    dict
        The fields (the trunk nested) plus "encoder_type": "hiera".
    """
    d = asdict(cfg)
    d["encoder_type"] = "hiera"
    return d


def sam2_config_from_dict(d: dict) -> Sam2Config:
    """Inverse of `sam2_config_to_dict` (lists become tuples again).

    Parameters
    ----------
    d : dict
        As written by `sam2_config_to_dict`.

    Returns
    -------
    Sam2Config
    """
    d = dict(d)
    d.pop("encoder_type", None)
    tup = lambda v: tuple(v) if isinstance(v, list) else v  # noqa: E731
    trunk = HieraConfig(**{k: tup(v) for k, v in d.pop("trunk").items()})
    return Sam2Config(trunk=trunk, **{k: tup(v) for k, v in d.items()})
