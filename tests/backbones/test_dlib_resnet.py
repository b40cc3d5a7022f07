"""The dlib recognizer port equals dlib-bin, and its crops equal dlib's face chips.

dlib (dlib-bin) is a declared test dependency: if it is missing these tests fail (ImportError),
they do not skip.
"""

from __future__ import annotations

import dlib
import numpy as np
import pytest
import skimage.data
import torch
import torch.nn.functional as F
from facenet_pytorch import MTCNN

from falco.backbones.base import warp
from falco.backbones.dlib_dat import DatFormatError, read_dlib_net
from falco.backbones.dlib_resnet import (
    CHIP_PADDING,
    CHIP_SIZE,
    MTCNN_TEMPLATE,
    default_path,
    dlib_chip_theta,
    load_dlib_recognizer,
    warp_chip,
)
from tests.backbones.calibrate_dlib_template import (
    chip_to_image,
    dcgan_with_landmarks,
    dlib_models,
    dlib_template,
)


def to_tensor(images: list[np.ndarray]) -> torch.Tensor:
    """uint8 HxWx3 images -> (N,3,H,W) float32 in [-1,1]."""
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 127.5 - 1


@pytest.fixture(scope="module")
def recognizer():
    return load_dlib_recognizer()


@pytest.fixture(scope="module")
def astronaut():
    """The astronaut photo, dlib's face rectangle and its 5 points (dlib coordinates)."""
    img = skimage.data.astronaut()
    detector, predictor = dlib_models()
    rect = max(detector(img, 1), key=lambda r: r.area())
    shape = predictor(img, rect)
    return img, rect, shape


def test_parser_reads_the_whole_model():
    net = read_dlib_net(default_path())
    kinds = [layer.kind for layer in net.layers]
    assert (kinds.count("con_4"), kinds.count("affine_"), kinds.count("fc_2")) == (29, 29, 1)
    assert net.num_params() == 5_614_592
    assert net.input_size == (150, 150)
    np.testing.assert_allclose(net.input_mean, (122.782, 117.001, 104.298), atol=1e-4)
    assert net.num_nested == {1: 22, 2: 108}  # 14 tag1 + 4 (tag2, skip1) pairs; 108 layers


def test_parser_rejects_other_files(tmp_path):
    bad = tmp_path / "not_dlib.dat"
    bad.write_bytes(b"\x01\x02hello world")
    with pytest.raises(DatFormatError, match="not_dlib.dat"):
        read_dlib_net(bad)
    truncated = tmp_path / "truncated.dat"
    truncated.write_bytes(default_path().read_bytes()[:100_000])
    with pytest.raises(DatFormatError, match="truncated"):
        read_dlib_net(truncated)


def test_embeddings_equal_dlib(recognizer, astronaut):
    """Same 150x150 chips -> same descriptors as dlib.compute_face_descriptor (measured: L2 ~1e-6)."""
    img, _, shape = astronaut
    rng = np.random.default_rng(0)
    chips = [dlib.get_face_chip(img, shape, CHIP_SIZE, CHIP_PADDING),
             rng.integers(0, 256, (150, 150, 3), dtype=np.uint8),
             rng.integers(100, 160, (150, 150, 3), dtype=np.uint8)]
    model = dlib.face_recognition_model_v1(str(default_path()))
    expected = torch.tensor(np.array([model.compute_face_descriptor(c) for c in chips]))
    with torch.no_grad():
        ours = recognizer.embed(to_tensor(chips)).double()
    err = (ours - expected).norm(dim=1)
    print(f"L2 error vs dlib per chip: {err.tolist()}, descriptor norms {expected.norm(dim=1).tolist()}")
    assert err.max() < 1e-5
    full = torch.tensor(np.array(model.compute_face_descriptor(img, shape)))  # dlib's own crop
    assert (full - expected[0]).norm() < 1e-6


@pytest.mark.parametrize("size,padding", [(150, 0.25), (64, 0.2)])
def test_chip_geometry_equals_dlib(astronaut, size, padding):
    """With dlib's own template and points, our theta samples exactly where dlib's chip does.

    dlib's template is recovered once (150 px, padding 0.25) from its chips; our formula then
    predicts the chip at any size and padding (64/0.2 is the age chip). At 32/0.2 dlib goes two
    levels down an image pyramid, which shifts its chip by ~0.15 chip pixel: not modelled."""
    img, rect, shape = astronaut
    h, w = img.shape[:2]
    points = np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float64)
    template = torch.from_numpy(dlib_template(img, rect, points, CHIP_SIZE, CHIP_PADDING))
    landmarks = torch.from_numpy(points + 0.5)[None].float()  # our pixel convention
    theta = dlib_chip_theta(landmarks, (h, w), template, padding, size)
    grid = torch.nn.functional.affine_grid(theta.double(), [1, 3, size, size], align_corners=False)[0]
    ours = (grid + 1) / 2 * torch.tensor([w, h], dtype=torch.float64) - 0.5  # dlib coordinates
    m = chip_to_image(img, dlib.get_face_chip_details(shape, size, padding))
    cols, rows = np.meshgrid(np.arange(size), np.arange(size))
    theirs = np.stack([cols, rows, np.ones_like(cols)], -1) @ m.T
    err = np.abs(ours.numpy() - theirs).max()
    print(f"{size}px/{padding}: max sampling-position difference {err:.4f} source px; "
          f"dlib template {template.numpy().round(4).tolist()}")
    assert err < 0.01


