"""Virtual identities: one per person and key, derived from the key alone (after KFAAR).

person token   = HMAC-SHA256(key, "person:" + person label)           (hex, a keyed pseudonym)
candidate seed = HMAC-SHA256(key, "virtual:" + token + ":" + i)[:8]   (i = 0, 1, 2, ...)
candidate face = generator.synthesize(generator.sample(1, seed))
target         = center + distinctiveness * (embed(face) - center)

`center` is the mean embedding of generator samples drawn from a public seed. Why the
distinctiveness: faces of one generator sit close together in a recognizer's space (DigiFace
renders under dlib: half of the unrelated pairs pass dlib's same-person rule), so two keys'
virtual identities for one person would often look like the same person. Of `candidates`
draws the one farthest from the center is kept, and the optimization is pulled toward a point
beyond it, which spreads virtual identities apart (different keys -> different people).
A draw is rejected when its target lies within `reject_original` of one of the person's
original embeddings (it must not look like them) or within `min_separation` of a virtual
identity already given to another person (persons processed in token order, so the result
depends only on the key and the set of persons, not on the dataset order).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..backbones.base import AttributeEncoder, Generator, IdentityEncoder
from ..device import device_of
from ..seeds import stream_seed
from .key import SecretKey

EMBED_BATCH = 64  # generated faces embedded per call (memory bound, results unaffected)


@dataclass
class VirtualIdentity:
    token: str  # hex HMAC of the person label: the person's keyed pseudonym
    index: int  # which candidate draw was kept (stored in the enrolment)
    latent: torch.Tensor  # (*layout.shape) the virtual face's latent: the optimization's start
    embedding: torch.Tensor  # (D,) recognizer embedding of the virtual face
    target: torch.Tensor  # (D,) what the optimization pulls toward (and authentication compares with)


def person_token(key: SecretKey, label: str) -> str:
    return key.hmac("person:" + label).hex()


def pairwise(identity: IdentityEncoder, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(N,M) distances of a (N,D) to b (M,D) in the recognizer's own metric."""
    n, m = len(a), len(b)
    return identity.distance(a.repeat_interleave(m, 0), b.repeat(n, 1)).view(n, m)


def person_labels(ids: list[str], identities: list[str | None], embeddings: torch.Tensor,
                  identity: IdentityEncoder, grouping: str, threshold: float, linkage: str) -> list[str]:
    """One person label per image: "identity:<dataset label>" or "cluster:<smallest member id>".

    auto: the dataset's identity where it has one, clusters of the others; identity: labels
    required; cluster: ignore labels. Clusters are agglomerative (`linkage`) on the original
    embeddings at `threshold`, computed on images sorted by id and named after their smallest
    member id, so the grouping depends on the set of images, never on their order.
    """
    if grouping == "identity" and any(i is None for i in identities):
        raise ValueError("method.grouping=identity but some images have no identity label (use auto or cluster)")
    labels: list[str | None] = [None if grouping == "cluster" or i is None else f"identity:{i}" for i in identities]
    rest = sorted((k for k, lab in enumerate(labels) if lab is None), key=lambda k: ids[k])
    for members in _clusters(pairwise(identity, embeddings[rest], embeddings[rest]), threshold, linkage):
        name = "cluster:" + min(ids[rest[m]] for m in members)
        for m in members:
            labels[rest[m]] = name
    return [str(lab) for lab in labels]


def _clusters(dist: torch.Tensor, threshold: float, linkage: str) -> list[list[int]]:
    """Index groups of an (N,N) distance matrix; pairs at or above `threshold` never merge directly."""
    n = len(dist)
    if n < 2:
        return [[k] for k in range(n)]
    from sklearn.cluster import AgglomerativeClustering

    fit = AgglomerativeClustering(n_clusters=None, distance_threshold=threshold, metric="precomputed",
                                  linkage=linkage).fit(dist.double().numpy())
    groups: dict[int, list[int]] = {}
    for k, c in enumerate(fit.labels_.tolist()):
        groups.setdefault(c, []).append(k)
    return list(groups.values())


def candidate_seed(key: SecretKey, token: str, i: int) -> int:
    """63-bit generator seed of the person's i-th candidate: unpredictable without the key."""
    return int.from_bytes(key.hmac(f"virtual:{token}:{i}")[:8], "little") & (2**63 - 1)


def candidate_latents(generator: Generator, key: SecretKey, token: str, start: int, stop: int) -> torch.Tensor:
    """(stop - start, *shape) latents of candidates start..stop-1."""
    return torch.cat([generator.sample(1, candidate_seed(key, token, i)) for i in range(start, stop)])


