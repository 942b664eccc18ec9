"""Low-rank adapters (LoRA) on the attention of a model's image encoder, for fine-tuning.

An adapted linear layer computes `x W'^T + b` with W' = W + (alpha / r) B A: W (out, in) and
b stay frozen, A (r, in) and B (out, r) are trained. B starts at zero, so a freshly adapted
model computes exactly what the base model computes. The adapters replace the encoder's
`qkv` linears (and, with `proj=True`, the attention output projections `proj`) from
outside, as module attributes; the encoder's code is not changed. The adapted layer offers
the merged matrix as its `weight`, so code that reads `layer.weight` / `layer.bias`
directly (the fused kernels of `runtime.kernels.linear`) sees the adapted weights too, with
gradients flowing to A and B. `merge_lora` folds B A into W and puts plain `nn.Linear`s
back: the model then has the base architecture's parameter names and shapes, and its
checkpoint loads with `load_model` unchanged.
"""

from __future__ import annotations

import math
from typing import Iterator, Tuple

import torch
import torch.nn.functional as F
from torch import nn


class LoRALinear(nn.Module):
    """A frozen `nn.Linear` plus a trainable rank-`rank` update (see the module docstring).

    Input (..., in_features) -> output (..., out_features), as the wrapped layer.

    Parameters
    ----------
    base : torch.nn.Linear
        The layer to adapt; its parameters are frozen (requires_grad False) in place.
    rank : int
        r, the rank of the update (at least 1, else ValueError).
    alpha : float
        The update is scaled by alpha / r; 0 means alpha = r (scaling 1).
    """

    def __init__(self, base: nn.Linear, rank: int, alpha: float = 0.0) -> None:
        super().__init__()
        if rank < 1:
            raise ValueError(f"LoRA rank must be at least 1, got {rank}")
        self.base = base
        for p in base.parameters():
            p.requires_grad_(False)
        self.in_features, self.out_features = base.in_features, base.out_features
        self.rank = int(rank)
        self.scaling = float(alpha or rank) / rank
        w = base.weight
        self.lora_a = nn.Parameter(torch.empty(rank, base.in_features, dtype=w.dtype,
                                               device=w.device))
        self.lora_b = nn.Parameter(torch.zeros(base.out_features, rank, dtype=w.dtype,
                                               device=w.device))
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))

    @property
    def weight(self) -> torch.Tensor:
        """The adapted weight W + scaling * B A, (out_features, in_features)."""
        return self.base.weight + self.scaling * (self.lora_b @ self.lora_a)

    @property
    def bias(self):
        return self.base.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the adapted layer.

        Parameters
        ----------
        x : torch.Tensor, (..., in_features)

        Returns
        -------
        torch.Tensor, (..., out_features)
            ``x W'^T + b``, in `x`'s dtype and device.
        """
        return F.linear(x, self.weight, self.bias)

    @torch.no_grad()
    def merged(self) -> nn.Linear:
        """A plain `nn.Linear` with the adapted weight (same device and dtype).

        Returns
        -------
        torch.nn.Linear
            (in_features -> out_features), weight W + scaling * B A and the base's bias.
        """
        out = nn.Linear(self.in_features, self.out_features, bias=self.base.bias is not None,
                        device=self.base.weight.device, dtype=self.base.weight.dtype)
        out.weight.copy_(self.weight)
        if self.base.bias is not None:
            out.bias.copy_(self.base.bias)
        return out


def _targets(encoder: nn.Module, proj: bool) -> Iterator[Tuple[nn.Module, str]]:
    """(parent, attribute) of the linears to adapt: `qkv` of every attention module of the
    encoder, and its `proj` too when `proj`."""
    for module in list(encoder.modules()):
        if isinstance(getattr(module, "qkv", None), nn.Linear):
            yield module, "qkv"
            if proj and isinstance(getattr(module, "proj", None), nn.Linear):
                yield module, "proj"


def add_lora(model: nn.Module, rank: int, alpha: float = 0.0, proj: bool = False) -> int:
    """Wrap the attention linears of `model.image_encoder` in `LoRALinear` adapters of
    `rank` (scaling alpha / rank; alpha 0: 1). Returns the number of adapted layers.
    Adapter parameters are named `....qkv.lora_a` / `lora_b`.

    Parameters
    ----------
    model : torch.nn.Module
        A model with a ViT-style `image_encoder` (attention modules with a `qkv` linear);
        changed in place. ValueError when it has adapters already or no `qkv` linear.
    rank : int
        The adapters' rank.
    alpha : float
        Scaling numerator (alpha / rank); 0 means scaling 1.
    proj : bool
        Adapt the attention output projections `proj` as well.

    Returns
    -------
    int
        The number of adapted linear layers.
    """
    if any(isinstance(m, LoRALinear) for m in model.modules()):
        raise ValueError("the model has LoRA adapters already")
    n = 0
    for parent, name in list(_targets(model.image_encoder, proj)):
        setattr(parent, name, LoRALinear(getattr(parent, name), rank, alpha))
        n += 1
    if not n:
        raise ValueError(f"no attention qkv linear found in {type(model.image_encoder).__name__}"
                         ": LoRA adapters need a ViT-style encoder")
    _invalidate(model)
    return n


def merge_lora(model: nn.Module) -> int:
    """Fold every `LoRALinear` of `model` into a plain `nn.Linear` (in place). Returns the
    number merged; the model afterwards has the base architecture's state-dict keys.

    Parameters
    ----------
    model : torch.nn.Module
        Changed in place; a model without adapters is left as it is.

    Returns
    -------
    int
        The number of merged layers (0 without adapters).
    """
    n = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, LoRALinear):
                setattr(parent, name, child.merged())
                n += 1
    _invalidate(model)
    return n


def _invalidate(model: nn.Module) -> None:
    drop = getattr(model, "invalidate_caches", None)
    if drop is not None:
        drop()
