"""Keyed mode (after KFAAR, NDSS 2025): per-person virtual identities under a secret key.

`apply_keyed` runs after the cached stages and before the optimization: it loads the key,
groups the originals into persons, derives each person's virtual identity from the key
(falco/keyed/virtual.py), sets `stages.virtual` (the pull target per image) and
`stages.virtual_init` (the virtual face's latent, where the optimization starts), and writes
the enrolment (falco/keyed/auth.py) and the image -> person-token assignment to private/keyed/.
The key itself is never stored, logged or passed on: only HMACs of it leave this package.
"""

from __future__ import annotations

import json

import torch
from pytorch_lightning.utilities import rank_zero_only

from ..data.imageio import atomic_write_text
from ..device import device_of, on_device
from ..pipeline import Networks, StageOutputs
from ..rundir import RunDir
from .auth import Authenticator, Enrolment, enrol, network_fingerprints
from .config import KeyedMethodConfig, register_keyed, validate_keyed
from .key import KeyLoadError, SecretKey, load_key
from .virtual import DrawRules, person_labels, person_token, population_center, virtual_identities

__all__ = ["apply_keyed", "Authenticator", "Enrolment", "KeyedMethodConfig", "KeyLoadError", "SecretKey",
           "load_key", "register_keyed", "enrolment_path", "assignment_path"]

BATCH = 32  # originals embedded per call


def enrolment_path(run: RunDir):
    return run.private / "keyed" / "enrolment.json"


def assignment_path(run: RunDir):
    return run.private / "keyed" / "assignment.json"


@torch.no_grad()
def describe_originals(stages: StageOutputs, nets: Networks) -> tuple[torch.Tensor, torch.Tensor]:
    """(n_ok, D) recognizer embeddings and (n_ok, A) attribute pairing features of the aligned
    originals, each network with its own landmark crop."""
    res, emb, att = nets.generator.resolution, [], []
    ok = stages.prepared.ok
    for s in range(0, len(ok), BATCH):
        images, lms = zip(*(stages.prepared.get(e) for e in ok[s:s + BATCH]), strict=True)
        x, lm = torch.stack(images).to(device_of(nets.identity)), torch.stack(lms).float().to(device_of(nets.identity))
        emb.append(nets.identity.embed(x, nets.identity.crop_theta(lm, (res, res))).float().cpu())
        att.append(nets.attributes.pairing_features(x, nets.attributes.crop_thetas(lm, (res, res))).float().cpu())
    return torch.cat(emb), torch.cat(att)


def draw_rules(method: KeyedMethodConfig, nets: Networks, center: torch.Tensor) -> DrawRules:
    same = nets.identity.same_person_below
    margin = nets.identity.margin_distance(method.margin) if method.margin is not None else same
    return DrawRules(center, method.distinctiveness, method.candidates, method.attribute_keep, method.max_draws,
                     reject_original=method.reject_original if method.reject_original is not None
                     else max(same, margin),
                     min_separation=method.min_separation if method.min_separation is not None else same)


def _check_same_key(run: RunDir, key: SecretKey) -> None:
    """A run directory keeps one key: resuming with another would mix virtual identities."""
    path = enrolment_path(run)
    if path.is_file() and Enrolment.load(path).key_id != key.key_id:
        raise ValueError(f"{run.root} was started with another key (enrolment key id "
                         f"{Enrolment.load(path).key_id}, this key {key.key_id}); use a new run directory")


def apply_keyed(stages: StageOutputs, nets: Networks, method: KeyedMethodConfig, run: RunDir,
                device: str | torch.device = "cpu") -> Enrolment:
    """The networks compute on the run's `device`; every result lands on the CPU."""
    validate_keyed(method)
    key = load_key(method.key_file, method.key_env)
    _check_same_key(run, key)
    ok = stages.prepared.ok
    with on_device(device, nets.generator, nets.identity, nets.attributes):
        originals, original_attributes = describe_originals(stages, nets)
        threshold = (method.cluster_threshold if method.cluster_threshold is not None
                     else nets.identity.same_person_below)
        labels = person_labels([e["id"] for e in ok], [e.get("identity") for e in ok], originals, nets.identity,
                               method.grouping, threshold, method.cluster_linkage)
        tokens = [person_token(key, lab) for lab in labels]
        center = population_center(nets.generator, nets.identity, stages.template, method.center_samples)
        identities = virtual_identities(nets.generator, nets.identity, nets.attributes, stages.template, key,
                                        tokens, originals, original_attributes, draw_rules(method, nets, center))
    stages.virtual = torch.stack([identities[t].target for t in tokens])  # (n_ok, D) pull targets
    stages.virtual_init = torch.stack([identities[t].latent for t in tokens])  # (n_ok, *shape) starts
    enrolment = enrol(key, identities, dict(zip(tokens, labels, strict=True)), center, method.distinctiveness,
                      stages.template, network_fingerprints(nets.generator, nets.identity))
    if getattr(rank_zero_only, "rank", 0) != 0:  # every DDP rank computes the same; one writes
        return enrolment
    enrolment.save(enrolment_path(run))
    atomic_write_text(assignment_path(run), json.dumps({e["id"]: t for e, t in zip(ok, tokens, strict=True)},
                                                       indent=0, sort_keys=True))
    print(f"keyed: {len(identities)} persons for {len(ok)} images under key id {key.key_id}; "
          f"enrolment in {enrolment_path(run)}", flush=True)
    return enrolment
