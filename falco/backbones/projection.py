"""Inversion by optimization ("projection"), for generators without an encoder.

Finds the latent whose image is closest to the aligned original in pixels (mean squared
error in [-1, 1]), starting from the mean latent, with Adam. Per-image losses are summed so
images in a batch stay independent. For a single-latent generator (DCGAN) FALCO keeps no
inversion layers, so this code is used only by `method.init=inversion` (`inversion=projection`;
the DCGAN default is `inversion=none`).
"""

from __future__ import annotations

import torch

from ..stopping import check as stop_point
from .base import Generator, Inversion


class ProjectionInversion(Inversion):
    name = "projection"

    def __init__(self, generator: Generator, steps: int = 200, lr: float = 0.05) -> None:
        super().__init__()
        self.generator = generator
        self.steps = steps  # Adam steps per batch
        self.lr = lr  # Adam learning rate on the latent

    def invert(self, image: torch.Tensor) -> torch.Tensor:
        """(N,3,S,S) aligned originals in [-1,1] -> (N, *layout.shape) latents."""
        g = self.generator
        if image.shape[-1] != g.resolution:
            image = torch.nn.functional.interpolate(image, size=(g.resolution,) * 2, mode="bilinear",
                                                    antialias=True, align_corners=False)
        start = g.sample(256, seed=0).mean(0, keepdim=True).to(image)
        latent = start.repeat(image.shape[0], *([1] * (start.ndim - 1))).requires_grad_(True)
        opt = torch.optim.Adam([latent], lr=self.lr)
        with torch.enable_grad():
            for _ in range(self.steps):
                stop_point()  # SIGTERM/SIGINT: between steps (the invert stage caches nothing partial)
                err = (g.synthesize(latent) - image).pow(2).flatten(1).mean(1).sum()
                opt.zero_grad(set_to_none=True)
                err.backward()
                opt.step()
        return latent.detach()
