"""Same-person threshold calibration: reproducible, hits its FAR, and pairs are what they claim.

Fake judges make the pair construction checkable: one whose embeddings are random noise cannot
tell genuine from impostor pairs (its TAR must equal the FAR), one that reads an identity the
augmentations cannot change (the hue of flat-coloured "faces") must accept every genuine pair.
"""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from falco.backbones import calibration
from falco.backbones.base import IdentityEncoder, warp
from falco.backbones.calibration import augment, calibrate, calibration_faces, equal_error_rate, threshold_at_far
from falco.backbones.lightcnn import box_crop_theta, load_lightcnn


class PixelJudge(IdentityEncoder):
    """Cheap deterministic judge: the 16x16 crop's pixels, cosine distance."""

    name, input_size, same_person_below = "pixels", 16, 0.1

    def embed(self, image, theta=None):
        return warp(image, theta, 16).flatten(1)

    def distance(self, a, b):
        return 1 - F.cosine_similarity(a, b, dim=-1)

    def crop_theta(self, landmarks, image_hw):
        return box_crop_theta(landmarks, image_hw)


class NoiseJudge(PixelJudge):
    """Embeddings are seeded random noise, independent of the image."""

    def __init__(self):
        super().__init__()
        self.gen = torch.Generator().manual_seed(5)

    def embed(self, image, theta=None):
        return torch.randn(len(image), 8, generator=self.gen)


class HueJudge(PixelJudge):
    """The image's mean colour minus its grey level, as a direction: unchanged by brightness
    and contrast (both scale it), and on flat-coloured images by the geometry and the blur."""

    def embed(self, image, theta=None):
        c = ((image + 1) / 2).mean((2, 3))
        return c - c.mean(1, keepdim=True)


LANDMARKS = torch.tensor([[22.0, 30.0], [42.0, 30.0], [32.0, 40.0], [24.0, 50.0], [40.0, 50.0]])


def flat_faces(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    colours = 0.3 + 0.4 * torch.rand(n, 3, 1, 1, generator=torch.Generator().manual_seed(3))  # stays in [0,1]
    return (colours * 2 - 1).expand(n, 3, 64, 64).contiguous(), LANDMARKS.expand(n, 5, 2).clone()


@pytest.fixture(scope="module")
def faces():
    return calibration_faces(24, seed=0)


def test_faces_and_augmentation(faces):
    images, landmarks = faces
    assert images.shape == (24, 3, 64, 64) and landmarks.shape == (24, 5, 2)
    assert float(images.min()) >= -1 and float(images.max()) <= 1
    eyes = landmarks[:, 1, 0] - landmarks[:, 0, 0]
    assert bool((eyes > 8).all())  # left eye left of the right eye, a plausible distance apart
    again = augment(images, landmarks, torch.Generator().manual_seed(1))
    aug, aug_lm = augment(images, landmarks, torch.Generator().manual_seed(1))
    assert torch.equal(aug, again[0]) and torch.equal(aug_lm, again[1])
    assert not torch.equal(aug, images)
    assert bool((aug_lm[:, 1, 0] > aug_lm[:, 0, 0]).all())  # the flip swaps left and right


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_landmarks_move_with_the_image(seed):
    """A bright blob drawn at landmark k ends up where the copy's landmark says (to 0.5 px):
    at slot k, or for every point at once at its mirrored name (the flip swaps left and right)."""
    yy, xx = torch.meshgrid(torch.arange(64) + 0.5, torch.arange(64) + 0.5, indexing="ij")
    slots = []
    for k in range(5):
        x, y = LANDMARKS[k]
        blob = torch.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * 1.5**2))
        aug, aug_lm = augment((blob * 2 - 1).expand(1, 3, 64, 64), LANDMARKS[None], torch.Generator().manual_seed(seed))
        w = (aug[0].mean(0) - aug[0].mean()).clamp_min(0) ** 2
        found = torch.stack([(w * xx).sum() / w.sum(), (w * yy).sum() / w.sum()])
        dist = (aug_lm[0] - found).norm(dim=1)
        assert float(dist.min()) < 0.5, (k, dist.tolist())
        slots.append(int(dist.argmin()))
    assert slots in ([0, 1, 2, 3, 4], calibration.FLIP_ORDER)


def test_reproducible_and_far(faces):
    images, landmarks = faces
    a = calibrate(PixelJudge(), images, landmarks, far=0.05, seed=0)
    assert a == calibrate(PixelJudge(), images, landmarks, far=0.05, seed=0)
    assert a != calibrate(PixelJudge(), images, landmarks, far=0.05, seed=1)
    assert (a["genuine"], a["impostor"]) == (24, 24 * 23 // 2)
    assert abs(a["far_measured"] - a["far_target"]) <= 1 / a["impostor"]


def test_threshold_and_eer_helpers():
    d = torch.arange(100, dtype=torch.float64)  # 0..99
    assert threshold_at_far(d, 0.05) == 4.5  # 5 of 100 below
    assert threshold_at_far(d, 0.001) == 0.0  # none below
    assert equal_error_rate(torch.zeros(10), torch.ones(10)) == 0.0
    assert equal_error_rate(torch.ones(10), torch.zeros(10)) == 1.0


def test_noise_judge_cannot_beat_chance():
    images, landmarks = flat_faces(24)
    r = calibrate(NoiseJudge(), images, landmarks, far=0.3, seed=0, copies=4)
    assert r["genuine"] == 96 and abs(r["far_measured"] - 0.3) <= 1 / r["impostor"]
    assert abs(r["tar_at_threshold"] - r["far_measured"]) < 0.15  # binomial sd ~0.047
    assert abs(r["eer"] - 0.5) < 0.15


def test_genuine_pairs_are_the_same_face():
    images, landmarks = flat_faces(24)
    r = calibrate(HueJudge(), images, landmarks, far=0.01, seed=0, copies=2)
    assert r["tar_at_threshold"] == 1.0 and r["eer"] == 0.0
    assert r["genuine_distance_mean"] < 1e-4 < r["impostor_distance_mean"]


def test_lightcnn_separates_faces(faces):
    images, landmarks = faces
    judge = load_lightcnn()
    r = calibrate(judge, images, landmarks, far=0.01, seed=0)
    assert r["far_measured"] <= 0.01 + 1 / r["impostor"]
    assert r["tar_at_threshold"] >= 0.9
    assert r["genuine_distance_mean"] < 0.5 * r["impostor_distance_mean"]
    # The embedded rule (128 faces) and this small sample's 1% quantile agree roughly.
    assert abs(r["threshold"] - judge.same_person_below) < 0.15


def test_cli_prints_json(monkeypatch, capsys):
    monkeypatch.setitem(calibration.JUDGES, "pixels", PixelJudge)
    monkeypatch.setattr(calibration, "calibration_faces", lambda n, seed: flat_faces(n))
    calibration.main(["pixels", "--faces", "6", "--far", "0.2"])
    out = json.loads(capsys.readouterr().out)
    assert out["judge"] == "pixels" and out["impostor"] == 15 and abs(out["far_measured"] - 0.2) <= 1 / 15
    assert "lightcnn_v4" in calibration.JUDGES and "sface" in calibration.JUDGES
    with pytest.raises(ValueError, match="unknown judge"):
        calibration.load_judge("nope")
