"""The embedded networks for stage tests, with a small inversion network of known weights."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from falco.backbones.age_gender import load_age_gender
from falco.backbones.base import Inversion
from falco.backbones.dcgan import load_dcgan
from falco.backbones.dlib_resnet import load_dlib_recognizer
from falco.data.synthetic import SyntheticSource
from falco.detect import FaceDetector


class TinyInversion(Inversion):
    """A small encoder (pooled pixels -> z) whose weights come from `seed`; `offset` is a
    non-persistent buffer, like e4e's latent_avg, that a loader fills from its checkpoint."""

    name = "tiny"

    def __init__(self, seed: int, offset: float = 0.0, z_dim: int = 100) -> None:
        super().__init__()
        self.proj = nn.Linear(3 * 8 * 8, z_dim)
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            self.proj.weight.copy_(0.1 * torch.randn(z_dim, 3 * 8 * 8, generator=gen))
            self.proj.bias.zero_()
        self.register_buffer("offset", torch.full((z_dim,), float(offset)), persistent=False)

    def invert(self, image: torch.Tensor) -> torch.Tensor:
        return self.proj(F.adaptive_avg_pool2d(image, 8).flatten(1)) + self.offset


def stage_parts(identities: int = 3) -> dict:
    """Networks(**parts without "source") and the synthetic source of `identities` faces."""
    g = load_dcgan()
    return {"generator": g, "identity": load_dlib_recognizer(), "attributes": load_age_gender(),
            "inversion": TinyInversion(seed=0), "detector": FaceDetector(), "alignment": "template",
            "source": SyntheticSource(g, identities=identities, seed=3)}
