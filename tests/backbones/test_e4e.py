"""e4e (Encoder4Editing) port vs the official outputs (tests/fixtures/e4e_ffhq_encode).

Full-size encoder (~270M parameters) with fixture-rule weights, wrapped like the released
`e4e_ffhq_encode.pt` ({'state_dict': {'encoder.*', 'decoder.*'}, 'latent_avg', 'opts'}) and
loaded through `load_e4e`. One forward pass on the two fixture images serves every check.
"""

from __future__ import annotations

import argparse

import pytest
import torch

from falco.backbones.checkpoints import MissingWeights
from falco.backbones.e4e import E4EEncoder, load_e4e
from tests.fixture_weights import fixture_dir, fixture_state_dict, rel_error, rule_value

FOLDER = fixture_dir("e4e_ffhq_encode")
TOL = 1e-4  # manifest: max|diff| <= 1e-4 * max|ref| per tensor
OPTS = {"encoder_type": "Encoder4Editing", "stylegan_size": 1024, "start_from_latent_avg": True}


def container(opts) -> dict:
    """The official checkpoint layout; a decoder key shows that decoder.* is ignored."""
    encoder = {"encoder." + k: v for k, v in fixture_state_dict(FOLDER).items()}
    return {"state_dict": {**encoder, "decoder.style.1.weight": torch.zeros(2, 2)},
            "latent_avg": rule_value("latent_avg", (18, 512), torch.float32), "opts": opts}


@pytest.fixture(scope="module")
def e4e(tmp_path_factory) -> E4EEncoder:
    path = tmp_path_factory.mktemp("e4e") / "e4e_ffhq_encode.pt"
    torch.save(container(OPTS), path)
    return load_e4e(path)


@pytest.fixture(scope="module")
def inputs() -> dict:
    return torch.load(FOLDER / "inputs.pt")


@pytest.fixture(scope="module")
def expected() -> dict:
    return torch.load(FOLDER / "expected.pt")


@pytest.fixture(scope="module")
def wplus(e4e, inputs) -> torch.Tensor:
    with torch.no_grad():
        return e4e.invert(inputs["x"])


def test_wplus_matches_official(wplus, expected):
    assert wplus.shape == (2, 18, 512)
    assert rel_error(wplus, expected["wplus"]) <= TOL


def test_encoder_output_without_latent_avg_matches_official(e4e, wplus, expected):
    assert rel_error(wplus - e4e.latent_avg, expected["encoder_raw"]) <= TOL


def test_one_perturbed_tensor_fails_the_comparison(e4e, inputs, expected):
    param = e4e.styles[12].linear.weight  # one fine-style delta's projection
    saved = param.detach().clone()
    try:
        with torch.no_grad():
            param.mul_(1.02)
            perturbed = e4e.invert(inputs["x"][1:])
    finally:
        with torch.no_grad():
            param.copy_(saved)
    assert rel_error(perturbed, expected["wplus"][1:]) > TOL


@pytest.mark.slow
def test_namespace_opts_bf16_gradients_batch_independence(tmp_path, inputs, wplus):
    """An argparse.Namespace `opts` loads under weights_only; bf16 autocast, gradients to the
    input and single-image vs batch equality."""
    path = tmp_path / "e4e_namespace.pt"
    torch.save(container(argparse.Namespace(**OPTS)), path)
    model = load_e4e(path)
    x = inputs["x"][1:].clone().requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        w = model.invert(x)
    assert w.dtype == torch.float32 and rel_error(w, wplus[1:]) < 0.05
    w.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    with torch.no_grad():
        assert rel_error(model.invert(inputs["x"][1:]), wplus[1:]) <= 1e-5


def test_loader_errors(tmp_path):
    with pytest.raises(MissingWeights, match="e4e_ffhq_encode.pt"):
        load_e4e(None)
    with pytest.raises(MissingWeights, match="not found"):
        load_e4e(tmp_path / "absent.pt")
    torch.save({"state_dict": {}, "opts": {"encoder_type": "GradualStyleEncoder"}}, tmp_path / "psp.pt")
    with pytest.raises(ValueError, match="Encoder4Editing"):
        load_e4e(tmp_path / "psp.pt")
