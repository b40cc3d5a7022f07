"""Attribute agreement of anonymized faces with their originals: gender and age.

Inputs are one attribute network's predictions on the originals and on the anonymized images,
(N,) each: gender as a probability of "male" (or a 0/1 label), binarized at `threshold`; age in
years. NaN entries (no face found, no prediction) are left out and counted. The run's summary
(falco/summary.py), the held-out judges (falco/heldout.py) and the evaluation suite
(evaluation/run_eval.py, evaluation/keyed_metrics.py) all report these figures through here.
"""

from __future__ import annotations

import math

import torch


def _paired(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Flattened float64 pairs without NaN on either side, and how many were dropped."""
    a, b = a.double().flatten(), b.double().flatten()
    if a.shape != b.shape:
        raise ValueError(f"{a.numel()} original values but {b.numel()} anonymized values")
    ok = ~(torch.isnan(a) | torch.isnan(b))
    return a[ok], b[ok], int((~ok).sum())


def age_difference(age_original: torch.Tensor, age_anonymized: torch.Tensor) -> dict:
    """Mean absolute age difference in years (and median, and mean signed anon - orig)."""
    a, b, missing = _paired(age_original, age_anonymized)
    n = int(a.numel())
    diff = b - a
    return {"mae": float(diff.abs().mean()) if n else math.nan,
            "median_ae": float(diff.abs().median()) if n else math.nan,
            "mean_signed": float(diff.mean()) if n else math.nan, "n": n, "n_missing": missing}


def gender_agreement(gender_original: torch.Tensor, gender_anonymized: torch.Tensor, *,
                     threshold: float = 0.5) -> dict:
    """Share of images whose binarized gender (label or probability) is unchanged."""
    a, b, missing = _paired(gender_original, gender_anonymized)
    n = int(a.numel())
    same = (a >= threshold) == (b >= threshold)
    return {"agreement": float(same.double().mean()) if n else math.nan, "n": n, "n_missing": missing}


def gender_vs_truth(male_original: torch.Tensor, male_anonymized: torch.Tensor, truth: torch.Tensor, *,
                    threshold: float = 0.5) -> dict:
    """A judge's gender reading of the originals and of the anonymized faces against each image's
    true gender (truth: 1 man, 0 woman, NaN unknown; images with a NaN anywhere are left out):
    how often it is right on each, and, per true gender, how often it reads men as men and women
    as women before and after. A method that turns everyone into one gender keeps that gender
    "right" and the other wrong: the per-gender shares show it where the overall one may not."""
    x, y, t = male_original.double().flatten(), male_anonymized.double().flatten(), truth.double().flatten()
    if not x.shape == y.shape == t.shape:
        raise ValueError(f"{x.numel()} originals, {y.numel()} anonymized, {t.numel()} true genders")
    known = ~(torch.isnan(x) | torch.isnan(y) | torch.isnan(t))
    x, y, t = x[known] >= threshold, y[known] >= threshold, t[known] >= 0.5

    def share(mask: torch.Tensor, right: torch.Tensor) -> float | None:
        return float(right[mask].double().mean()) if bool(mask.any()) else None

    every = torch.ones_like(t)
    return {"n": int(t.numel()), "n_men": int(t.sum()), "n_women": int((~t).sum()),
            "originals_right": share(every, x == t), "anonymized_right": share(every, y == t),
            "men_read_male": {"originals": share(t, x), "anonymized": share(t, y)},
            "women_read_female": {"originals": share(~t, ~x), "anonymized": share(~t, ~y)}}


def gender_age_agreement(pred_original: dict[str, torch.Tensor], pred_anonymized: dict[str, torch.Tensor]) -> dict:
    """{"gender_agreement", "age_abs_diff" (years)} between two `predict` outputs ({"male", "age"}),
    each present when the network predicts it."""
    out = {}
    if "male" in pred_original:
        out["gender_agreement"] = gender_agreement(pred_original["male"], pred_anonymized["male"])["agreement"]
    if "age" in pred_original:
        out["age_abs_diff"] = age_difference(pred_original["age"], pred_anonymized["age"])["mae"]
    return out
