"""One benchmark problem: the three networks, the method's knobs, and a pool of images.

Everything (a) and (b) need, built once per configuration (benchmarks/perf_problem.py builds
it from the Hydra configs). Images are the loss's aligned originals (N,3,R,R in [-1,1]) with
5 landmarks each; `init` and `fixed` play the paired fakes' and the inversion's latents.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from falco.backbones.base import AttributeEncoder, Generator, IdentityEncoder


@dataclass
class Knobs:
    """The optimization's hyper-parameters (MethodConfig's, with the margin as a distance)."""

    steps: int = 50
    lr: float = 0.01
    milestones: tuple[float, ...] = (0.75, 0.9)
    gamma: float = 0.8
    margin_distance: float = 1.0
    id_weight: float = 10.0
    attr_weight: float = 0.1
    id_loss: str = "two_sided"

    def loop_kwargs(self, steps: int) -> dict:
        return dict(steps=steps, lr=self.lr, milestones=self.milestones, gamma=self.gamma,
                    margin_distance=self.margin_distance, id_weight=self.id_weight,
                    attr_weight=self.attr_weight, id_loss=self.id_loss)


@dataclass
class Batch:
    originals: torch.Tensor
    landmarks: torch.Tensor
    theta_id: torch.Tensor | None
    thetas_attr: dict[str, torch.Tensor]
    init: torch.Tensor
    fixed: torch.Tensor | None

    def part(self, n: int) -> Batch:
        """Image n alone, as a batch of one."""
        def one(t):
            return None if t is None else t[n:n + 1]
        return Batch(one(self.originals), one(self.landmarks), one(self.theta_id),
                     {k: v[n:n + 1] for k, v in self.thetas_attr.items()}, one(self.init), one(self.fixed))


@dataclass
class Problem:
    name: str
    generator: Generator
    identity: IdentityEncoder
    attributes: AttributeEncoder
    knobs: Knobs
    originals: torch.Tensor  # (N,3,R,R)
    landmarks: torch.Tensor  # (N,5,2) pixels
    init: torch.Tensor  # (N,*layout.shape)
    fixed: torch.Tensor | None  # (N,*layout.shape) for layered latents
    method: object = None  # the composed MethodConfig (the Lightning part builds its module from it)
    make_trainer: Callable[[str], object] | None = None  # precision -> a configured pl.Trainer
    notes: dict = field(default_factory=dict)

    def batch(self, indices: list[int]) -> Batch:
        res = self.generator.resolution
        lm = self.landmarks[indices]
        return Batch(self.originals[indices], lm, self.identity.crop_theta(lm, (res, res)),
                     self.attributes.crop_thetas(lm, (res, res)), self.init[indices],
                     None if self.fixed is None else self.fixed[indices])

    def info(self) -> dict:
        nets = {"generator": self.generator, "identity": self.identity, "attributes": self.attributes}
        return {"resolution": self.generator.resolution, "steps_per_image": self.knobs.steps,
                **{f"{k}_class": type(v).__name__ for k, v in nets.items()},
                **{f"{k}_params": sum(p.numel() for p in v.parameters()) for k, v in nets.items()},
                **self.notes}
