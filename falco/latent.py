"""The per-image latent code: which part is optimized and which is a fixed copy.

StyleGAN2 (FALCO): w_A = [inversion layers 0-2 | trainable layers 3-7, initialized from the
paired fake | inversion layers 8-17]; only 5 x 512 numbers per image are optimized.
A single-vector latent (DCGAN z) has no layers: the whole vector trains, initialized from
the paired fake, and the inversion has no part in it (see falco/stages/prepare.py).
"""

from __future__ import annotations

import torch
from torch import nn

from .backbones.base import LatentLayout


class LatentCode(nn.Module):
    def __init__(self, layout: LatentLayout, init: torch.Tensor, fixed: torch.Tensor | None = None) -> None:
        """init, fixed: (B, *layout.shape). `fixed` is required for layered latents."""
        super().__init__()
        self.layout = layout
        if layout.layered:
            if fixed is None:
                raise ValueError("a layered latent needs the inversion's code for its fixed layers")
            start, stop = layout.trainable
            self.register_buffer("head", fixed[:, :start].detach().clone())
            self.register_buffer("tail", fixed[:, stop:].detach().clone())
            self.trainable = nn.Parameter(init[:, start:stop].detach().clone())
        else:
            self.trainable = nn.Parameter(init.detach().clone())

    def forward(self) -> torch.Tensor:
        if not self.layout.layered:
            return self.trainable
        return torch.cat([self.head, self.trainable, self.tail], dim=1)
