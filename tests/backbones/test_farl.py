"""FaRL ViT-B/16 image tower vs the official CLIP outputs (tests/fixtures/farl_clip_vitb16_visual).

Fixture-rule weights for the 152 `visual.*` keys, plus text-tower keys the loader must ignore,
wrapped as FaRL's {'state_dict': ...} and loaded through `load_farl` with normalize=False (the
fixture inputs are already the network input, [-1,1) values fed directly as in FALCO's loss).
"""

from __future__ import annotations

import pytest
import torch
import torchvision.transforms.functional as TF

from falco.backbones.checkpoints import MissingWeights
from falco.backbones.farl import CLIP_MEAN, CLIP_STD, FaRLVisual, load_farl, visual_state_dict
from tests.fixture_weights import fixture_dir, fixture_state_dict, rel_error

FOLDER = fixture_dir("farl_clip_vitb16_visual")
TOL = 1e-4  # manifest: max|diff| <= 1e-4 * max|ref| per tensor


@pytest.fixture(scope="module")
def farl(tmp_path_factory) -> FaRLVisual:
    state = dict(fixture_state_dict(FOLDER))
    # Text tower and logit scale, as in a full CLIP-layout file: ignored by the loader.
    state["transformer.resblocks.0.attn.in_proj_weight"] = torch.zeros(1536, 512)
    state["logit_scale"] = torch.tensor(4.6)
    path = tmp_path_factory.mktemp("farl") / "FaRL-Base-Patch16-LAIONFace20M-ep64.pth"
    torch.save({"state_dict": state}, path)
    return load_farl(path, normalize=False)


@pytest.fixture(scope="module")
def inputs() -> dict:
    return torch.load(FOLDER / "inputs.pt")


@pytest.fixture(scope="module")
def expected() -> dict:
    return torch.load(FOLDER / "expected.pt")


@pytest.fixture(scope="module")
def outputs(farl, inputs) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        return farl(inputs["x"])


def test_encode_image_matches_official(outputs, expected):
    assert rel_error(outputs[0], expected["encode_image"]) <= TOL


def test_tokens_before_ln_post_match_official(outputs, expected):
    assert outputs[1].shape == (2, 197, 768)
    assert rel_error(outputs[1], expected["tokens_pre_ln_post"]) <= TOL


def test_role_methods_are_the_same_outputs(farl, inputs, outputs):
    with torch.no_grad():
        assert rel_error(farl.features(inputs["x"][:1]), outputs[1][:1]) <= 1e-6  # 224: no resize
        assert rel_error(farl.pairing_features(inputs["x"][:1]), outputs[0][:1]) <= 1e-6


def test_one_perturbed_tensor_fails_the_comparison(farl, inputs, expected):
    param = farl.transformer.resblocks[6].mlp.c_fc.weight
    saved = param.detach().clone()
    try:
        with torch.no_grad():
            param.mul_(1.02)
            tokens = farl.tokens(inputs["x"][:1])
    finally:
        with torch.no_grad():
            param.copy_(saved)
    assert rel_error(tokens, expected["tokens_pre_ln_post"][:1]) > TOL


def test_bf16_gradients_and_batch_independence(farl, inputs, outputs):
    x = inputs["x"][1:].clone().requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        tokens = farl.features(x)
    assert tokens.dtype == torch.float32 and rel_error(tokens, outputs[1][1:]) < 0.05
    tokens.abs().mean().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in farl.parameters())
    with torch.no_grad():
        assert rel_error(farl.tokens(inputs["x"][1:]), outputs[1][1:]) <= 1e-5


def test_preprocess_matches_torchvision_and_clip_normalization():
    with torch.device("meta"):
        model = FaRLVisual(normalize=False)
    model.mean, model.std = (torch.tensor(v).view(1, 3, 1, 1) for v in (CLIP_MEAN, CLIP_STD))
    image = torch.rand(2, 3, 256, 300) * 2 - 1
    reference = TF.center_crop(TF.resize(image, 224, antialias=True), 224)
    assert torch.allclose(model.preprocess(image), reference, atol=1e-6)
    model.normalize = True
    clip_ref = TF.normalize((reference + 1) / 2, CLIP_MEAN, CLIP_STD)
    assert torch.allclose(model.preprocess(image), clip_ref, atol=1e-5)


def test_visual_keys_with_any_prefix():
    state = {"module.visual.conv1.weight": torch.ones(1), "module.visual.proj": torch.ones(2),
             "module.transformer.resblocks.0.ln_1.weight": torch.ones(3),
             "module.logit_scale": torch.ones(())}
    assert set(visual_state_dict(state)) == {"conv1.weight", "proj"}
    assert set(visual_state_dict({"visual.conv1.weight": torch.ones(1)})) == {"conv1.weight"}
    with pytest.raises(ValueError, match="exactly one CLIP image tower"):
        visual_state_dict({"a.visual.conv1.weight": torch.ones(1), "b.visual.conv1.weight": torch.ones(1)})
    with pytest.raises(ValueError, match="exactly one CLIP image tower"):
        visual_state_dict({"transformer.resblocks.0.ln_1.weight": torch.ones(1)})


def test_loader_errors(tmp_path):
    with pytest.raises(MissingWeights, match="FaRL-Base-Patch16-LAIONFace20M-ep64.pth"):
        load_farl(None)
    with pytest.raises(MissingWeights, match="not found"):
        load_farl(tmp_path / "absent.pth")
    torch.save({"state_dict": {"visual.conv1.weight": torch.zeros(768, 3, 16, 16)}}, tmp_path / "part.pth")
    with pytest.raises(RuntimeError, match="Missing key"):
        load_farl(tmp_path / "part.pth")
