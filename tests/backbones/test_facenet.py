"""FaceNet judges: local weight files load into facenet-pytorch's own InceptionResnetV1.

Random weights (a test fixture, never a default) are saved like the official files (a bare
state dict including the `logits.*` classifier head) and loaded through `load_facenet`; the
judge must equal facenet-pytorch's module holding the same weights on its standardized input.
"""

from __future__ import annotations

import math

import pytest
import torch
from facenet_pytorch import InceptionResnetV1
from facenet_pytorch.models.mtcnn import fixed_image_standardization
from facenet_pytorch.models.utils.detect_face import extract_face
from PIL import Image

from falco.backbones.base import warp
from falco.backbones.checkpoints import MissingWeights
from falco.backbones.facenet import load_facenet, mtcnn_box_theta
from tests.fixture_weights import rel_error


def random_state_dict(classes: int) -> dict[str, torch.Tensor]:
    """facenet-pytorch's default init (seeded) with non-trivial BatchNorm statistics."""
    torch.manual_seed(0)
    net = InceptionResnetV1(pretrained=None, classify=False)
    state = net.state_dict()
    gen = torch.Generator().manual_seed(1)
    for key, value in state.items():
        if key.endswith("running_mean"):
            state[key] = 0.1 * torch.randn(value.shape, generator=gen)
        elif key.endswith("running_var"):
            state[key] = 0.5 + torch.rand(value.shape, generator=gen)
    state["logits.weight"] = torch.randn(classes, 512, generator=gen) * 0.01  # as in the real files
    state["logits.bias"] = torch.zeros(classes)
    return state


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    path = tmp_path_factory.mktemp("facenet") / "20180402-114759-vggface2.pt"
    state = random_state_dict(8631)
    torch.save(state, path)
    return path, state


def reference(state: dict[str, torch.Tensor]) -> InceptionResnetV1:
    net = InceptionResnetV1(pretrained=None, classify=False).eval()
    net.load_state_dict({k: v for k, v in state.items() if not k.startswith("logits.")})
    return net


def test_judge_equals_facenet_pytorch_with_same_weights(weights):
    path, state = weights
    judge = load_facenet("vggface2", path)
    assert judge.name == "facenet_vggface2" and judge.input_size == 160
    image = torch.rand(3, 3, 160, 160, generator=torch.Generator().manual_seed(2)) * 2 - 1
    pixels = (image + 1) * 127.5  # the same faces as 0..255 pixels
    with torch.no_grad():
        ours = judge.embed(image)
        ref = reference(state)(fixed_image_standardization(pixels))
        assert rel_error(ours, ref) <= 1e-5
        assert rel_error(judge.embed(image[1:2]), ours[1:2]) <= 1e-5  # batch independent
    assert torch.allclose(ours.norm(dim=1), torch.ones(3), atol=1e-5)
    d = judge.distance(ours, ours.flip(0))
    assert d.shape == (3,) and float(d[1]) < 1e-6 and float(d[0]) > 0
    assert judge.same_person_below == pytest.approx(math.sqrt(1.1))


def test_bf16_and_gradients(weights):
    judge = load_facenet("vggface2", weights[0])
    x = (torch.rand(1, 3, 200, 200) * 2 - 1).requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        e = judge.embed(x)
    assert e.dtype == torch.float32 and torch.isfinite(e).all()
    e.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    judge.train()
    assert not judge.net.training


def test_torch_home_lookup_and_missing_file(weights, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(MissingWeights) as err:
        load_facenet("casia-webface")
    message = str(err.value)
    assert "20180408-102900-casia-webface.pt" in message
    assert str(tmp_path / "checkpoints") in message and "github.com/timesler/facenet-pytorch" in message
    (tmp_path / "checkpoints").mkdir()
    torch.save(random_state_dict(10575), tmp_path / "checkpoints" / "20180408-102900-casia-webface.pt")
    judge = load_facenet("casia-webface")
    assert judge.name == "facenet_casia"
    with pytest.raises(MissingWeights, match="not found"):
        load_facenet("vggface2", tmp_path / "absent.pt")
    with pytest.raises(ValueError, match="unknown FaceNet weights"):
        load_facenet("ms1m")


def test_weights_folder_is_looked_up_first(weights, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("FALCO_WEIGHTS", str(tmp_path / "weights"))
    with pytest.raises(MissingWeights, match=r"\./run weights") as err:
        load_facenet("vggface2")
    assert str(tmp_path / "weights" / "20180402-114759-vggface2.pt") in str(err.value)
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / "20180402-114759-vggface2.pt").symlink_to(weights[0])
    assert load_facenet("vggface2").name == "facenet_vggface2"


def test_mtcnn_box_theta_is_extract_face_crop():
    """Where the crop/resize is an identity (box + margin = 80 px), our warp must return exactly
    the pixels facenet-pytorch's `extract_face` cuts out (margin growth, truncation, clipping)."""
    rgb = torch.randint(0, 256, (100, 120, 3), generator=torch.Generator().manual_seed(3), dtype=torch.uint8)
    box = torch.tensor([[18.3, 28.6, 82.3, 92.6]])  # 64x64; margin 16 of 80 -> grows 8 per side
    ref = extract_face(Image.fromarray(rgb.numpy()), box[0].numpy(), image_size=80, margin=16)
    theta = mtcnn_box_theta(box, (100, 120), image_size=80, margin=16)
    ours = warp(rgb.permute(2, 0, 1).unsqueeze(0).float(), theta, 80)[0]
    assert torch.allclose(ours, ref, atol=0.05)  # 0..255 values; a 1-px shift differs by ~100
    clipped = mtcnn_box_theta(torch.tensor([[-5.0, -5.0, 130.0, 50.0]]), (100, 120))
    assert torch.allclose(clipped[0, 0], torch.tensor([1.0, 0.0, 0.0]))  # clipped to the full width
