"""Names -> configurations, variant detection from a state dict, and `load_model`."""

from __future__ import annotations

import re
from dataclasses import replace
from functools import lru_cache
from pathlib import Path
from typing import Dict, Optional, Union

import torch

from . import config as C
from .checkpoints import Checkpoint, CheckpointError, read_checkpoint
from .config import SamConfig, TinyViTConfig, ViTConfig, config_from_dict
from .sam import Sam

CONFIGS: Dict[str, SamConfig] = {
    c.name: c for c in (C.SAM_VIT_B, C.SAM_VIT_L, C.SAM_VIT_H, C.MOBILE_SAM, C.BUNDLED,
                        C.TEST_VIT, C.TEST_TINY_VIT)
}

BUNDLED_PATH = Path(__file__).resolve().parent.parent / "weights" / "bundled.pt"
DEFAULT_MODEL = "bundled"


def get_config(name: str) -> SamConfig:
    """The SAM 1 architecture of a name in `CONFIGS`.

    Parameters
    ----------
    name : str
        One of `CONFIGS`: "vit_b", "vit_l", "vit_h", "test_vit", ...

    Returns
    -------
    SamConfig

    Raises
    ------
    KeyError
        For an unknown name.
    """
    try:
        return CONFIGS[name]
    except KeyError:
        raise KeyError(f"unknown architecture {name!r}; known: {', '.join(CONFIGS)}") from None


def is_model(obj) -> bool:
    """Whether `obj` is a network the Predictor takes.

    Parameters
    ----------
    obj : object

    Returns
    -------
    bool
        True for `Sam` (SAM 1, MobileSAM, the bundled model) and `Sam2` (SAM 2.1).
    """
    from .sam2 import Sam2

    return isinstance(obj, (Sam, Sam2))


def build_model(arch, device: Union[str, torch.device] = "cpu"):
    """A model with freshly initialised (random) weights, in eval mode.

    Parameters
    ----------
    arch : str, SamConfig or Sam2Config
        A name from `CONFIGS` ("vit_b", "test_vit", ...) or `sam2.SAM2_CONFIGS`, or a config.
    device : str or torch.device

    Returns
    -------
    Sam or Sam2
    """
    from .sam2 import SAM2_CONFIGS, Sam2, Sam2Config

    if isinstance(arch, str) and arch in SAM2_CONFIGS:
        arch = SAM2_CONFIGS[arch]
    if isinstance(arch, Sam2Config):
        return Sam2(arch).to(device).eval()
    cfg = get_config(arch) if isinstance(arch, str) else arch
    return Sam(cfg).to(device).eval()


def _count(sd, pattern: str) -> int:
    rx = re.compile(pattern)
    return len({m.group(1) for k in sd for m in [rx.match(k)] if m})


