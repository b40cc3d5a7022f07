"""Identity consistency of anonymized images, for datasets that label identities.

Compares anonymized images of the SAME person with anonymized images of DIFFERENT people, in
a judge's native distance. FALCO pairs every image with its own fake, so two photos of one
person should get unrelated new identities (same ~ different); a key-driven mode aims at one
consistent virtual identity per person and key (same << different). Both are read from:
    mean distance of same-person pairs vs different-people pairs, and the share of each that
    the judge verifies as one person (distance < same_person_below).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from falco.reid import (
    PairDistance,
    as_labels,
    cosine_distance,
    genuine_pairs,
    impostor_pairs,
    pair_distances,
)


def _summary(d: torch.Tensor, same_person_below: float | None) -> dict:
    """Mean distance, share verified as one person and count, NaN distances ignored."""
    d = d[~torch.isnan(d)]
    n = int(len(d))
    share = None
    if same_person_below is not None:
        share = float((d < same_person_below).double().mean()) if n else math.nan
    return {"mean_distance": float(d.mean()) if n else math.nan, "share_verified_same": share,
            "n_pairs": n}


def identity_consistency(anonymized: torch.Tensor, labels: torch.Tensor | Sequence, *,
                         distance: PairDistance = cosine_distance,
                         same_person_below: float | None = None,
                         max_pairs: int = 1_000_000, seed: int = 0) -> dict:
    """Same-person vs different-people statistics of anonymized embeddings.

    anonymized (N,D): embeddings of anonymized images; labels (N,): identity of each image's
    original. Pairs are all pairs, or uniform samples of `max_pairs` (seeded).
    Returns {"same_person": {...}, "different_people": {...}, "gap": mean_diff - mean_same,
             "n_images", "n_identities"}; "gap" near 0 = no consistency, large = consistent.
    """
    lab = as_labels(labels, anonymized.shape[0])
    gen = torch.Generator().manual_seed(seed)
    same = _summary(pair_distances(distance, anonymized, anonymized, genuine_pairs(lab, max_pairs, gen)),
                    same_person_below)
    diff = _summary(pair_distances(distance, anonymized, anonymized, impostor_pairs(lab, max_pairs, gen)),
                    same_person_below)
    return {"same_person": same, "different_people": diff,
            "gap": diff["mean_distance"] - same["mean_distance"],
            "n_images": int(anonymized.shape[0]), "n_identities": int(torch.unique(lab).numel())}
