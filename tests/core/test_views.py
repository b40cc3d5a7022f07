"""Random views of the attribute loss: reproducible per image, identity at zero, and a change
pays only when the generated and the original images differ."""

from __future__ import annotations

import torch

from falco.optimize import Targets, view_loss
from falco.views import ViewSpec, draw, jitter_thetas, photometric, robust_features


def test_views_are_drawn_per_image_from_its_own_seed():
    spec = ViewSpec(views=3)
    a, b = draw(spec, [7, 8], steps=5), draw(spec, [8], steps=5)
    assert a.shape == (2, 5, 3, 8)
    assert torch.equal(a[1], b[0])  # image 8's views do not depend on its batch mate
    assert not torch.equal(a[0], a[1])
    assert (a[..., 4] >= 0).all() and (a[..., 4] <= spec.blur_sigma).all()
    assert (a[..., 0].abs() <= spec.shift).all()


def test_zero_view_is_the_identity():
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    theta = torch.eye(2, 3).repeat(2, 1, 1)
    p = torch.zeros(2, 1, 8)
    assert torch.allclose(photometric(x, p), x, atol=1e-6)
    assert torch.allclose(jitter_thetas({"c": theta}, p)["c"], theta)


def test_a_view_changes_the_image_and_the_crop():
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    p = draw(ViewSpec(views=2), [1, 2], steps=1)[:, 0]
    assert photometric(x, p).shape == (4, 3, 16, 16) and not torch.allclose(photometric(x, p), x.repeat(2, 1, 1, 1))
    thetas = jitter_thetas({"c": torch.eye(2, 3).repeat(2, 1, 1)}, p)["c"]
    assert thetas.shape == (4, 2, 3) and not torch.allclose(thetas, torch.eye(2, 3).expand(4, -1, -1))


class MeanColour(torch.nn.Module):
    """A stand-in attribute network: the mean colour of its crop."""

    def features(self, image, thetas=None):
        if thetas:
            grid = torch.nn.functional.affine_grid(thetas["c"], [image.shape[0], 3, 8, 8], align_corners=False)
            image = torch.nn.functional.grid_sample(image, grid, align_corners=False)
        return image.mean((2, 3))


def test_view_loss_is_zero_for_the_original_itself_and_positive_otherwise():
    x = torch.rand(3, 3, 16, 16) * 2 - 1
    theta = torch.eye(2, 3).repeat(3, 1, 1)
    t = Targets(torch.zeros(3, 1), torch.zeros(3, 3), None, {"c": theta}, originals=x,
                views=draw(ViewSpec(views=4), [1, 2, 3], steps=2))
    net = MeanColour()
    assert torch.allclose(view_loss(x, net, t, step=1), torch.zeros(3), atol=1e-6)
    assert (view_loss(x.flip(-1).roll(3, -2) * 0.5, net, t, step=1) > 1e-3).all()


def test_robust_features_average_the_plain_and_the_random_views():
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    net = MeanColour()
    thetas = {"c": torch.eye(2, 3).repeat(2, 1, 1)}
    assert torch.equal(robust_features(net.features, x, thetas, 0), net.features(x, thetas))
    r = robust_features(net.features, x, thetas, 3)
    assert r.shape == (2, 3) and not torch.allclose(r, net.features(x, thetas))
    assert torch.equal(r, robust_features(net.features, x, thetas, 3))  # fixed views: reproducible