def test_full_pipeline_close_to_dlib(recognizer, astronaut):
    """Whole image + our crop vs dlib's compute_face_descriptor(img, shape), which crops itself.

    With dlib's own 5 points and template (recovered from its chips) the only difference is
    dlib's uint8 rounding of the chip: distance ~0.005. With MTCNN's points and our calibrated
    template: ~0.18 on the astronaut, whose broad smile puts her mouth corners ~0.11 chip units
    above the template's. The recognizer is crop-sensitive (shifting dlib's chip by 1 / 2 / 4
    source pixels moves the descriptor by 0.11 / 0.16 / 0.25; a face vs its mirror ~0.25),
    which is why one theta per original is applied to every generated image."""
    img, rect, shape = astronaut
    model = dlib.face_recognition_model_v1(str(default_path()))
    reference = torch.tensor(np.array(model.compute_face_descriptor(img, shape)))
    points = np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float64)
    dlib_own = torch.from_numpy(dlib_template(img, rect, points, CHIP_SIZE, CHIP_PADDING))
    _, _, mtcnn_points = MTCNN(keep_all=False).detect(img, landmarks=True)
    landmarks = torch.tensor(np.asarray(mtcnn_points[0], dtype=np.float64), dtype=torch.float32)[None]
    thetas = torch.cat([
        dlib_chip_theta(torch.from_numpy(points + 0.5)[None].float(), img.shape[:2], dlib_own,
                        CHIP_PADDING, CHIP_SIZE),
        recognizer.crop_theta(landmarks, img.shape[:2])])
    with torch.no_grad():
        ours = recognizer.embed(to_tensor([img, img]), thetas).double()
    dist = (ours - reference).norm(dim=1)
    print(f"astronaut vs dlib pipeline: dlib points {dist[0]:.4f}, MTCNN + template {dist[1]:.4f}")
    assert dist[0] < 0.02
    assert dist[1] < 0.3  # same person < 0.6


def mirror(landmarks: torch.Tensor, width: int) -> torch.Tensor:
    """Points of the mirrored image: x -> W - x (our pixel convention), left/right swapped."""
    flipped = torch.stack([width - landmarks[..., 0], landmarks[..., 1]], -1)
    return flipped[:, [1, 0, 2, 4, 3]]


def test_dcgan_identities_apart_mirrors_close(recognizer):
    imgs, landmarks = dcgan_with_landmarks(12, seed=3)
    assert len(imgs) >= 8, "MTCNN should find most DCGAN faces"
    with torch.no_grad():
        e = recognizer.embed(imgs, recognizer.crop_theta(landmarks, (64, 64)))
        e_mirror = recognizer.embed(imgs.flip(-1), recognizer.crop_theta(mirror(landmarks, 64), (64, 64)))
    self_mirror = recognizer.distance(e, e_mirror)
    pairwise = torch.cdist(e, e)[~torch.eye(len(e), dtype=torch.bool)]
    print(f"DCGAN: face vs mirror {self_mirror.mean():.3f} (max {self_mirror.max():.3f}); "
          f"different faces {pairwise.mean():.3f} (min {pairwise.min():.3f})")
    assert self_mirror.max() < recognizer.same_person_below
    assert pairwise.mean() > 2 * self_mirror.mean()
    assert (pairwise > self_mirror.mean()).float().mean() > 0.9


def test_gradients_flow_and_bf16(recognizer):
    imgs, landmarks = dcgan_with_landmarks(12, seed=3)
    x, theta = imgs[:2].clone().requires_grad_(True), recognizer.crop_theta(landmarks[:2], (64, 64))
    e = recognizer.embed(x, theta)
    recognizer.distance(e, e.detach().flip(0)).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    with torch.autocast("cpu", dtype=torch.bfloat16):
        e16 = recognizer.embed(x, theta)
    assert e16.dtype == torch.float32
    print(f"bf16 vs float32 embedding distance: {(e16 - e).norm(dim=1).max():.4f}")
    assert (e16 - e).norm(dim=1).max() < 0.1  # bf16 noise is far below the 0.6 threshold


def test_warp_chip_antialiases_only_strong_downscaling():
    noise = torch.randint(0, 2, (1, 3, 256, 256)).float() * 2 - 1  # +-1 pixel noise
    identity = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]])
    small = warp_chip(noise, identity, 32)  # 8 source pixels per chip pixel: 8x8 box average
    assert small.std() < 0.2 and warp(noise, identity, 32).std() > 0.4  # plain bilinear aliases
    torch.testing.assert_close(small, F.avg_pool2d(noise, 8))
    torch.testing.assert_close(warp_chip(noise, identity, 150), warp(noise, identity, 150))  # ratio 1.7


def test_bad_inputs(recognizer):
    with pytest.raises(ValueError, match="in \\[-1,1\\]"):
        recognizer.embed(torch.full((1, 3, 150, 150), 200.0))
    with pytest.raises(ValueError, match="N,3,H,W"):
        recognizer.embed(torch.zeros(3, 150, 150))
    with pytest.raises(ValueError, match="landmarks"):
        recognizer.crop_theta(torch.zeros(1, 68, 2), (64, 64))
    assert MTCNN_TEMPLATE.shape == (5, 2)
