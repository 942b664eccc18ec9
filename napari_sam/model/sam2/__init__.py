"""SAM 2.1 (Hiera image encoder, memory-based video propagation) on napari-sam's core.

    from napari_sam.model.sam2 import build_sam2, Sam2
    model = build_sam2("sam2.1_hiera_tiny")          # random weights
    model = napari_sam.load_model("sam2.1_hiera_tiny")  # published weights (download)
"""

from .config import (SAM2_CONFIGS, SAM21_BASE_PLUS, SAM21_LARGE, SAM21_SMALL, SAM21_TINY,
                     TEST_SAM2, HieraConfig, Sam2Config, infer_sam2_config, is_sam2_state_dict)
from .model import Sam2


def build_sam2(arch="sam2.1_hiera_tiny", device="cpu") -> Sam2:
    """A SAM 2.1 model with random weights: a name from `SAM2_CONFIGS` or a `Sam2Config`.

    Parameters
    ----------
    arch : str or Sam2Config
    device : str or torch.device

    Returns
    -------
    Sam2
        In eval mode on `device`.
    """
    if isinstance(arch, str):
        try:
            arch = SAM2_CONFIGS[arch]
        except KeyError:
            raise KeyError(f"unknown SAM 2 architecture {arch!r}; known: "
                           f"{', '.join(SAM2_CONFIGS)}") from None
    return Sam2(arch).to(device).eval()


__all__ = ["SAM2_CONFIGS", "SAM21_BASE_PLUS", "SAM21_LARGE", "SAM21_SMALL", "SAM21_TINY",
           "TEST_SAM2", "HieraConfig", "Sam2Config", "infer_sam2_config", "is_sam2_state_dict",
           "Sam2", "build_sam2"]
