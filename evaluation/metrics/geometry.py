"""Geometry preservation: 5-point landmark error between original and anonymized faces.

NME (normalized mean error) per image = mean over the 5 points of the Euclidean distance
between the original's and the anonymized image's landmarks, divided by the original's
inter-ocular distance (eye centre to eye centre), so the number does not depend on image size.
Point order is MTCNN's: left eye, right eye, nose, left mouth corner, right mouth corner.

A face the detector missed has NaN landmarks; such images are left out of the averages and
counted (a missed anonymized face is also a detection failure, reported by detection.py).
"""

from __future__ import annotations

import math

import torch

LEFT_EYE, RIGHT_EYE = 0, 1


def per_image_nme(original: torch.Tensor, anonymized: torch.Tensor) -> torch.Tensor:
    """(N,) NME of (N,5,2) landmark sets in pixels; NaN where either face is missing."""
    if original.shape != anonymized.shape or original.shape[-2:] != (5, 2):
        raise ValueError(f"expected two (N,5,2) landmark tensors, got {tuple(original.shape)} "
                         f"and {tuple(anonymized.shape)}")
    original, anonymized = original.double(), anonymized.double()
    iod = (original[:, LEFT_EYE] - original[:, RIGHT_EYE]).norm(dim=-1)  # (N,)
    err = (original - anonymized).norm(dim=-1).mean(dim=-1)  # (N,) mean point error
    iod = torch.where(iod > 0, iod, torch.nan)  # degenerate eyes: cannot normalize
    return err / iod


def landmark_nme(original: torch.Tensor, anonymized: torch.Tensor, *,
                 failure_threshold: float = 0.1) -> dict:
    """Mean and median NME with counts of missing detections.

    original, anonymized: (N,5,2) pixel landmarks, NaN rows where no face was found.
    failure_threshold: NME above which an image counts as a geometry failure (0.1 = an
    average point error of 10% of the eye distance, a common face-alignment convention).
    """
    nme = per_image_nme(original, anonymized)
    missing_orig = torch.isnan(original).flatten(1).any(1)
    missing_anon = torch.isnan(anonymized).flatten(1).any(1)
    valid = ~torch.isnan(nme)
    v = nme[valid]
    n = int(valid.sum())
    return {
        "nme_mean": float(v.mean()) if n else math.nan,
        "nme_median": float(v.median()) if n else math.nan,
        "failure_rate": float((v > failure_threshold).double().mean()) if n else math.nan,
        "n_images": int(nme.numel()), "n_valid": n,
        "n_missing_original": int(missing_orig.sum()),
        "n_missing_anonymized": int(missing_anon.sum()),
    }
