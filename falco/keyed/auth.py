"""Enrolment and authentication: which enrolled person does a virtual face belong to?

Enrolment (private/keyed/enrolment.json, kept by the key holder) stores per person only the
keyed token, the index of the kept candidate draw and the person label (dataset identity or
cluster name), plus public facts: the population center, the distinctiveness factor, the
generator frame template, the networks' fingerprints and the key's check value. No image, no
original embedding, no virtual embedding: every virtual identity is recomputed from the key,
so with a wrong key the recomputed identities are unrelated draws and recognition falls to
chance.

Authentication embeds a probe (a released virtual face, aligned in the generator frame, so
it is cropped by the frame template: the key holder never needs the original) and assigns it
to the nearest recomputed target; with `open_set_below` a probe farther than that from every
target is rejected (-1).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ..backbones.base import Generator, IdentityEncoder
from ..data.imageio import atomic_write_text
from .key import SecretKey
from .virtual import VirtualIdentity, pairwise, recompute_targets

VERSION = 1


@dataclass
class Enrolment:
    key_id: str  # the key's public check value (SecretKey.key_id)
    persons: list[dict]  # [{"token": hex, "index": int, "label": str}], sorted by token
    center: list[float]  # (D,) population center
    distinctiveness: float  # target = center + distinctiveness * (embedding - center)
    template: list[list[float]]  # (5,2) generator frame landmarks, unit coordinates
    networks: dict[str, str]  # {"generator": fingerprint, "identity": fingerprint}
    version: int = VERSION

    @property
    def labels(self) -> list[str]:
        return [p["label"] for p in self.persons]

    def save(self, path: str | Path) -> None:
        atomic_write_text(path, json.dumps(asdict(self), indent=1))

    @classmethod
    def load(cls, path: str | Path) -> Enrolment:
        data = json.loads(Path(path).read_text())
        if data.get("version") != VERSION:
            raise ValueError(f"{path}: enrolment version {data.get('version')} is not {VERSION}")
        return cls(**data)


def enrol(key: SecretKey, identities: dict[str, VirtualIdentity], label_of: dict[str, str],
          center: torch.Tensor, distinctiveness: float, template: torch.Tensor,
          networks: dict[str, str]) -> Enrolment:
    """The enrolment of every person; label_of maps a token to its person label."""
    persons = [{"token": t, "index": v.index, "label": label_of[t]} for t, v in sorted(identities.items())]
    return Enrolment(key.key_id, persons, [round(float(x), 8) for x in center], float(distinctiveness),
                     template.tolist(), {k: networks[k] for k in ("generator", "identity")})


def network_fingerprints(generator: Generator, identity: IdentityEncoder) -> dict[str, str]:
    from ..stages.cache import module_fingerprint

    return {k: f"{type(v).__name__}:{module_fingerprint(v)}" for k, v in
            (("generator", generator), ("identity", identity))}


class Authenticator:
    """Recomputes the enrolled virtual identities from `key` and matches probes to them.

    strict: refuse a key whose check value differs from the enrolment's, or other networks
    (the evaluation turns it off to measure what a wrong key gives).
    """

    def __init__(self, enrolment: Enrolment, key: SecretKey, generator: Generator, identity: IdentityEncoder,
                 *, strict: bool = True) -> None:
        if strict and key.key_id != enrolment.key_id:
            raise ValueError(f"the key (id {key.key_id}) is not the one this enrolment was made with "
                             f"(id {enrolment.key_id})")
        if strict and network_fingerprints(generator, identity) != enrolment.networks:
            raise ValueError("the generator or recognizer differs from the enrolment's: virtual identities "
                             "cannot be recomputed")
        self.enrolment, self.generator, self.identity = enrolment, generator, identity
        self.template = torch.tensor(enrolment.template, dtype=torch.float32)
        chosen = [(p["token"], int(p["index"])) for p in enrolment.persons]
        self.targets = recompute_targets(generator, identity, self.template, key, chosen,
                                         torch.tensor(enrolment.center), enrolment.distinctiveness)  # (P, D)

    @torch.no_grad()
    def embed_probes(self, images: torch.Tensor) -> torch.Tensor:
        """(N,3,S,S) released faces in [-1,1], in the generator frame -> (N,D), template crop."""
        res = self.generator.resolution
        if images.shape[-1] != res:
            images = torch.nn.functional.interpolate(images, size=(res, res), mode="bilinear",
                                                     align_corners=False, antialias=True)
        lm = (self.template * res).expand(len(images), -1, -1)
        return self.identity.embed(images, self.identity.crop_theta(lm, (res, res))).float()

    def identify(self, probes: torch.Tensor, open_set_below: float | None = None) -> torch.Tensor:
        """(N,) index of the nearest enrolled person per probe embedding (N,D); -1 = rejected."""
        d = pairwise(self.identity, probes.float(), self.targets)  # (N, P)
        best, index = d.min(1)
        if open_set_below is not None:
            index = torch.where(best < open_set_below, index, torch.full_like(index, -1))
        return index

    def who(self, images: torch.Tensor, open_set_below: float | None = None) -> list[str | None]:
        """Person label (or None when rejected) of each released face (N,3,S,S)."""
        index = self.identify(self.embed_probes(images), open_set_below)
        return [self.enrolment.labels[i] if i >= 0 else None for i in index.tolist()]

