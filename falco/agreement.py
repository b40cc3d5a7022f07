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


def gender_age_agreement(pred_original: dict[str, torch.Tensor], pred_anonymized: dict[str, torch.Tensor]) -> dict:
    """{"gender_agreement", "age_abs_diff" (years)} between two `predict` outputs ({"male", "age"}),
    each present when the network predicts it."""
    out = {}
    if "male" in pred_original:
        out["gender_agreement"] = gender_agreement(pred_original["male"], pred_anonymized["male"])["agreement"]
    if "age" in pred_original:
        out["age_abs_diff"] = age_difference(pred_original["age"], pred_anonymized["age"])["mae"]
    return out
