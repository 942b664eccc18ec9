"""The Segment Anything networks (GUI-free)."""

# Before torch is imported for the first time (napari_sam/__init__.py imports this package
# first): OpenMP worker threads that wait at the end of a parallel region go to sleep
# instead of spinning. With spinning (libgomp's default), a process that shares its cores
# with other work -- a napari session, a training run, a browser -- stalls at every
# barrier until the spinning thread's time slice is over: measured here, the bundled model's
# embedding took 2.9 s on 2 threads instead of 0.08 s. Sleeping costs a few microseconds
# per parallel region on an idle machine. An explicit OMP_WAIT_POLICY or GOMP_SPINCOUNT
# wins; if torch was imported earlier, this has no effect.
import os as _os
import sys as _sys

if ("torch" not in _sys.modules and "OMP_WAIT_POLICY" not in _os.environ
        and "GOMP_SPINCOUNT" not in _os.environ):
    _os.environ["OMP_WAIT_POLICY"] = "PASSIVE"

from .checkpoints import CheckpointError, read_checkpoint, save_checkpoint
from .config import SamConfig, TinyViTConfig, ViTConfig
from .registry import CONFIGS, build_model, get_config, infer_config, is_model, load_model
from .sam import Sam

__all__ = [
    "CheckpointError", "read_checkpoint", "save_checkpoint", "SamConfig", "TinyViTConfig",
    "ViTConfig", "CONFIGS", "build_model", "get_config", "infer_config", "is_model", "load_model", "Sam",
]
