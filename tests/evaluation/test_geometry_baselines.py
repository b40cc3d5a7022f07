"""Landmark NME and the box baselines on constructed inputs."""

import math

import pytest
import torch

from evaluation.baselines import BASELINES, black_box, gaussian_blur, pixelate
from evaluation.metrics.geometry import landmark_nme, per_image_nme

FIVE = torch.tensor([[30.0, 40.0], [70.0, 40.0], [50.0, 60.0], [35.0, 80.0], [65.0, 80.0]])


def test_nme_of_shifted_landmarks():
    orig = FIVE.expand(4, 5, 2).clone()
    shift = torch.tensor([0.0, 4.0, 8.0, 0.0])[:, None, None] * torch.tensor([0.6, 0.8])  # |shift| 0,4,8,0
    anon = orig + shift
    nme = per_image_nme(orig, anon)  # inter-ocular distance 40 px
    assert torch.allclose(nme, torch.tensor([0.0, 0.1, 0.2, 0.0], dtype=torch.float64))
    # Missing detections (NaN) are left out and counted.
    orig[3] = math.nan
    anon[2] = math.nan
    out = landmark_nme(orig, anon, failure_threshold=0.05)
    assert out["n_valid"] == 2 and out["n_missing_original"] == 1 and out["n_missing_anonymized"] == 1
    assert math.isclose(out["nme_mean"], 0.05, rel_tol=1e-6) and out["failure_rate"] == 0.5


def test_nme_rejects_wrong_shapes():
    with pytest.raises(ValueError):
        per_image_nme(torch.zeros(2, 68, 2), torch.zeros(2, 68, 2))


def _images(n=3, size=48):
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(0)) * 2 - 1


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_baselines_change_only_the_box(name):
    images = _images()
    boxes = [(10, 12, 30, 40), None, (40.5, 0, 100, 8.2)]  # inside, whole image, clipped
    out = BASELINES[name](images, boxes)
    inside = torch.zeros(3, 48, 48, dtype=torch.bool)
    inside[0, 12:40, 10:30] = True
    inside[1] = True
    inside[2, 0:9, 40:48] = True
    same = (out == images).all(dim=1)  # (N,H,W) pixel unchanged in all channels
    assert same[~inside].all()
    assert not same[inside].all() and out.shape == images.shape


def test_pixelate_cells_are_means_and_black_box_is_black():
    images = _images(1, 10)
    out = pixelate(images, [(0, 0, 10, 10)], block=4)
    assert torch.allclose(out[0, :, 0, 0], images[0, :, :4, :4].mean((1, 2)), atol=1e-6)
    assert torch.allclose(out[0, :, 9, 9], images[0, :, 8:, 8:].mean((1, 2)), atol=1e-6)  # partial cell
    assert (black_box(images, [(2, 2, 5, 5)])[0, :, 2:5, 2:5] == -1).all()


def test_blur_lowers_variance_with_sigma():
    images = _images(1, 64)
    weak = gaussian_blur(images, sigma=1.0).var()
    strong = gaussian_blur(images, sigma=8.0).var()
    assert strong < weak < images.var()
