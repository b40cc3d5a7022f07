"""Tiny random-weight stand-ins for the keyed mode's unit tests (never a shipped default).

ToyGenerator: z (8,) -> (3,16,16) in [-1,1]; ToyIdentity: a fixed linear map of the image to 6-d,
Euclidean distance, same person below 0.6; ToyAttributes: mean colour per channel. Fast and
deterministic, so the key-derivation logic is tested without the real networks.
"""

from __future__ import annotations

import torch
from torch import nn

from falco.backbones.base import AttributeEncoder, Generator, IdentityEncoder, LatentLayout


class ToyGenerator(Generator):
    resolution = 16

    def __init__(self) -> None:
        super().__init__()
        self.layout = LatentLayout(shape=(8,), trainable=(0, 8), layered=False)
        self.net = nn.Linear(8, 3 * 16 * 16)
        torch.nn.init.normal_(self.net.weight)

    def sample(self, n: int, seed: int) -> torch.Tensor:
        return torch.randn(n, 8, generator=torch.Generator().manual_seed(int(seed)))

    def synthesize(self, latent: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.net(latent) * 0.3).view(-1, 3, 16, 16)


class ToyIdentity(IdentityEncoder):
    name = "toy_identity"
    input_size = 16
    same_person_below = 0.6

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(3 * 16 * 16, 6, bias=False)
        torch.nn.init.normal_(self.proj.weight, std=0.05)

    def embed(self, image: torch.Tensor, theta: torch.Tensor | None = None) -> torch.Tensor:
        return self.proj(image.flatten(1))

    def distance(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return (a - b).norm(dim=-1)


class ToyAttributes(AttributeEncoder):
    name = "toy_attributes"
    crops = ()

    def features(self, image: torch.Tensor, thetas=None) -> torch.Tensor:
        return image.mean((2, 3))


def toys() -> tuple[ToyGenerator, ToyIdentity, ToyAttributes]:
    """The same three networks on every call (all their weights are seeded)."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return ToyGenerator().eval(), ToyIdentity().eval(), ToyAttributes().eval()


TEMPLATE = torch.tensor([[0.35, 0.45], [0.65, 0.45], [0.5, 0.6], [0.38, 0.75], [0.62, 0.75]])
