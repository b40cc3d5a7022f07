"""ArcFace IR-SE-50 port vs the official outputs (tests/fixtures/arcface_ir_se50).

Full-size network with fixture-rule weights, saved as TreB1eN's bare state dict and loaded
through `load_arcface_irse50`; then the role interface, autocast, gradients, batch independence
and the loader's errors.
"""

from __future__ import annotations

import pytest
import torch

from falco.backbones.arcface import ArcFaceIRSE50, falco_face_crop, load_arcface_irse50
from falco.backbones.checkpoints import MissingWeights
from tests.fixture_weights import fixture_dir, fixture_state_dict, rel_error

FOLDER = fixture_dir("arcface_ir_se50")
TOL = 1e-4  # manifest: max|diff| <= 1e-4 * max|ref| and per-row cosine >= 1 - 1e-6
COS_TOL = 1e-6


@pytest.fixture(scope="module")
def state_dict():
    return fixture_state_dict(FOLDER)


@pytest.fixture(scope="module")
def arcface(state_dict, tmp_path_factory) -> ArcFaceIRSE50:
    path = tmp_path_factory.mktemp("arcface") / "model_ir_se50.pth"
    torch.save(state_dict, path)  # official container: the bare state dict
    return load_arcface_irse50(path)


@pytest.fixture(scope="module")
def inputs() -> dict:
    return torch.load(FOLDER / "inputs.pt")


@pytest.fixture(scope="module")
def expected() -> dict:
    return torch.load(FOLDER / "expected.pt")


def assert_matches(ours: torch.Tensor, ref: torch.Tensor) -> None:
    assert rel_error(ours, ref) <= TOL
    assert float((ours * ref).sum(dim=1).min()) >= 1 - COS_TOL


def test_backbone_on_112_matches_official(arcface, inputs, expected):
    with torch.no_grad():
        assert_matches(arcface(inputs["x112"]), expected["embedding_112"])


def test_falco_crop_on_256_matches_official(arcface, inputs, expected):
    with torch.no_grad():
        assert_matches(arcface.embed(inputs["x256"]), expected["arcface_256"])


def test_one_perturbed_tensor_fails_the_comparison(state_dict, inputs, expected, tmp_path):
    bad = dict(state_dict)
    key = "body.20.res_layer.3.weight"
    bad[key] = bad[key] * 1.02  # a 2% change of one deep conv
    torch.save(bad, tmp_path / "bad.pth")
    with torch.no_grad():
        ours = load_arcface_irse50(tmp_path / "bad.pth")(inputs["x112"])
    assert rel_error(ours, expected["embedding_112"]) > TOL


def test_loads_without_batchnorm_counters(arcface, state_dict, tmp_path):
    legacy = {k: v for k, v in state_dict.items() if not k.endswith("num_batches_tracked")}
    torch.save(legacy, tmp_path / "legacy.pth")
    model = load_arcface_irse50(tmp_path / "legacy.pth")
    for key, value in arcface.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key


def test_interface_metric_and_theta(arcface, inputs):
    x = inputs["x112"][:2]
    with torch.no_grad():
        direct = arcface(x)
        identity = torch.eye(2, 3).expand(2, 2, 3)  # the 112 chip is the whole 112 image
        assert rel_error(arcface.embed(x, identity), direct) <= 1e-5
    assert arcface.name == "arcface_irse50" and arcface.input_size == 112
    assert torch.allclose(direct.norm(dim=1), torch.ones(2), atol=1e-5)
    assert torch.allclose(arcface.distance(direct, direct), torch.zeros(2), atol=1e-6)
    assert torch.allclose(arcface.distance(direct, -direct), torch.full((2,), 2.0), atol=1e-6)
    assert arcface.same_person_below == 0.75


def test_crop_geometry():
    image = torch.zeros(1, 3, 256, 256)
    image[:, :, 35:223, 32:220] = 1.0  # exactly the kept region
    assert torch.equal(falco_face_crop(image), torch.ones(1, 3, 112, 112))
    assert falco_face_crop(torch.zeros(1, 3, 1024, 1024)).shape == (1, 3, 112, 112)


def test_batch_independent_bf16_and_differentiable(arcface, inputs):
    x = inputs["x256"]
    with torch.no_grad():
        full = arcface.embed(x)
        single = arcface.embed(x[1:])
    assert rel_error(single, full[1:]) <= 1e-5
    arcface.train()  # a frozen judge stays in eval mode
    assert not arcface.training
    xg = x.clone().requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        emb = arcface.embed(xg)
    assert emb.dtype == torch.float32 and torch.isfinite(emb).all()
    assert float((emb.detach() * full).sum(dim=1).min()) > 0.95  # bf16 stays close to fp32
    emb.sum().backward()
    assert xg.grad is not None and xg.grad.abs().sum() > 0
    assert all(p.grad is None for p in arcface.parameters())


def test_generator_sized_images_under_bf16_autocast(arcface, inputs):
    """A 1024-px generator image is resized (antialiased) before the crop; CPU has no bf16
    kernel for that, so the resize must run in fp32 even inside autocast."""
    big = torch.nn.functional.interpolate(inputs["x256"], size=(512, 512), mode="bilinear")
    with torch.no_grad():
        ref = arcface.embed(big)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = arcface.embed(big)
    assert float((low * ref).sum(dim=1).min()) > 0.95


class NotATensor:
    pass


def test_loader_errors(tmp_path):
    with pytest.raises(MissingWeights, match="model_ir_se50.pth"):
        load_arcface_irse50(None)
    with pytest.raises(MissingWeights, match="not found"):
        load_arcface_irse50(tmp_path / "absent.pth")
    torch.save({"x": NotATensor()}, tmp_path / "code.pth")
    with pytest.raises(ValueError, match="refused to unpickle"):
        load_arcface_irse50(tmp_path / "code.pth")