@torch.no_grad()
def embed_generated(generator: Generator, identity: IdentityEncoder, template: torch.Tensor,
                    latents: torch.Tensor, attributes: AttributeEncoder | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(N, *shape) latents -> (N, D) identity embeddings of their faces (cropped by the frame
    template (5,2)) and, with `attributes`, their (N, A) attribute pairing features."""
    res = generator.resolution
    emb, att = [], []
    device = device_of(generator)  # the networks' device (the run's); results come back to the CPU
    for part in latents.split(EMBED_BATCH):
        part = part.to(device)
        lm = (template * res).to(device).expand(len(part), -1, -1)
        image = generator.synthesize(part).float()
        emb.append(identity.embed(image, identity.crop_theta(lm, (res, res))).float().cpu())
        if attributes is not None:
            att.append(attributes.pairing_features(image, attributes.crop_thetas(lm, (res, res))).float().cpu())
    return torch.cat(emb), (torch.cat(att) if att else None)


def population_center(generator: Generator, identity: IdentityEncoder, template: torch.Tensor,
                      samples: int) -> torch.Tensor:
    """(D,) mean embedding of `samples` generator faces from a public, key-independent seed."""
    latents = torch.cat([generator.sample(min(EMBED_BATCH, samples - s), stream_seed("keyed-center", s))
                         for s in range(0, samples, EMBED_BATCH)])
    return embed_generated(generator, identity, template, latents)[0].mean(0)


def target_of(embedding: torch.Tensor, center: torch.Tensor, distinctiveness: float) -> torch.Tensor:
    """(..., D): the point `distinctiveness` times as far from the center as the face."""
    return center + distinctiveness * (embedding - center)


def _min_distance(identity: IdentityEncoder, points: torch.Tensor, avoid: torch.Tensor) -> torch.Tensor:
    """(N,) distance from each of points (N,D) to its nearest row of avoid (K,D); inf if K = 0."""
    if len(avoid) == 0:
        return torch.full((len(points),), float("inf"))
    return pairwise(identity, points, avoid).min(1).values


@dataclass
class DrawRules:
    center: torch.Tensor  # (D,) population center
    distinctiveness: float  # target extrapolation factor
    candidates: int  # draws compared per round
    attribute_keep: int  # of the valid draws, this many closest in attributes compete on distinctiveness
    max_draws: int  # error after this many draws for one person
    reject_original: float  # min target distance to each of the person's originals
    min_separation: float  # min target distance to other persons' targets


@dataclass
class Person:
    token: str
    embeddings: torch.Tensor  # (M, D) the person's original embeddings
    attributes: torch.Tensor  # (A,) mean attribute pairing features of the person's originals


def _pick(valid: torch.Tensor, spread: torch.Tensor, attr_sim: torch.Tensor, keep: int) -> int:
    """Index of the most distinctive draw among the `keep` valid draws closest in attributes."""
    sim = torch.where(valid, attr_sim, torch.tensor(-float("inf")))
    short = sim.argsort(descending=True)[:min(keep, int(valid.sum()))]
    return int(short[spread[short].argmax()])


def choose_virtual(generator: Generator, identity: IdentityEncoder, attributes: AttributeEncoder,
                   template: torch.Tensor, key: SecretKey, person: Person, taken: torch.Tensor,
                   rules: DrawRules) -> VirtualIdentity:
    """The person's virtual identity; taken (K,D): targets of the persons before it in token order.

    Draws come `candidates` at a time; the virtual face should share the person's attributes
    (age, gender: what the attribute loss must otherwise fix from a wrong start) and be as
    distinctive as possible (far from the center: unrelated to other keys' draws)."""
    for start in range(0, rules.max_draws, rules.candidates):
        stop = min(start + rules.candidates, rules.max_draws)
        latents = candidate_latents(generator, key, person.token, start, stop)
        emb, att = embed_generated(generator, identity, template, latents, attributes)
        assert att is not None  # attributes were passed
        targets = target_of(emb, rules.center, rules.distinctiveness)
        valid = (_min_distance(identity, targets, person.embeddings) >= rules.reject_original) & \
                (_min_distance(identity, targets, taken) >= rules.min_separation)
        if valid.any():
            spread = identity.distance(emb, rules.center.expand_as(emb))
            j = _pick(valid, spread, torch.nn.functional.cosine_similarity(att, person.attributes[None]),
                      rules.attribute_keep)
            return VirtualIdentity(person.token, start + j, latents[j], emb[j], targets[j])
    raise RuntimeError(f"no acceptable virtual identity in {rules.max_draws} draws for one person: lower "
                       "method.reject_original / method.min_separation or raise method.max_draws")


def virtual_identities(generator: Generator, identity: IdentityEncoder, attributes: AttributeEncoder,
                       template: torch.Tensor, key: SecretKey, tokens: list[str], originals: torch.Tensor,
                       original_attributes: torch.Tensor, rules: DrawRules) -> dict[str, VirtualIdentity]:
    """{token: VirtualIdentity} for every person; per image: tokens (N,), originals (N,D)
    identity embeddings, original_attributes (N,A) attribute pairing features."""
    out: dict[str, VirtualIdentity] = {}
    for token in sorted(set(tokens)):
        mine = [i for i, t in enumerate(tokens) if t == token]
        person = Person(token, originals[mine], original_attributes[mine].mean(0))
        taken = torch.stack([v.target for v in out.values()]) if out else originals[:0]
        out[token] = choose_virtual(generator, identity, attributes, template, key, person, taken, rules)
    return out


def recompute_targets(generator: Generator, identity: IdentityEncoder, template: torch.Tensor, key: SecretKey,
                      chosen: list[tuple[str, int]], center: torch.Tensor, distinctiveness: float) -> torch.Tensor:
    """(P, D) targets of enrolled (token, index) pairs, from the key alone (authentication)."""
    latents = torch.cat([candidate_latents(generator, key, t, i, i + 1) for t, i in chosen])
    return target_of(embed_generated(generator, identity, template, latents)[0], center, distinctiveness)
