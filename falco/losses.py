"""FALCO's two loss terms, per image (shape (B,)), so a batch loss is their sum.

Identity obfuscation pushes the anonymized face's embedding to a target distance from the
original's, in the recognizer's own metric: FALCO's |cos(phi(x_A), phi(x_R)) - m| becomes
|d - d_m| with d = 1 - cos and d_m = 1 - m for ArcFace, and d = Euclidean distance with the
margin given directly as a distance for dlib (whose vectors are not unit-norm).
Attribute preservation keeps the attribute network's features of x_A close to those of x_R
(FALCO: FaRL tokens, sum over tokens of the mean absolute difference over channels).
"""

from __future__ import annotations

import torch


def identity_loss(distance: torch.Tensor, target: float, kind: str = "two_sided") -> torch.Tensor:
    """distance: (B,) original-vs-anonymized distance; target: margin as a distance.

    two_sided: |d - target| (FALCO; also pulls faces that went past the target back).
    hinge: max(0, target - d) (only pushes away).
    """
    if kind == "two_sided":
        return (distance - target).abs()
    if kind == "hinge":
        return (target - distance).clamp_min(0)
    raise ValueError(f"identity loss kind must be 'two_sided' or 'hinge', got {kind!r}")


def attribute_loss(features: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-image L1 feature matching: (B, C) -> mean over C; (B, T, C) -> sum over T of mean over C."""
    diff = (features.float() - target.float()).abs()
    if diff.ndim == 2:
        return diff.mean(-1)
    if diff.ndim == 3:
        return diff.mean(-1).sum(-1)
    raise ValueError(f"attribute features must be (B, C) or (B, T, C), got {tuple(diff.shape)}")
