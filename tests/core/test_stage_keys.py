"""Stage cache keys hold the identity of every network's weights: swapping one recomputes
exactly the stages that use it (and the stages that read theirs), and reuses the rest."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from torch import nn

from falco.detect import FaceDetector
from falco.pipeline import Networks, StageKnobs, run_stages
from falco.stages.cache import StageCache, module_fingerprint
from tests.core.stage_nets import TinyInversion, stage_parts

STAGES = {"frame", "prepare", "invert", "fakepool", "pairing"}


def perturbed(net: nn.Module) -> nn.Module:
    """A copy whose first floating-point parameter is scaled by 1.001 (the same network, other weights)."""
    other = copy.deepcopy(net)
    with torch.no_grad():
        next(p for p in other.parameters() if p.is_floating_point()).mul_(1.001)
    return other


@pytest.fixture(scope="module")
def parts():
    return stage_parts()


@pytest.fixture(scope="module")
def first(parts, tmp_path_factory):
    """The cache and the stages of the first run, every stage computed."""
    cache = StageCache(tmp_path_factory.mktemp("cache"))
    return cache, _run(parts, cache)


def _run(parts, cache, **swap):
    nets = {k: v for k, v in parts.items() if k != "source"} | swap
    return run_stages(Networks(**nets), parts["source"], cache, StageKnobs(pool_size=64, frame_samples=16, batch=2))


def _changed(a, b) -> set[str]:
    return {s for s in a.keys if a.keys[s] != b.keys[s]}


def test_swapping_a_network_recomputes_exactly_the_stages_that_use_it(parts, first):
    cache, base = first
    assert set(base.keys) == STAGES and not any(base.reused.values())

    # Same inversion class and knobs, other weights (a swapped encoder checkpoint).
    inv = _run(parts, cache, inversion=TinyInversion(seed=1))
    assert _changed(base, inv) == {"invert"} and not inv.reused["invert"]
    assert all(inv.reused[s] for s in STAGES - {"invert"})
    assert not torch.allclose(inv.inversion, base.inversion)
    # Only a non-persistent buffer differs (what e4e's latent_avg is): a new inversion too.
    avg = _run(parts, cache, inversion=TinyInversion(seed=0, offset=0.5))
    assert _changed(base, avg) == {"invert"} and not avg.reused["invert"]
    assert torch.allclose(avg.inversion, base.inversion + 0.5)

    # The attribute network: the fake pool's features and the pairing's.
    att = _run(parts, cache, attributes=perturbed(parts["attributes"]))
    assert _changed(base, att) == {"fakepool", "pairing"}
    assert [s for s in sorted(STAGES) if not att.reused[s]] == ["fakepool", "pairing"]

    # The generator: every stage depends on it (frame -> prepare -> invert, pairing; fake pool).
    gen = _run(parts, cache, generator=perturbed(parts["generator"]))
    assert _changed(base, gen) == STAGES and not any(gen.reused.values())

    # Nothing swapped: everything is reused under the first keys.
    again = _run(parts, cache)
    assert again.keys == base.keys and all(again.reused.values())


def test_mtcnn_weights_and_knobs_are_in_the_keys_of_the_stages_that_detect(parts, first):
    cache, base = first
    nets = Networks(**{k: v for k, v in parts.items() if k != "source"})
    fp = nets.fingerprints()["detector"]
    for stage in ("frame", "prepare", "fakepool"):
        spec = json.loads((cache.entry(stage, base.keys[stage]) / "spec.json").read_text())
        assert spec["detector"] == fp
    other = FaceDetector()
    other.mtcnn = perturbed(other.mtcnn)
    upscaled = FaceDetector(min_side=200)
    prints = {fp} | {Networks(**{**vars(nets), "detector": d}).fingerprints()["detector"] for d in (other, upscaled)}
    assert len(prints) == 3


def test_fingerprint_of_non_persistent_buffers_only_when_asked():
    a, b = TinyInversion(seed=0), TinyInversion(seed=0, offset=1.0)
    assert module_fingerprint(a) == module_fingerprint(b)  # the state dict alone (as before)
    assert module_fingerprint(a, all_buffers=True) != module_fingerprint(b, all_buffers=True)
    assert module_fingerprint(a, all_buffers=True) == module_fingerprint(TinyInversion(seed=0), all_buffers=True)


def test_distinct_pairing_gives_different_people_different_looking_fakes(parts, first):
    """stages.pairing_distinct: only the pairing stage is recomputed, the run's recognizer embeds
    the candidate fakes, and no two originals start from fakes it calls one person (unless the
    run said so: counted as fallbacks)."""
    cache, base = first
    nets = Networks(**{k: v for k, v in parts.items() if k != "source"})
    calls = []
    hooks = [m.register_forward_pre_hook(lambda m, args: calls.append(args[0].shape[0]))
             for m in nets.identity.modules()]
    try:
        distinct = run_stages(nets, parts["source"], cache,
                              StageKnobs(pool_size=64, frame_samples=16, batch=2, pairing_unique=True,
                                         pairing_distinct=True))
    finally:
        for h in hooks:
            h.remove()
    unique = run_stages(nets, parts["source"], cache,
                        StageKnobs(pool_size=64, frame_samples=16, batch=2, pairing_unique=True))
    assert _changed(distinct, unique) == {"pairing"} and _changed(unique, base) == {"pairing"}
    assert calls and max(calls) <= 2  # candidate fakes embedded, in batches of stages.batch
    idx = distinct.pair_index
    assert len(set(idx.tolist())) == len(idx)  # still unique
    from falco.pipeline import _fake_identities
    emb = _fake_identities(nets, distinct.pool["latents"][idx], distinct.template, 2, "cpu")
    d = torch.cdist(emb, emb)
    same = (d < nets.identity.same_person_below) & ~torch.eye(len(idx), dtype=torch.bool)
    assert not same.any()
