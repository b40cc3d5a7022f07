"""The method in one function: per-image latent optimization (FALCO, CVPR 2023).

Pure torch, no Lightning or Hydra. Each image of the batch is its own problem: the batch loss
is the SUM of per-image losses and Adam is elementwise, so a batch of B gives the same latents
as B runs of one (up to floating-point reduction order). The official code averages over the
batch, which only matches at B = 1.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import torch

from .backbones.autocast_weights import autocast_weights
from .backbones.base import AttributeEncoder, Generator, IdentityEncoder
from .latent import LatentCode
from .losses import attribute_loss, identity_loss
from .views import jitter_thetas, photometric


@dataclass
class Targets:
    """What the loss compares against, computed once per batch from the aligned originals.

    identity: (B, D) recognizer embeddings of the originals.
    attributes: (B, ...) attribute features of the originals.
    theta_id: (B, 2, 3) recognizer crop or None; thetas_attr: {crop: (B, 2, 3)}.
    """

    identity: torch.Tensor
    attributes: torch.Tensor
    theta_id: torch.Tensor | None
    thetas_attr: dict[str, torch.Tensor]
    virtual: torch.Tensor | None = None  # (B, D) keyed mode: the person's virtual identity embedding
    # Random views of the attribute loss (falco/views.py): the aligned originals (B,3,S,S) and
    # each image's view parameters (B, steps, V, P); None = the plain loss (the paper's).
    originals: torch.Tensor | None = None
    views: torch.Tensor | None = None


@dataclass
class Result:
    latents: torch.Tensor  # (B, *layout.shape) final latents, float32
    history: torch.Tensor  # (steps, B, 3): total, identity term, attribute term per image
    distance: torch.Tensor  # (steps, B) identity distance to the original at each step


def compute_targets(identity: IdentityEncoder, attributes: AttributeEncoder, originals: torch.Tensor,
                    theta_id: torch.Tensor | None, thetas_attr: dict[str, torch.Tensor]) -> Targets:
    """Embeddings and attribute features of the aligned originals (B,3,S,S in [-1,1])."""
    with torch.no_grad():
        return Targets(identity.embed(originals, theta_id).float(),
                       attributes.features(originals, thetas_attr).float(), theta_id, thetas_attr)


def milestones_for(steps: int, fractions: tuple[float, ...]) -> list[int]:
    """FALCO's MultiStepLR milestones: int(f * steps) for each fraction (37, 45 for 50 steps)."""
    return [int(f * steps) for f in fractions]


def optimize_latents(generator: Generator, identity: IdentityEncoder, attributes: AttributeEncoder,
                     targets: Targets, init: torch.Tensor, fixed: torch.Tensor | None = None, *,
                     steps: int = 50, lr: float = 0.01, milestones: tuple[float, ...] = (0.75, 0.9),
                     gamma: float = 0.8, margin_distance: float = 1.0, id_weight: float = 10.0,
                     attr_weight: float = 0.1, id_loss: str = "two_sided", virtual_weight: float = 0.0,
                     scaler: torch.amp.GradScaler | None = None, exact: bool = False,
                     on_step: Callable[[int], None] | None = None) -> Result:
    """Optimize the trainable part of each image's latent; returns the final latents.

    init: (B, *shape) starting latents (the paired fakes' codes); fixed: (B, *shape) the
    inversion codes whose non-trainable layers are kept (layered latents only).
    margin_distance: the identity margin as a distance in the recognizer's metric.
    virtual_weight: keyed mode: weight of the pull toward `targets.virtual` (the distance
    to the person's virtual identity), so all images of a person share one virtual identity.
    scaler: a GradScaler for fp16 autocast (a skipped step on overflow skips the whole
    batch, so with fp16 images are no longer independent of their batch mates). Autocast and
    scaler are the caller's: under Lightning, the Trainer's precision plugin provides both
    (falco/module.py); without a Trainer, wrap the call in torch.autocast and pass a scaler.
    exact: the generator's per-step synthesis is bit for bit its `synthesize` (no folded
    arithmetic): with a batch of one, the latents equal the official per-image loop's in float32.
    on_step: called with the step index after each step (progress, timing); the loop itself
    never waits for the device.
    """
    code = LatentCode(generator.layout, init.float(), None if fixed is None else fixed.float())
    optimizer = torch.optim.Adam(code.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones_for(steps, milestones), gamma)
    batch = init.shape[0]
    history = torch.zeros(steps, batch, 3, device=init.device)
    distance = torch.zeros(steps, batch, device=init.device)
    losses = partial(step_losses, identity=identity, attributes=attributes, targets=targets,
                     margin_distance=margin_distance, id_weight=id_weight, attr_weight=attr_weight,
                     id_loss=id_loss, virtual_weight=virtual_weight)
    # Work that is the same at every step is done once: the fixed latent layers' share of the
    # synthesis, and the frozen networks' weight casts under autocast.
    with autocast_weights(generator, identity, attributes):
        synthesize = generator.partial_synthesis(code().detach(), exact)
        for step in range(steps):
            per_image, l_id, l_attr, d = losses(synthesize(code.trainable), step=step)
            optimizer.zero_grad(set_to_none=True)
            descend(per_image.sum(), optimizer, scaler)
            schedule.step()
            history[step] = torch.stack([per_image, l_id, l_attr], -1).detach()  # no host sync
            distance[step] = d.detach()
            if on_step is not None:
                on_step(step)
    return Result(code().detach(), history, distance)


def step_losses(image: torch.Tensor, identity: IdentityEncoder, attributes: AttributeEncoder, targets: Targets,
                *, margin_distance: float, id_weight: float, attr_weight: float, id_loss: str,
                virtual_weight: float, step: int = 0) -> tuple[torch.Tensor, ...]:
    """Per-image (B,) total loss, identity term, attribute term and identity distance."""
    emb = identity.embed(image, targets.theta_id).float()
    d = identity.distance(emb, targets.identity)
    l_id = identity_loss(d, margin_distance, id_loss)
    l_attr = attribute_loss(attributes.features(image, targets.thetas_attr), targets.attributes)
    if targets.views is not None:  # the mean over the plain view and the random ones
        l_attr = (l_attr + view_loss(image, attributes, targets, step) * targets.views.shape[2]) \
            / (1 + targets.views.shape[2])
    per_image = id_weight * l_id + attr_weight * l_attr
    if targets.virtual is not None and virtual_weight:
        per_image = per_image + virtual_weight * identity.distance(emb, targets.virtual)
    return per_image, l_id, l_attr, d


def view_loss(image: torch.Tensor, attributes: AttributeEncoder, targets: Targets, step: int) -> torch.Tensor:
    """(B,) attribute loss averaged over this step's random views, the generated image and the
    original seen through the same view (so a change only pays if it survives the view)."""
    assert targets.views is not None and targets.originals is not None
    p = targets.views[:, step]  # (B, V, P)
    b, v = p.shape[:2]
    thetas = jitter_thetas(targets.thetas_attr, p)
    with torch.no_grad():
        target = attributes.features(photometric(targets.originals, p), thetas)
    return attribute_loss(attributes.features(photometric(image, p), thetas), target).view(v, b).mean(0)


def descend(loss: torch.Tensor, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler | None) -> None:
    """Backward and one optimizer step (through the GradScaler for fp16)."""
    if scaler is None:
        loss.backward()
        optimizer.step()
        return
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
