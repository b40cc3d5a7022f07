"""NVIDIA stylegan2-ada-pytorch port vs the official outputs (tests/fixtures/sg2ada_generator_small64).

The fixture's G_ema state dict comes from the weight rule and is loaded through both real
code paths: a converted .pt file {'kwargs', 'state_dict'} and a network pickle in NVIDIA's
persistence layout built by the test (its embedded source is never run).
"""

from __future__ import annotations

import pickle

import pytest
import torch

from falco.backbones.checkpoints import MissingWeights
from falco.backbones.stylegan2_ada import StyleGAN2ADA, load_stylegan2_ada, nvidia_pickle_to_pt
from tests.backbones.test_safe_pickle import Reduces, marker_source, nvidia_pickle_bytes
from tests.fixture_weights import fixture_dir, fixture_state_dict, manifest, rel_error

FOLDER = fixture_dir("sg2ada_generator_small64")
MANIFEST = manifest(FOLDER)
KWARGS = MANIFEST["constructor"]["kwargs"]
KWARGS_CLAMP = MANIFEST["constructor"]["kwargs_clamp_variant"]
# manifest: ws 1e-5, images 1e-4, clamp variant 1e-2 (all relative to max|ref|)
TOL = {"ws": 1e-5, "images": 1e-4, "images_conv_clamp256": 1e-2}


@pytest.fixture(scope="module")
def state_dict():
    return fixture_state_dict(FOLDER)


@pytest.fixture(scope="module")
def inputs():
    return torch.load(FOLDER / "inputs.pt")


@pytest.fixture(scope="module")
def expected():
    return torch.load(FOLDER / "expected.pt")


def run(gen: StyleGAN2ADA, inputs) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        ws = gen.get_w(inputs["z"], inputs["truncation_psi"])  # G.mapping(z, None, psi)
        return ws, gen.synthesize(ws)  # G.synthesis(ws, noise_mode='const')


def save_pt(path, kwargs, sd):
    torch.save({"kwargs": kwargs, "state_dict": sd}, path)
    return path


@pytest.mark.parametrize("kwargs, key", [(KWARGS, "images"), (KWARGS_CLAMP, "images_conv_clamp256")])
def test_converted_pt_matches_official(tmp_path, state_dict, inputs, expected, kwargs, key):
    gen = load_stylegan2_ada(save_pt(tmp_path / "g.pt", kwargs, state_dict))
    assert gen.num_ws == 10 and gen.layout.shape == (10, 512) and gen.resolution == 64
    ws, img = run(gen, inputs)
    assert rel_error(ws, expected["ws"]) <= TOL["ws"]
    assert img.shape == (2, 3, 64, 64)
    assert rel_error(img, expected[key]) <= TOL[key]


def test_perturbed_weight_fails_the_comparison(tmp_path, state_dict, inputs, expected):
    sd = dict(state_dict)
    sd["synthesis.b64.conv1.noise_strength"] = sd["synthesis.b64.conv1.noise_strength"] * 1.01
    _, img = run(load_stylegan2_ada(save_pt(tmp_path / "g.pt", KWARGS, sd)), inputs)
    assert rel_error(img, expected["images"]) > TOL["images"]


def test_nvidia_pickle_matches_state_dict_path(monkeypatch, tmp_path, state_dict, inputs, expected):
    marker = tmp_path / "executed"
    pkl = tmp_path / "network-snapshot.pkl"
    pkl.write_bytes(nvidia_pickle_bytes(monkeypatch, state_dict, KWARGS, marker_source(marker)))
    gen = load_stylegan2_ada(pkl)
    assert not marker.exists()
    ws, img = run(gen, inputs)
    _, img_pt = run(load_stylegan2_ada(save_pt(tmp_path / "g.pt", KWARGS, state_dict)), inputs)
    assert torch.equal(img, img_pt)
    assert rel_error(ws, expected["ws"]) <= TOL["ws"] and rel_error(img, expected["images"]) <= TOL["images"]
    # one-time conversion to a weights-only file gives the same generator
    nvidia_pickle_to_pt(pkl, tmp_path / "converted.pt")
    assert torch.equal(run(load_stylegan2_ada(tmp_path / "converted.pt"), inputs)[1], img)


def test_malicious_files_are_refused(tmp_path):
    marker = tmp_path / "pwned"
    pkl = tmp_path / "evil.pkl"
    pkl.write_bytes(pickle.dumps({"G_ema": Reduces(eval, f"open({str(marker)!r}, 'w')")}))
    with pytest.raises(pickle.UnpicklingError, match="builtins.eval"):
        load_stylegan2_ada(pkl)
    pt = tmp_path / "evil.pt"
    torch.save({"kwargs": {}, "state_dict": Reduces(eval, f"open({str(marker)!r}, 'w')")}, pt)
    with pytest.raises(pickle.UnpicklingError):  # torch's weights-only loader refuses it
        load_stylegan2_ada(pt)
    assert not marker.exists()


def test_loader_errors(tmp_path, state_dict):
    with pytest.raises(MissingWeights, match="ffhq.pkl"):
        load_stylegan2_ada(tmp_path / "absent.pkl")
    sd = dict(state_dict)
    del sd["mapping.w_avg"]
    with pytest.raises(ValueError, match=r"Missing keys: \[mapping\.w_avg\]"):
        load_stylegan2_ada(save_pt(tmp_path / "g.pt", KWARGS, sd))
    with pytest.raises(ValueError, match="conditional"):
        load_stylegan2_ada(save_pt(tmp_path / "g.pt", {**KWARGS, "c_dim": 10}, state_dict))
    bad = {**KWARGS, "synthesis_kwargs": {**KWARGS["synthesis_kwargs"], "architecture": "resnet"}}
    with pytest.raises(ValueError, match="skip"):
        load_stylegan2_ada(save_pt(tmp_path / "g.pt", bad, state_dict))
    torch.save({"G_ema": state_dict}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="kwargs"):
        load_stylegan2_ada(tmp_path / "other.pt")


def test_sampling_layout_autocast_and_gradients(tmp_path, state_dict):
    gen = load_stylegan2_ada(save_pt(tmp_path / "g.pt", KWARGS, state_dict), truncation_psi=0.5)
    assert gen.layout.trainable == (3, 8) and not gen.training
    ws = gen.sample(3, seed=11)
    assert ws.shape == (3, 10, 512) and torch.equal(ws, gen.sample(3, seed=11))
    with torch.autocast("cpu", dtype=torch.bfloat16):  # latents stay float32 and identical
        assert torch.equal(gen.sample(3, seed=11), ws)
    z = torch.randn(3, 512, generator=torch.Generator().manual_seed(11))
    assert torch.equal(ws, gen.get_w(z, 0.5))
    # truncation_cutoff: only the first ws are truncated
    cut = gen.get_w(z, 0.5, truncation_cutoff=4)
    assert torch.equal(cut[:, :4], ws[:, :4]) and torch.equal(cut[:, 4:], gen.get_w(z, 1.0)[:, 4:])

    gen.requires_grad_(False)
    with torch.no_grad():
        ref = gen.synthesize(ws)
        single = torch.cat([gen.synthesize(ws[i:i + 1]) for i in range(3)])
    assert rel_error(single, ref) < 1e-5
    gen = gen.to(memory_format=torch.channels_last)
    ws = ws.detach().requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        img = gen.synthesize(ws)
    assert img.dtype == torch.bfloat16 and rel_error(img.float(), ref) < 0.05
    img.float().square().mean().backward()
    assert torch.isfinite(ws.grad).all() and ws.grad.abs().sum() > 0
