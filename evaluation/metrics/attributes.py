"""Attribute preservation: does the anonymized face keep what is not identity?

Inputs are predictions of one fixed attribute network on originals and on anonymized images
(N,A): bool / {0,1} labels or probabilities (binarized at `threshold`; apply sigmoid to
logits first). Two readings:
  agreement   anonymized predictions vs the ORIGINALS' predictions (no labels needed);
  accuracy    predictions vs ground-truth labels (e.g. CelebA's 40 attributes).
Each comes with a balanced version: the mean of the true-positive and true-negative rates,
because most CelebA attributes are rare (a constant "no" scores ~90% plain accuracy on
"Eyeglasses"). As in scikit-learn, an attribute whose reference has only one class gets the
rate of that class alone. Age and gender have their own summaries in the library
(falco/agreement.py: mean absolute difference in years, agreement of binarized gender).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchmetrics.functional.classification import multilabel_stat_scores


def binarize(x: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """bool/int labels as they are; probabilities -> x >= threshold. Returns int64."""
    if x.dtype == torch.bool or not x.is_floating_point():
        return x.long()
    return (x >= threshold).long()


def _per_attribute(preds: torch.Tensor, reference: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(A,) plain and balanced accuracy of binary preds vs binary reference, both (N,A)."""
    a = preds.shape[1]
    stats = multilabel_stat_scores(preds, reference, num_labels=a, average=None).double()  # (A,5)
    tp, fp, tn, fn = stats[:, 0], stats[:, 1], stats[:, 2], stats[:, 3]
    accuracy = (tp + tn) / (tp + fp + tn + fn)
    tpr = torch.where(tp + fn > 0, tp / (tp + fn), torch.nan)  # NaN: no positive in reference
    tnr = torch.where(tn + fp > 0, tn / (tn + fp), torch.nan)
    balanced = torch.stack([tpr, tnr]).nanmean(0)  # mean over the classes present
    return accuracy, balanced


def _names(names: Sequence[str] | None, a: int) -> list[str]:
    names = list(names) if names is not None else [f"attr_{i}" for i in range(a)]
    if len(names) != a:
        raise ValueError(f"{a} attributes but {len(names)} names")
    return names


def _report(preds: torch.Tensor, reference: torch.Tensor, names: Sequence[str] | None,
            keys: tuple[str, str]) -> dict:
    """{mean of each, per_attribute: {name: {keys[0]: .., keys[1]: ..}}, n_images}."""
    if preds.shape != reference.shape or preds.ndim != 2:
        raise ValueError(f"expected two (N,A) tensors, got {tuple(preds.shape)} and {tuple(reference.shape)}")
    plain, balanced = _per_attribute(preds, reference)
    per = {n: {keys[0]: float(p), keys[1]: float(b)}
           for n, p, b in zip(_names(names, preds.shape[1]), plain, balanced, strict=True)}
    return {f"{keys[0]}_mean": float(plain.mean()), f"{keys[1]}_mean": float(balanced.nanmean()),
            "per_attribute": per, "n_images": int(preds.shape[0])}


def attribute_agreement(pred_original: torch.Tensor, pred_anonymized: torch.Tensor, *,
                        names: Sequence[str] | None = None, threshold: float = 0.5) -> dict:
    """Per-attribute and mean agreement of anonymized vs original predictions, (N,A) each.

    Returns {"agreement_mean", "balanced_agreement_mean", "per_attribute": {name: {...}},
             "n_images"}; balanced agreement treats the originals' predictions as labels.
    """
    return _report(binarize(pred_anonymized, threshold), binarize(pred_original, threshold), names,
                   ("agreement", "balanced_agreement"))


def attribute_accuracy(predictions: torch.Tensor, labels: torch.Tensor, *,
                       names: Sequence[str] | None = None, threshold: float = 0.5) -> dict:
    """Per-attribute and mean accuracy and balanced accuracy vs ground truth, (N,A) each.

    Returns {"accuracy_mean", "balanced_accuracy_mean", "per_attribute", "n_images"}.
    """
    return _report(binarize(predictions, threshold), binarize(labels, threshold), names,
                   ("accuracy", "balanced_accuracy"))

