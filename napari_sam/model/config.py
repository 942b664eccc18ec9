"""Model configurations as plain data.

Every variant (SAM ViT-B/L/H, MobileSAM, the bundled model and the tiny test models) is a
`SamConfig`; the network code reads nothing else, so a new size is a new config, not new code.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Tuple, Union


@dataclass(frozen=True)
class ViTConfig:
    """SAM's plain ViT image encoder (windowed attention plus a few global blocks).

    Parameters
    ----------
    embed_dim, depth, num_heads : int
        Token width, number of blocks and attention heads per block.
    window_size : int
        Side of the attention windows, in tokens.
    global_attn_indexes : tuple of int
        The blocks that attend over the whole grid.
    patch_size : int
        Side of a patch in pixels (the encoder's stride).
    mlp_ratio : float
        Hidden width of the MLPs over `embed_dim`.
    """

    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    window_size: int = 14
    global_attn_indexes: Tuple[int, ...] = (2, 5, 8, 11)
    patch_size: int = 16
    mlp_ratio: float = 4.0

    @property
    def stride(self) -> int:
        return self.patch_size


@dataclass(frozen=True)
class TinyViTConfig:
    """MobileSAM's TinyViT: a conv stem and MBConv stage, then windowed attention stages.

    Parameters
    ----------
    embed_dims, depths, num_heads, window_sizes : tuple of int
        Per stage: width, number of blocks, attention heads and window side.
    merge_strides : tuple of int
        Stride of the patch merging after each stage but the last.
    mlp_ratio, mbconv_expand_ratio : float
        Hidden widths of the MLPs and of the MBConv blocks.
    local_conv_size : int
        Kernel side of the depthwise convolution in the attention blocks.
    num_classes : int
        Width of the (unused) classifier MobileSAM checkpoints carry; 0: none.
    """

    embed_dims: Tuple[int, ...] = (64, 128, 160, 320)
    depths: Tuple[int, ...] = (2, 2, 6, 2)
    num_heads: Tuple[int, ...] = (2, 4, 5, 10)
    window_sizes: Tuple[int, ...] = (7, 7, 14, 7)
    # stride of the patch-merging step after stage i (MobileSAM keeps the last one at 1)
    merge_strides: Tuple[int, ...] = (2, 2, 1)
    mlp_ratio: float = 4.0
    mbconv_expand_ratio: float = 4.0
    local_conv_size: int = 3
    # MobileSAM checkpoints carry an unused ImageNet classifier (norm_head, head)
    num_classes: int = 0

    @property
    def stride(self) -> int:
        s = 4
        for m in self.merge_strides:
            s *= m
        return s


EncoderConfig = Union[ViTConfig, TinyViTConfig]


@dataclass(frozen=True)
class SamConfig:
    """One model variant as plain data; the network code reads nothing else.

    Parameters
    ----------
    name : str
        The variant's name ("vit_b", "vit_t", ...).
    encoder : ViTConfig or TinyViTConfig
        The image encoder.
    image_size : int
        Side of the square model input, in pixels.
    prompt_embed_dim : int
        Channels of the image embedding and the prompt tokens.
    decoder_depth, decoder_heads, decoder_mlp_dim, iou_head_hidden_dim : int
        Sizes of the mask decoder.
    num_multimask_outputs : int
        Masks per prompt in multimask mode.
    pixel_mean, pixel_std : tuple of 3 float
        Normalisation of 0-255 RGB pixels.
    instance_head : tuple of int
        Channels of the bundled model's instance head at strides 8, 4, 2, 1 (empty: none).
    instance_decoder : str
        micro-sam's UNETR instance decoder: "" (none), "unetr" or "unetr_transpose".
    instance_decoder_features : int
        The UNETR decoder's initial features.
    """

    name: str
    encoder: EncoderConfig = field(default_factory=ViTConfig)
    image_size: int = 1024
    prompt_embed_dim: int = 256
    decoder_depth: int = 2
    decoder_heads: int = 8
    decoder_mlp_dim: int = 2048
    iou_head_hidden_dim: int = 256
    num_multimask_outputs: int = 3
    pixel_mean: Tuple[float, float, float] = (123.675, 116.28, 103.53)
    pixel_std: Tuple[float, float, float] = (58.395, 57.12, 57.375)
    # channels of the bundled model's instance head at strides 8, 4, 2, 1 (see
    # instance_head.InstanceHead); empty: no head
    instance_head: Tuple[int, ...] = ()
    # micro-sam's UNETR instance decoder (`unetr_decoder`): "" (none), "unetr" (bilinear
    # upsampling) or "unetr_transpose" (transposed convolutions), and its initial features
    instance_decoder: str = ""
    instance_decoder_features: int = 64

    @property
    def embed_grid(self) -> int:
        """Side of the image embedding grid (64 for SAM)."""
        return self.image_size // self.encoder.stride

    @property
    def image_token_values(self) -> int:
        """Values in one prompt's copy of the image tokens in the decoder (grid^2 x width:
        2^20 for SAM, 2^17 for the bundled model)."""
        return self.embed_grid ** 2 * self.prompt_embed_dim

    @property
    def mask_size(self) -> int:
        """Side of the low-resolution mask logits (256 for SAM)."""
        return 4 * self.embed_grid

    def with_(self, **changes) -> "SamConfig":
        """A copy with some fields changed.

        Parameters
        ----------
        **changes
            Field names and their new values.

        Returns
        -------
        SamConfig
        """
        return replace(self, **changes)


SAM_VIT_B = SamConfig("vit_b", ViTConfig(768, 12, 12, 14, (2, 5, 8, 11)))
SAM_VIT_L = SamConfig("vit_l", ViTConfig(1024, 24, 16, 14, (5, 11, 17, 23)))
SAM_VIT_H = SamConfig("vit_h", ViTConfig(1280, 32, 16, 14, (7, 15, 23, 31)))
MOBILE_SAM = SamConfig("vit_t", TinyViTConfig(num_classes=1000))

# The model shipped inside the package (see docs/models.md): TinyViT-style encoder at a
# 256-pixel input with a 32 x 32 embedding grid (the merges keep stride 8), so the decoder's
# low-res masks are 128 x 128 (2 input pixels per mask pixel): small nuclei keep their shape.
BUNDLED = SamConfig(
    "bundled",
    TinyViTConfig(embed_dims=(32, 64, 128, 160), depths=(2, 2, 4, 2), num_heads=(1, 2, 4, 5),
                  window_sizes=(7, 8, 8, 8), merge_strides=(2, 1, 1)),
    image_size=256,
    prompt_embed_dim=128,
    decoder_mlp_dim=512,
    decoder_heads=4,
    iou_head_hidden_dim=128,
    instance_head=(64, 48, 32, 16),
)

# Tiny configurations for tests: the same code paths, seconds instead of minutes.
TEST_VIT = SamConfig(
    "test_vit",
    ViTConfig(embed_dim=64, depth=4, num_heads=2, window_size=4, global_attn_indexes=(1, 3)),
    image_size=256,
    prompt_embed_dim=64,
    decoder_mlp_dim=128,
    decoder_heads=4,
    iou_head_hidden_dim=64,
)
TEST_TINY_VIT = SamConfig(
    "test_tiny_vit",
    TinyViTConfig(
        embed_dims=(16, 32, 48, 64),
        depths=(1, 1, 2, 1),
        num_heads=(1, 2, 2, 4),
        window_sizes=(7, 7, 14, 7),
        merge_strides=(2, 2, 1),
        num_classes=10,
    ),
    image_size=256,
    prompt_embed_dim=64,
    decoder_mlp_dim=128,
    decoder_heads=4,
    iou_head_hidden_dim=64,
)


def config_to_dict(cfg: SamConfig) -> dict:
    """Plain dict (str/int/float/list only) that can be stored inside a checkpoint.

    Parameters
    ----------
    cfg : SamConfig

    Returns
    -------
    dict
        The fields (nested for the encoder) plus "encoder_type" ("vit" or "tiny_vit").
    """
    from dataclasses import asdict

    d = asdict(cfg)
    d["encoder_type"] = "tiny_vit" if isinstance(cfg.encoder, TinyViTConfig) else "vit"
    return d


def config_from_dict(d: dict) -> SamConfig:
    """Inverse of `config_to_dict` (lists become tuples again).

    Parameters
    ----------
    d : dict
        As written by `config_to_dict`; without "encoder_type" the encoder is a ViT.

    Returns
    -------
    SamConfig
    """
    d = dict(d)
    kind = d.pop("encoder_type", "vit")
    enc_cls = TinyViTConfig if kind == "tiny_vit" else ViTConfig
    enc = {k: tuple(v) if isinstance(v, list) else v for k, v in d.pop("encoder").items()}
    top = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}
    return SamConfig(encoder=enc_cls(**enc), **top)
