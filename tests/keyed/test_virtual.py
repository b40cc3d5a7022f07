"""Virtual identities on toy networks: deterministic, key-dependent, order-free, rules enforced."""

from __future__ import annotations

import random

import pytest
import torch

from falco.keyed.key import SecretKey
from falco.keyed.virtual import (
    DrawRules,
    candidate_seed,
    pairwise,
    person_labels,
    person_token,
    population_center,
    recompute_targets,
    virtual_identities,
)

from . import TEMPLATE, toys

KEY_A, KEY_B = SecretKey(b"a" * 16), SecretKey(b"b" * 32)


def _setup(key: SecretKey, n_persons: int = 12, views: int = 2, **rules):
    g, idn, att = toys()
    labels = [f"identity:p{i}" for i in range(n_persons) for _ in range(views)]
    tokens = [person_token(key, lab) for lab in labels]
    with torch.no_grad():
        x = g.synthesize(g.sample(len(labels), 99))
        originals, attrs = idn.embed(x), att.pairing_features(x)
    center = population_center(g, idn, TEMPLATE, 64)
    kw = dict(distinctiveness=1.5, candidates=8, attribute_keep=3, max_draws=64, reject_original=0.6,
              min_separation=0.6) | rules
    ids = virtual_identities(g, idn, att, TEMPLATE, key, tokens, originals, attrs, DrawRules(center, **kw))
    return (g, idn, att), tokens, originals, center, ids


def test_tokens_and_seeds_are_hmacs_of_the_key():
    assert person_token(KEY_A, "identity:x") == person_token(SecretKey(b"a" * 16), "identity:x")
    assert person_token(KEY_A, "identity:x") != person_token(KEY_B, "identity:x")
    assert person_token(KEY_A, "identity:x") != person_token(KEY_A, "identity:y")
    t = person_token(KEY_A, "identity:x")
    assert candidate_seed(KEY_A, t, 0) != candidate_seed(KEY_A, t, 1) != candidate_seed(KEY_B, t, 1)
    assert 0 <= candidate_seed(KEY_A, t, 3) < 2**63


def test_same_key_same_identities_other_key_unrelated():
    _, tokens, _, _, ids = _setup(KEY_A)
    _, tokens2, _, _, ids2 = _setup(KEY_A)
    assert tokens == tokens2 and len(ids) == 12
    for t in ids:
        assert ids[t].index == ids2[t].index and torch.equal(ids[t].target, ids2[t].target)
    _, tokens_b, _, _, ids_b = _setup(KEY_B)
    assert not set(tokens) & set(tokens_b)
    a = torch.stack([ids[t].latent for t in sorted(set(tokens), key=tokens.index)])
    b = torch.stack([ids_b[t].latent for t in sorted(set(tokens_b), key=tokens_b.index)])
    assert not torch.isclose(a, b).all(1).any()  # no person keeps its virtual face under another key


def test_rules_hold_and_recomputation_from_key_matches():
    (g, idn, _), tokens, originals, center, ids = _setup(KEY_A)
    targets = torch.stack([v.target for v in ids.values()])
    d = pairwise(idn, targets, targets) + torch.eye(len(targets)) * 9
    assert d.min() >= 0.6  # min_separation between persons
    for t, v in ids.items():
        mine = originals[[i for i, s in enumerate(tokens) if s == t]]
        assert pairwise(idn, v.target[None], mine).min() >= 0.6  # reject_original
        torch.testing.assert_close(v.target, center + 1.5 * (v.embedding - center))
    chosen = [(t, v.index) for t, v in sorted(ids.items())]
    again = recompute_targets(g, idn, TEMPLATE, KEY_A, chosen, center, 1.5)
    torch.testing.assert_close(again, torch.stack([ids[t].target for t, _ in chosen]))


def test_impossible_rules_fail_clearly():
    with pytest.raises(RuntimeError, match="no acceptable virtual identity in 16 draws"):
        _setup(KEY_A, n_persons=2, reject_original=1e6, max_draws=16)


def test_grouping_identity_labels_and_order_free_clusters():
    g, idn, _ = toys()
    with torch.no_grad():
        faces = idn.embed(g.synthesize(g.sample(5, 7)))
    # 5 people, 3 photos each (tiny noise), no labels: clusters must find them
    noise = torch.randn(15, faces.shape[1], generator=torch.Generator().manual_seed(0))
    emb = faces.repeat_interleave(3, 0) + 0.01 * noise
    ids = [f"img{i:02d}" for i in range(15)]
    labels = person_labels(ids, [None] * 15, emb, idn, "auto", 0.3, "complete")
    assert len(set(labels)) == 5 and labels[0] == labels[1] == labels[2] == "cluster:img00"
    order = list(range(15))
    random.Random(1).shuffle(order)
    shuffled = person_labels([ids[k] for k in order], [None] * 15, emb[order], idn, "auto", 0.3, "complete")
    assert {ids[k]: lab for k, lab in zip(order, shuffled, strict=True)} == dict(zip(ids, labels, strict=True))
    named = person_labels(ids, ["ann"] * 3 + [None] * 12, emb, idn, "auto", 0.3, "complete")
    assert named[:3] == ["identity:ann"] * 3 and named[3] == "cluster:img03"
    assert person_labels(ids, ["ann"] * 15, emb, idn, "cluster", 0.3, "complete") == labels
    with pytest.raises(ValueError, match="no identity label"):
        person_labels(ids, [None] * 15, emb, idn, "identity", 0.3, "complete")
