"""Re-identification metrics on constructed embeddings with known answers."""

import math

import torch

from evaluation.metrics.consistency import identity_consistency
from falco.reid import (
    cosine_distance,
    cosine_distance_matrix,
    far_threshold,
    identification,
    matrix_from_pair_distance,
    verification,
)


def test_identical_embeddings_are_all_reidentified():
    g = torch.randn(20, 8, generator=torch.Generator().manual_seed(0))
    out = identification(g.clone(), torch.arange(20), g, torch.arange(20))
    assert out["top1"] == 1.0 and out["top5"] == 1.0
    assert out["n_evaluated"] == 20 and out["n_identities"] == 20


def test_swapped_identities_give_zero_top1_and_ties_count_as_found():
    g = torch.eye(10)  # orthogonal: every wrong identity sits at cosine distance 1
    probe = g.roll(1, dims=0)  # probe i looks exactly like person i-1
    out = identification(probe, torch.arange(10), g, torch.arange(10))
    assert out["top1"] == 0.0
    # The true identity ties with 8 others at distance 1: rank 1, so it is in the top 5.
    assert out["top5"] == 1.0


def test_top1_is_tested_against_chance():
    """3 of 21 found (chance 1/21): p = 1 - P(0, 1 or 2 hits) = 0.075, not beyond chance; all 21
    found: p = (1/21)^21; none found: p = 1. The Wilson interval holds the rate."""
    g = torch.eye(21)
    probe = g.clone()
    probe[3:] = g[3:].roll(1, dims=0)  # probes 3..20 look like somebody else
    out = identification(probe, torch.arange(21), g, torch.arange(21))
    assert out["top1"] == 3 / 21
    p0 = (20 / 21) ** 21
    p1 = 21 * (1 / 21) * (20 / 21) ** 20
    p2 = 210 * (1 / 21) ** 2 * (20 / 21) ** 19
    assert math.isclose(out["top1_p_above_chance"], 1 - p0 - p1 - p2, rel_tol=1e-9)
    assert out["top1_ci95"][0] < 3 / 21 < out["top1_ci95"][1]
    assert math.isclose(identification(g, torch.arange(21), g, torch.arange(21))["top1_p_above_chance"],
                        (1 / 21) ** 21, rel_tol=1e-9)
    assert identification(g.roll(1, dims=0), torch.arange(21), g, torch.arange(21))["top1_p_above_chance"] == 1.0


def test_exclude_self_uses_other_photos_and_skips_single_image_people():
    gen = torch.Generator().manual_seed(1)
    centers = torch.randn(4, 16, generator=gen) * 5
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 3])  # person 3 has one photo only
    gallery = centers[labels] + 0.01 * torch.randn(7, 16, generator=gen)
    out = identification(gallery.clone(), labels, gallery, labels, exclude_self=True,
                         self_index=torch.arange(7), distance_matrix=torch.cdist)
    assert out["top1"] == 1.0 and out["n_evaluated"] == 6 and out["n_skipped"] == 1


def test_string_labels_and_pairwise_distance_adapter():
    g = torch.randn(6, 4, generator=torch.Generator().manual_seed(2))
    names = ["ann", "bob", "cat", "dan", "eve", "fay"]
    via_pairs = matrix_from_pair_distance(cosine_distance, max_elements=4 * 6 * 4)  # 4 rows a call
    assert torch.allclose(via_pairs(g, g), cosine_distance_matrix(g, g), atol=1e-6)
    out = identification(g, names, g, names, distance_matrix=via_pairs, chunk_size=4)
    assert out["top1"] == 1.0


def test_far_threshold_accepts_at_most_far():
    d = torch.linspace(0, 1, 10_000)
    t = far_threshold(d, 1e-2)
    assert (d < t).float().mean() <= 1e-2 and (d <= t).float().mean() > 1e-2


def _line(n):
    """1-d embeddings o_i = i with |a-b| distance: impostor distances known exactly."""
    originals = torch.arange(n, dtype=torch.float32)[:, None]
    shift = torch.where(torch.arange(n) < n // 2, 0.5, 3.0)[:, None]
    return originals + shift, originals, lambda a, b: (a - b).abs().sum(1)


def test_verification_on_known_score_distributions():
    anonymized, originals, dist = _line(200)
    out = verification(anonymized, originals, distance=dist, same_person_below=1.5)
    assert out["n_impostor_pairs"] == 200 * 199 // 2
    # 199 pairs sit at distance 1 = 1% of the impostors: FAR 1e-2 accepts them (t = 2).
    e2 = out["at_far"]["0.01"]
    assert e2["threshold"] == 2.0 and math.isclose(e2["far_achieved"], 0.01)
    assert e2["tar"] == 0.5 and not e2["underpowered"]
    assert e2["tar_ci95"][0] < 0.5 < e2["tar_ci95"][1]
    e3 = out["at_far"]["0.001"]  # only 19 pairs may be accepted, ties at 1 forbid it: t = 1
    assert e3["threshold"] == 1.0 and e3["far_achieved"] == 0.0 and e3["tar"] == 0.5
    assert out["native"]["reid_rate"] == 0.5
    assert math.isclose(out["native"]["false_match_rate"], 199 / 19900)
    assert e2["original_tar"] is None  # no identity labels: no genuine original pairs


def test_verification_flags_small_samples_and_reports_genuine_originals():
    anonymized, originals, dist = _line(30)  # 435 impostor pairs
    labels = torch.arange(30) // 2  # pairs of photos: 15 genuine original pairs
    out = verification(anonymized, originals, distance=dist, labels=labels)
    assert out["at_far"]["0.001"]["underpowered"] and not out["at_far"]["0.01"]["underpowered"]
    assert out["n_genuine_original_pairs"] == 15 and out["n_impostor_pairs"] == 435 - 15
    assert out["at_far"]["0.01"]["original_tar"] is not None and out["native"] is None


def test_verification_samples_pairs_when_too_many():
    anonymized, originals, dist = _line(100)
    out = verification(anonymized, originals, distance=dist, max_pairs=500)
    assert out["n_impostor_pairs"] == 500 and out["at_far"]["0.001"]["underpowered"]


def test_consistency_on_constructed_clusters():
    gen = torch.Generator().manual_seed(3)
    centers = torch.randn(5, 32, generator=gen)
    labels = torch.arange(20) // 4
    emb = centers[labels] + 0.05 * torch.randn(20, 32, generator=gen)
    out = identity_consistency(emb, labels, same_person_below=0.3)
    assert out["same_person"]["n_pairs"] == 5 * 6 and out["different_people"]["n_pairs"] == 190 - 30
    assert out["same_person"]["share_verified_same"] == 1.0
    assert out["different_people"]["share_verified_same"] == 0.0
    assert out["gap"] > 0.5
    unrelated = identity_consistency(torch.randn(20, 32, generator=gen), labels)
    assert abs(unrelated["gap"]) < 0.2  # FALCO-like: same person no closer than strangers


def test_failed_embeddings_are_skipped_and_counted():
    g = torch.randn(5, 8, generator=torch.Generator().manual_seed(4))
    probe = g.clone()
    probe[0] = math.nan  # no face found in this anonymized image
    out = identification(probe, torch.arange(5), g, torch.arange(5))
    assert out["n_skipped"] == 1 and out["n_evaluated"] == 4 and out["top1"] == 1.0
