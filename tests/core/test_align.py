import math

import torch
import torch.nn.functional as F

from falco.align import ffhq_theta, fit_similarity, map_points, theta_from_landmarks


def test_fit_similarity_recovers_known_transform():
    src = torch.rand(3, 5, 2) * 100
    ang, s, t = 0.3, 1.7, torch.tensor([5.0, -3.0])
    rot = s * torch.tensor([[math.cos(ang), -math.sin(ang)], [math.sin(ang), math.cos(ang)]])
    dst = src @ rot.T + t
    a = fit_similarity(src, dst)
    assert torch.allclose(a[:, :, :2], rot.expand(3, -1, -1), atol=1e-4)
    assert torch.allclose(a[:, :, 2], t.expand(3, -1), atol=1e-3)


def test_theta_puts_landmarks_on_template():
    tpl = torch.tensor([[0.3, 0.4], [0.7, 0.4], [0.5, 0.55], [0.35, 0.75], [0.65, 0.75]])
    # Landmarks = the template placed in a 200x300 image at scale 80, rotated 10 degrees, shifted.
    ang = math.radians(10)
    rot = 80 * torch.tensor([[math.cos(ang), -math.sin(ang)], [math.sin(ang), math.cos(ang)]])
    lm = (tpl @ rot.T + torch.tensor([120.0, 60.0])).unsqueeze(0)
    theta = theta_from_landmarks(lm, (200, 300), tpl)
    back = map_points(lm, theta, (200, 300), 64)
    assert torch.allclose(back[0], tpl * 64, atol=1e-3)


def test_warp_with_theta_moves_a_bright_dot_to_the_template_point():
    img = -torch.ones(1, 3, 100, 100)
    img[..., 40:42, 60:62] = 1.0  # a dot centred at pixel (x=61, y=41)
    lm = torch.tensor([[[61.0, 41.0], [81.0, 41.0], [71.0, 51.0], [63.0, 61.0], [79.0, 61.0]]])
    tpl = (lm[0] - torch.tensor([51.0, 31.0])) / 40  # a 40 px box around the points
    theta = theta_from_landmarks(lm, (100, 100), tpl)
    out = F.grid_sample(img, F.affine_grid(theta, [1, 3, 40, 40], align_corners=False), align_corners=False)
    y, x = divmod(int(out[0, 0].argmax()), 40)
    assert abs(x + 0.5 - 10) <= 1 and abs(y + 0.5 - 10) <= 1


def test_ffhq_theta_is_centered_square_for_frontal_face():
    lm = torch.tensor([[[100.0, 120], [160, 120], [130, 150], [105, 180], [155, 180]]])
    th = ffhq_theta(lm, (256, 256))
    assert abs(th[0, 0, 1]) < 1e-6 and abs(th[0, 1, 0]) < 1e-6  # no rotation
    assert torch.isclose(th[0, 0, 0], th[0, 1, 1])  # square crop
    # Half-side = 2 x eye distance (60 px) = 120 px of a 256 px image.
    assert torch.isclose(th[0, 0, 0], torch.tensor(2 * 120 / 256))


def test_theta_from_landmarks_stays_on_the_landmarks_device():
    # The meta device stands in for a GPU: a constant made on the CPU inside the function would
    # make torch refuse the mix (first seen on a GPU, in benchmarks/gpu_check.py's embedded agreement).
    landmarks = torch.rand(3, 5, 2, device="meta")
    template = torch.tensor([[0.3, 0.4], [0.7, 0.4], [0.5, 0.6], [0.35, 0.8], [0.65, 0.8]])
    theta = theta_from_landmarks(landmarks, (64, 64), template)
    assert theta.device.type == "meta" and theta.shape == (3, 2, 3)