def infer_config(sd: Dict[str, torch.Tensor]) -> SamConfig:
    """Work out a SAM 1 / MobileSAM architecture from tensor names and shapes alone.

    Parameters
    ----------
    sd : dict of str to Tensor
        A state dict (prefixes already stripped, as `read_checkpoint` gives it).

    Returns
    -------
    SamConfig

    Raises
    ------
    CheckpointError
        When the image encoder is neither SAM's ViT nor MobileSAM's TinyViT.
    """
    if "image_encoder.pos_embed" in sd:
        _, g, _, dim = sd["image_encoder.pos_embed"].shape
        patch = sd["image_encoder.patch_embed.proj.weight"].shape[-1]
        depth = _count(sd, r"image_encoder\.blocks\.(\d+)\.")
        head_dim = sd["image_encoder.blocks.0.attn.rel_pos_h"].shape[1]
        sizes = [sd[f"image_encoder.blocks.{i}.attn.rel_pos_h"].shape[0] for i in range(depth)]
        glob = tuple(i for i, n in enumerate(sizes) if n == 2 * g - 1)
        windows = [(n + 1) // 2 for n in sizes if n != 2 * g - 1]
        mlp = sd["image_encoder.blocks.0.mlp.lin1.weight"].shape[0] / dim
        enc = ViTConfig(dim, depth, dim // head_dim, windows[0] if windows else 0, glob, patch, mlp)
        image_size = g * patch
    elif "image_encoder.layers.0.blocks.0.conv1.c.weight" in sd:
        n = _count(sd, r"image_encoder\.layers\.(\d+)\.")
        dims = [sd["image_encoder.layers.0.blocks.0.conv1.c.weight"].shape[1]]
        depths, heads, windows = [_count(sd, r"image_encoder\.layers\.0\.blocks\.(\d+)\.")], [1], [7]
        for i in range(1, n):
            p = f"image_encoder.layers.{i}.blocks."
            dims.append(sd[p + "0.attn.qkv.weight"].shape[1])
            depths.append(_count(sd, re.escape(p) + r"(\d+)\."))
            bias = sd[p + "0.attn.attention_biases"]
            heads.append(bias.shape[0])
            windows.append(int(round(bias.shape[1] ** 0.5)))
        hid = sd["image_encoder.layers.0.blocks.0.conv1.c.weight"].shape[0]
        fc1 = sd["image_encoder.layers.1.blocks.0.mlp.fc1.weight"].shape
        head = sd.get("image_encoder.head.weight")
        # strides are not visible in weights: MobileSAM's rule (last merge keeps the resolution)
        enc = TinyViTConfig(tuple(dims), tuple(depths), tuple(heads), tuple(windows), (2, 2, 1),
                            fc1[0] / fc1[1], hid / dims[0], 3,
                            0 if head is None else head.shape[0])
        image_size = 1024
    else:
        raise CheckpointError("unknown image encoder: neither SAM's ViT nor MobileSAM's TinyViT keys")
    d = sd["prompt_encoder.no_mask_embed.weight"].shape[1]
    cfg = SamConfig(
        "custom", enc, image_size, d,
        decoder_depth=_count(sd, r"mask_decoder\.transformer\.layers\.(\d+)\."),
        decoder_mlp_dim=sd["mask_decoder.transformer.layers.0.mlp.lin1.weight"].shape[0],
        iou_head_hidden_dim=sd["mask_decoder.iou_prediction_head.layers.0.weight"].shape[0],
        num_multimask_outputs=sd["mask_decoder.mask_tokens.weight"].shape[0] - 1,
    )
    for known in CONFIGS.values():
        if _weights_view(known) == _weights_view(cfg):
            cfg = known
            break
    if "instance_decoder.out_conv.weight" in sd:  # micro-sam's UNETR (`unetr_decoder`)
        from .unetr_decoder import decoder_features, decoder_kind

        cfg = cfg.with_(instance_decoder=decoder_kind(sd, "instance_decoder."),
                        instance_decoder_features=decoder_features(sd, "instance_decoder."))
    return cfg


def _weights_view(cfg: SamConfig) -> SamConfig:
    """The part of a config that the weights determine: not the name nor the decoder's head
    count; for TinyViT (no position embedding) not the input size nor the merge strides, and
    not the heads and window of its first stage, which is convolutional."""
    cfg = cfg.with_(name="", decoder_heads=0, instance_decoder="", instance_decoder_features=0)
    enc = cfg.encoder
    if isinstance(enc, TinyViTConfig):
        enc = replace(enc, num_heads=(0,) + enc.num_heads[1:],
                      window_sizes=(0,) + enc.window_sizes[1:], merge_strides=())
        cfg = cfg.with_(encoder=enc, image_size=0)
    return cfg


@lru_cache(maxsize=None)
def _tensor_shapes(name: str, small: bool = False) -> Dict[str, tuple]:
    """{tensor name: shape} of a known architecture. Large ones are built on the meta device
    (no memory, but its first use imports torch's meta kernels, seconds); `small` ones on
    the CPU, which is quicker for them."""
    if small:
        model = Sam(CONFIGS[name])
    else:
        with torch.device("meta"):
            model = Sam(CONFIGS[name])
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def _shape_problems(sd, shapes: Dict[str, tuple]):
    """(missing names, [(name, file shape, expected shape)], unexpected names)."""
    missing = [k for k in shapes if k not in sd]
    wrong = [(k, tuple(sd[k].shape), shapes[k]) for k in shapes
             if k in sd and tuple(sd[k].shape) != shapes[k]]
    unexpected = [k for k in sd if k not in shapes]
    return missing, wrong, unexpected


def _describe(source: str, name: str, missing, wrong, unexpected) -> str:
    parts = []
    if missing:
        parts.append(f"{len(missing)} tensor(s) missing (e.g. {', '.join(missing[:3])})")
    for k, got, want in wrong[:3]:
        parts.append(f"{k} has shape {list(got)} where {name} has {list(want)}")
    if len(wrong) > 3:
        parts.append(f"{len(wrong) - 3} more of the wrong shape")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected (e.g. {', '.join(unexpected[:3])})")
    return (f"{source} looks like a damaged or altered {name} checkpoint: "
            + "; ".join(parts) + ". Download or export it again (`napari-sam models download "
            "--force NAME` for a registry model); a deliberately different architecture must "
            "be saved with napari_sam.model.save_checkpoint, which records it.")


def _candidates(sd) -> list:
    """Known architectures `sd` may be a damaged copy of: the same encoder kind and width
    and the same prompt embedding size (read off the config, nothing is built)."""
    def first_dim(key):
        t = sd.get(key)
        return None if t is None or t.ndim == 0 else int(t.shape[0])

    prompt = sd.get("prompt_encoder.no_mask_embed.weight")
    prompt_dim = None if prompt is None or prompt.ndim != 2 else int(prompt.shape[1])
    vit_dim = first_dim("image_encoder.patch_embed.proj.weight")
    vit = any(k.startswith("image_encoder.blocks.") for k in sd)
    tiny = any(k.startswith("image_encoder.layers.") for k in sd)
    out = []
    for name, cfg in CONFIGS.items():
        is_vit = isinstance(cfg.encoder, ViTConfig)
        if prompt_dim is not None and prompt_dim != cfg.prompt_embed_dim:
            continue
        if (vit and not tiny and not is_vit) or (tiny and not vit and is_vit):
            continue
        if is_vit and vit_dim not in (None, cfg.encoder.embed_dim):
            continue
        out.append(name)
    return out


def _damaged_known(sd, source: str) -> Optional[str]:
    """A message if `sd` is a known architecture with a few tensors missing or of the wrong
    shape (a damaged file, which would otherwise load as a smaller `custom` model), else
    None. A file counts as such when all its tensors belong to one known architecture and
    at most 3 of them have the wrong shape."""
    best = None
    small = sum(t.numel() for t in sd.values()) < 50_000_000  # under 200 MB of float32
    for name in _candidates(sd):
        missing, wrong, unexpected = _shape_problems(sd, _tensor_shapes(name, small))
        if unexpected or len(wrong) > 3 or not (missing or wrong):
            continue
        if best is None or len(missing) + len(wrong) < len(best[1]) + len(best[2]):
            best = (name, missing, wrong)
    return None if best is None else _describe(source, best[0], best[1], best[2], [])


def model_from_checkpoint(ckpt: Checkpoint, source: str = "checkpoint"):
    """Build the model a checkpoint's config (or its keys) describe and load its weights.

    Parameters
    ----------
    ckpt : Checkpoint
        From `read_checkpoint`; its notes and extra entries (automask thresholds, object
        size, ais settings) become attributes of the model.
    source : str
        Name of the file in error messages.

    Returns
    -------
    Sam or Sam2
        On the CPU, in eval mode.

    Raises
    ------
    CheckpointError
        If the architecture is not recognised or the tensors do not fit it.
    """
    from .sam2 import Sam2, infer_sam2_config, is_sam2_state_dict
    from .sam2.config import sam2_config_from_dict

    sd = ckpt.state_dict
    sam2 = (ckpt.config or {}).get("encoder_type") == "hiera" or is_sam2_state_dict(sd)
    try:
        if sam2:
            cfg = sam2_config_from_dict(ckpt.config) if ckpt.config else infer_sam2_config(sd)
        else:
            cfg = config_from_dict(ckpt.config) if ckpt.config else infer_config(sd)
    except (KeyError, IndexError, TypeError, ValueError) as err:
        damaged = None if sam2 else _damaged_known(sd, source)
        if damaged:
            raise CheckpointError(damaged) from err
        raise CheckpointError(
            f"{source}: the architecture could not be recognised from its keys ({err}); "
            "napari-sam loads SAM ViT-B/L/H, MobileSAM, micro-sam and SAM 2.1 checkpoints"
        ) from err
    if not sam2 and not ckpt.config and cfg.name == "custom":
        damaged = _damaged_known(sd, source)
        if damaged:
            raise CheckpointError(damaged)
    model = Sam2(cfg) if sam2 else Sam(cfg)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing, wrong, unexpected = _shape_problems(sd, expected)
    if wrong:
        raise CheckpointError(_describe(source, cfg.name, missing, wrong, unexpected))
    missing, unexpected = model.load_state_dict(sd, strict=False)
    if missing or unexpected:
        raise CheckpointError(
            f"{source} does not match the {cfg.name} architecture its keys suggest: "
            f"{len(missing)} missing (e.g. {missing[:3]}), {len(unexpected)} unexpected "
            f"(e.g. {unexpected[:3]}). Is it a Segment Anything checkpoint?")
    model.checkpoint_notes = list(ckpt.notes)
    thresholds = ckpt.extra.get("automask", {})
    if isinstance(thresholds, dict):
        model.automask_defaults = {k: float(v) for k, v in thresholds.items()
                                   if k in ("pred_iou_thresh", "stability_thresh")}
    size = ckpt.extra.get("object_size")
    if isinstance(size, dict) and "diameter" in size:
        model.object_size = {"diameter": float(size["diameter"]),
                             "range": [float(v) for v in size.get("range", ())] or None}
        if model.object_size["range"] is None:
            del model.object_size["range"]
        ratio = size.get("estimate_ratio")
        if isinstance(ratio, (int, float)) and ratio > 0 and ratio != 1:
            # fine-tuned on images the diameter estimate misjudges (scale.estimate_ratio)
            model.object_size["estimate_ratio"] = float(ratio)
    if ckpt.extra.get("automask_mode") in ("ais", "amg"):
        model.automask_mode = ckpt.extra["automask_mode"]
    ais = ckpt.extra.get("ais", {})
    if isinstance(ais, dict):
        model.ais_defaults = {k: float(v) for k, v in ais.items()}
    return model.eval()


def load_model(name_or_path: Optional[str] = None, device: Union[str, torch.device] = "cpu"):
    """Load a model by registry name, checkpoint path, or "bundled".

    Registry names are downloaded once (hash-checked) into the cache folder and read from
    there.

    Parameters
    ----------
    name_or_path : str, Path or Sam, optional
        "bundled" or None (the model shipped inside the package), a registry name
        ("vit_b", "vit_b_lm", "sam2.1_hiera_tiny", ...) or a checkpoint file; a loaded
        model is moved to `device` and returned.
    device : str or torch.device
        "cpu", "cuda", "auto", ...

    Returns
    -------
    Sam or Sam2
        A `Sam2` for SAM 2 checkpoints; `.source` holds the name or path given.

    Raises
    ------
    FileNotFoundError, KeyError, CheckpointError
        A missing file, an unknown name, a file that is not a loadable checkpoint.
    """
    from ..device import resolve_device

    name = name_or_path or DEFAULT_MODEL
    if is_model(name):
        return name.to(resolve_device(device))
    path = Path(str(name)).expanduser()
    if str(name) == "bundled":
        path = BUNDLED_PATH
        if not path.is_file():
            raise FileNotFoundError(
                f"the bundled model is missing from the installation ({path}); reinstall napari-sam")
    elif not path.is_file():
        from .hub import KNOWN_CHECKPOINTS, fetch

        if str(name) not in KNOWN_CHECKPOINTS:
            if path.suffix or "/" in str(name):
                raise FileNotFoundError(f"model file not found: {path}")
            raise KeyError(
                f"unknown model {name!r}: give a checkpoint file or one of "
                f"bundled, {', '.join(KNOWN_CHECKPOINTS)}")
        path = fetch(str(name))
        try:
            ckpt = read_checkpoint(path)
        except CheckpointError as err:  # damaged in the cache after it was checked
            from .hub import forget

            forget(str(name))
            raise CheckpointError(
                f"the cached download of {name} ({path}) does not load: {err.args[0]} It was "
                f"removed from the cache; run again to download {name} afresh.") from err
        model = model_from_checkpoint(ckpt, str(path))
        model.source = str(name)
        return model.to(resolve_device(device))
    model = model_from_checkpoint(read_checkpoint(path), str(path))
    model.source = str(name)
    return model.to(resolve_device(device))
