"""A faithful imitation of the official FALCO per-image loop, on our ports of the networks.

What the official `anonymize.py` (chi0tzp/FALCO, cvpr23) does for every image, reproduced here
as the reference that benchmarks/perf.py measures our loop against:
- batch size 1, float32, a fresh latent code, Adam and MultiStepLR per image;
- the generator's and the attribute network's weights are NOT frozen (`requires_grad` stays
  True), so every backward also computes their weight gradients; the official IDLoss freezes
  its ArcFace, so the identity network stays frozen here too;
- at every step the original image goes through both loss networks again: its identity
  embedding is detached, its attribute features are not (the backward reaches the attribute
  network's weights through both branches, as in the official AttrLoss);
- the loss is the batch mean of 10 * identity term + 0.1 * attribute term (at batch 1, the
  per-image loss our loop sums).
The loss terms and preprocessing are ours (falco/losses.py, the backbones' embed/features), so
in float32 its latents equal `optimize_latents`' (tests/perf/test_official_loop.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import nn

from falco.backbones.base import AttributeEncoder, Generator, IdentityEncoder
from falco.latent import LatentCode
from falco.losses import attribute_loss, identity_loss
from falco.optimize import milestones_for


@contextmanager
def unfrozen(*networks: nn.Module) -> Iterator[None]:
    """Float parameters require grad inside (as in the official code); restored, grads dropped, after."""
    params = [p for net in networks for p in net.parameters() if p.is_floating_point()]
    before = [p.requires_grad for p in params]
    try:
        for p in params:
            p.requires_grad_(True)
        yield
    finally:
        for p, flag in zip(params, before, strict=True):
            p.requires_grad_(flag)
            p.grad = None


def official_style_optimize(generator: Generator, identity: IdentityEncoder, attributes: AttributeEncoder,
                            originals: torch.Tensor, init: torch.Tensor, fixed: torch.Tensor | None,
                            theta_id: torch.Tensor | None, thetas_attr: dict[str, torch.Tensor], *,
                            steps: int = 50, lr: float = 0.01, milestones: tuple[float, ...] = (0.75, 0.9),
                            gamma: float = 0.8, margin_distance: float = 1.0, id_weight: float = 10.0,
                            attr_weight: float = 0.1, id_loss: str = "two_sided",
                            on_step: Callable[[int], None] | None = None) -> torch.Tensor:
    """Optimize each image alone, the official way; returns the (B, *shape) final latents.
    on_step(step) is called after every step of every image (timing)."""
    out = []
    with unfrozen(generator, attributes):
        for n in range(originals.shape[0]):
            crop_id = None if theta_id is None else theta_id[n:n + 1]
            crops_attr = {k: v[n:n + 1] for k, v in thetas_attr.items()}
            code = LatentCode(generator.layout, init[n:n + 1].float(),
                              None if fixed is None else fixed[n:n + 1].float())
            optimizer = torch.optim.Adam(code.parameters(), lr=lr)
            schedule = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones_for(steps, milestones), gamma)
            for net in (generator, attributes):
                net.zero_grad(set_to_none=True)  # once per image, like the official G.zero_grad()
            for step in range(steps):
                optimizer.zero_grad()
                loss = official_step_loss(generator, identity, attributes, originals[n:n + 1], code(), crop_id,
                                          crops_attr, margin_distance, id_weight, attr_weight, id_loss)
                loss.backward()
                optimizer.step()
                schedule.step()
                if on_step is not None:
                    on_step(step)
            out.append(code().detach())
    return torch.cat(out)


def official_step_loss(generator: Generator, identity: IdentityEncoder, attributes: AttributeEncoder,
                       original: torch.Tensor, latent: torch.Tensor, theta_id: torch.Tensor | None,
                       thetas_attr: dict[str, torch.Tensor], margin_distance: float, id_weight: float,
                       attr_weight: float, id_loss: str) -> torch.Tensor:
    """One official step's loss: targets recomputed from the original, batch mean."""
    image = generator.synthesize(latent)
    target = identity.embed(original, theta_id).float().detach()
    d = identity.distance(identity.embed(image, theta_id).float(), target)
    l_attr = attribute_loss(attributes.features(image, thetas_attr), attributes.features(original, thetas_attr))
    return (id_weight * identity_loss(d, margin_distance, id_loss) + attr_weight * l_attr).mean()
