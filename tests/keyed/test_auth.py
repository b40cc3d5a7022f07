"""Enrolment and authentication on toy networks, and the keyed metrics on constructed embeddings."""

from __future__ import annotations

import pytest
import torch

from evaluation.keyed_metrics import chance_interval, consistency, diversity, top1
from falco.keyed.auth import Authenticator, Enrolment, enrol, network_fingerprints
from falco.keyed.key import SecretKey
from falco.keyed.virtual import DrawRules, person_token, population_center, virtual_identities

from . import TEMPLATE, toys

KEY = SecretKey(bytes(range(32)))


@pytest.fixture(scope="module")
def enrolled(tmp_path_factory):
    """40 persons under KEY, the enrolment saved and loaded back."""
    g, idn, att = toys()
    labels = [f"identity:p{i:02d}" for i in range(40)]
    tokens = [person_token(KEY, lab) for lab in labels]
    with torch.no_grad():
        x = g.synthesize(g.sample(40, 5))
    center = population_center(g, idn, TEMPLATE, 64)
    rules = DrawRules(center, 1.5, 4, 2, 64, reject_original=0.3, min_separation=0.3)
    ids = virtual_identities(g, idn, att, TEMPLATE, KEY, tokens, idn.embed(x).detach(),
                             att.pairing_features(x), rules)
    e = enrol(KEY, ids, dict(zip(tokens, labels, strict=True)), center, 1.5, TEMPLATE, network_fingerprints(g, idn))
    path = tmp_path_factory.mktemp("enrol") / "enrolment.json"
    e.save(path)
    return (g, idn), ids, labels, tokens, path


def test_enrolment_round_trip_holds_no_key_material(enrolled):
    _, ids, labels, tokens, path = enrolled
    text = path.read_text()
    for secret in (bytes(range(32)).hex(), bytes(range(32)).hex().upper()):
        assert secret not in text
    e = Enrolment.load(path)
    assert e.key_id == KEY.key_id and sorted(e.labels) == labels
    assert [p["token"] for p in e.persons] == sorted(tokens)
    assert all(p["index"] == ids[p["token"]].index for p in e.persons)
    assert "embedding" not in text and "latent" not in text  # identities come from the key alone


def test_correct_key_recognizes_wrong_key_is_chance(enrolled):
    (g, idn), ids, labels, tokens, path = enrolled
    e = Enrolment.load(path)
    truth = torch.tensor([[p["token"] for p in e.persons].index(t) for t in tokens])
    noise = torch.randn(40, 6, generator=torch.Generator().manual_seed(3)) * 0.05
    probes = torch.stack([ids[t].target for t in tokens]) + noise  # virtual faces near their targets
    auth = Authenticator(e, KEY, g, idn)
    assert (auth.identify(probes) == truth).all()
    assert (auth.identify(probes, open_set_below=0.6) == truth).all()
    hits = []
    for _ in range(10):
        wrong = Authenticator(e, SecretKey.generate(), g, idn, strict=False)
        hits.append(float((wrong.identify(probes) == truth).double().mean()))
        assert (wrong.identify(probes, open_set_below=0.05) == -1).all()  # nothing within reach
    assert sum(hits) / len(hits) < 0.15  # chance is 1/40


def test_strict_authenticator_refuses_another_key_or_other_networks(enrolled):
    (g, idn), _, _, _, path = enrolled
    e = Enrolment.load(path)
    with pytest.raises(ValueError, match="not the one this enrolment was made with"):
        Authenticator(e, SecretKey.generate(), g, idn)
    other = type(idn)()
    torch.nn.init.zeros_(other.proj.weight)
    with pytest.raises(ValueError, match="differs from the enrolment"):
        Authenticator(e, KEY, g, other)


def test_metrics_on_constructed_embeddings():
    dist = lambda a, b: (a - b).norm(dim=-1)  # noqa: E731
    persons = ["a", "a", "b", "b", "c", "c"]
    centres = torch.tensor([[0.0, 0], [5, 0], [0, 5]])
    same_key = centres.repeat_interleave(2, 0) + torch.tensor([[0.1, 0]] * 6) * torch.arange(6)[:, None] % 2
    c = consistency(same_key, persons, dist, 0.6)
    assert c["same_person_verified_same"]["share"] == 1.0 and c["same_person_verified_same"]["pairs"] == 3
    assert c["different_persons_verified_same"]["share"] == 0.0
    other_key = same_key.clone()
    other_key[:2] += 3  # person a moved far, b and c kept their identity
    d = diversity(same_key, persons, other_key, persons, dist, 0.6)
    assert d["pairs"] == 12 and d["same_person_verified_different"] == pytest.approx(4 / 12)
    lo, hi = chance_interval(200, 0.02)
    assert lo < 0.02 < hi and hi < 0.06
    t = top1(torch.tensor([0, 0, 1, 2, 2, 2]), torch.tensor([0, 0, 1, 1, 2, 2]), persons, 3)
    assert t["top1"] == pytest.approx(5 / 6) and t["persons"] == 3
