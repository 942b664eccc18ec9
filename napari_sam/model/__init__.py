"""The Segment Anything networks (GUI-free)."""

from .checkpoints import CheckpointError, read_checkpoint, save_checkpoint
from .config import SamConfig, TinyViTConfig, ViTConfig
from .registry import CONFIGS, build_model, get_config, infer_config, load_model
from .sam import Sam

__all__ = [
    "CheckpointError", "read_checkpoint", "save_checkpoint", "SamConfig", "TinyViTConfig",
    "ViTConfig", "CONFIGS", "build_model", "get_config", "infer_config", "load_model", "Sam",
]
