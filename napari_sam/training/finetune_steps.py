"""One fine-tuning step: training views (cached embeddings when the encoder is frozen)
and the step's loss (prompt losses, plus the instance head's when it is trained)."""

from __future__ import annotations

from typing import List, Optional

import numpy as np
import torch

from ..device import autocast
from ..model import Sam
from ..runtime.session import InferenceSession
from .augment import random_view
from .prompt_loss import MODE_P, MODES, prompt_losses
from .user_data import Sample


def maybe_autocast(device: torch.device, dtype):
    """`device.autocast` for an optional dtype (None: fp32, no autocast).

    Parameters
    ----------
    device : torch.device
    dtype : torch.dtype or None
        The autocast dtype; None: float32.

    Returns
    -------
    context manager
        Autocast on `device` (a no-op for float32).
    """
    return autocast(device, dtype or torch.float32)


class TrainingViews:
    """Training views at each sample's inference zoom (`zooms`); with a frozen encoder,
    embedded once and cached. `amp`: the encoder's autocast dtype (None: fp32).

    Parameters
    ----------
    model : Sam
        The model being trained.
    train : list of Sample
        pixels (Y, X, 3) uint8, labels (Y, X) uint32.
    rng : numpy.random.Generator
        Draws the views and the batches.
    cfg : FinetuneConfig
        Its `views` (cached views per sample) is used.
    device : torch.device
    amp : torch.dtype or None
        The encoder's autocast dtype; None: fp32.
    frozen : bool
        The encoder is frozen: embed `cfg.views` views per sample once, in bfloat16.
    log : callable
        Called with a message (str) before embedding.
    zooms : list of float or None
        Per sample, model-input pixels per image pixel (`augment.sample_zoom`); None: each
        image whole in the input.
    """

    def __init__(self, model: Sam, train: List[Sample], rng, cfg, device, amp, frozen: bool,
                 log, zooms: Optional[List[float]] = None) -> None:
        self.model, self.train, self.rng, self.device, self.amp = model, train, rng, device, amp
        self.frozen = frozen
        self.zooms = zooms or [None] * len(train)
        # the model's fast forms (runtime.session), for embedding and the training steps
        self.session = InferenceSession(model)
        self.pad = np.asarray(model.config.pixel_mean, np.float32)
        self.cache = []
        if frozen:
            n = cfg.views * len(train)
            log(f"embedding {n} training views once (frozen encoder)")
            for i in range(n):
                px, lab = self._view(i % len(train))
                with torch.no_grad(), maybe_autocast(self.device, self.amp), self.session:
                    emb = model.encode(self._tensor([px])).to(torch.bfloat16)
                self.cache.append((emb, np.round(px).astype(np.uint8), lab))

    def _view(self, i: int):
        s, v = self.train[i], None
        while v is None:
            v = random_view(self.rng, s.pixels, s.labels, self.model.config.image_size,
                            self.pad, zoom=self.zooms[i])
        return v

    def _tensor(self, pxs) -> torch.Tensor:
        return torch.from_numpy(np.stack(pxs)).permute(0, 3, 1, 2).float().to(self.device)

    def batch(self, b: int):
        """-> (embeddings (b, C, g, g) float32, pixels (b, 3, S, S), [labels (S, S)] * b).

        Parameters
        ----------
        b : int
            The number of views.

        Returns
        -------
        embeddings : torch.Tensor, (b, C, g, g) float32
            The encoder's output (g: its grid side).
        pixels : torch.Tensor, (b, 3, S, S) float32
            The views, 0-255, padded with the pixel mean (S: the model's input side).
        labels : list of ndarray
            b label images (S, S) uint32.
        """
        if self.frozen:
            idx = self.rng.integers(len(self.cache), size=b)
            emb = torch.cat([self.cache[i][0] for i in idx]).float()
            x = self._tensor([self.cache[i][1] for i in idx])
            return emb, x, [self.cache[i][2] for i in idx]
        views = [self._view(int(i)) for i in self.rng.integers(len(self.train), size=b)]
        x = self._tensor([v[0] for v in views])
        with maybe_autocast(self.device, self.amp):
            emb = self.model.encode(x)
        return emb.float(), x, [v[1] for v in views]


def _instance_loss(model: Sam, emb, x, labels) -> torch.Tensor:
    from .instance_targets import instance_targets
    from .train_instance import head_loss

    tgt = torch.from_numpy(np.stack([instance_targets(lab) for lab in labels])).to(x.device)
    return head_loss(model.instance_logits(emb, x).float(), tgt)


def step_loss(model: Sam, views: TrainingViews, rng, cfg,
              amp: Optional[torch.dtype] = None) -> torch.Tensor:
    """One training step's loss (not yet backpropagated); the decoders run under `amp`'s
    autocast (None: fp32), the encoder (without cached embeddings) under `views.amp`.

    Parameters
    ----------
    model : Sam
    views : TrainingViews
        Gives the batch.
    rng : numpy.random.Generator
        Draws the prompt mode and the prompts.
    cfg : FinetuneConfig
        Its `batch` (views per step) and `objects` (objects prompted per view) are used.
    amp : torch.dtype or None
        The decoders' autocast dtype; None: fp32.

    Returns
    -------
    torch.Tensor, () float
        The scalar loss: prompt losses, plus the instance head's loss when it is trained.
    """
    mode = MODES[rng.choice(3, p=MODE_P)]
    with views.session:
        emb, x, labels = views.batch(cfg.batch)
    with maybe_autocast(views.device, amp), views.session:
        l1, l2 = prompt_losses(model, emb.repeat_interleave(cfg.objects, 0), rng, labels,
                               cfg.objects, mode, loss_size=256)
        loss = l1 + l2
        if model.has_instance_head and any(p.requires_grad for n, p in model.named_parameters()
                                           if n.startswith(("instance_head.",
                                                            "instance_decoder."))):
            loss = loss + _instance_loss(model, emb, x, labels)
    return loss
