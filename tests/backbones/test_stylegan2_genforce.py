"""genforce StyleGAN2 port vs the official outputs (tests/fixtures/genforce_stylegan2_ffhq1024).

Full-size (1024px) weights come from the fixture rule; the fast suite runs one W+ synthesis of
the two fixture codes. Small random generators cover the interface, autocast and gradients.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from falco.backbones.checkpoints import MissingWeights
from falco.backbones.stylegan2_genforce import GenforceStyleGAN2, load_genforce_stylegan2
from tests.fixture_weights import fixture_dir, fixture_state_dict, rel_error, rule_value

FOLDER = fixture_dir("genforce_stylegan2_ffhq1024")
IMAGE_TOL = 1e-4  # manifest: |diff| <= 1e-4 * abs_max[i] for every image summary
LATENT_TOL = 1e-5  # manifest: max|diff| <= 1e-5 * max|ref| for mapping_wp and each style


@pytest.fixture(scope="module")
def full_generator(tmp_path_factory) -> GenforceStyleGAN2:
    """The 1024px generator with fixture weights, loaded from an official-style container."""
    path = tmp_path_factory.mktemp("genforce") / "stylegan2_ffhq1024.pth"
    torch.save({"generator_smooth": fixture_state_dict(FOLDER)}, path)
    return load_genforce_stylegan2(path)


@pytest.fixture(scope="module")
def inputs() -> dict:
    return torch.load(FOLDER / "inputs.pt")


@pytest.fixture(scope="module")
def expected() -> dict:
    return torch.load(FOLDER / "expected.pt")


def summarize(img: torch.Tensor) -> dict[str, torch.Tensor]:
    """The fixture's reduction of a (N,3,1024,1024) image."""
    return {"pooled64": F.adaptive_avg_pool2d(img, (64, 64)), "channel_mean": img.mean(dim=(2, 3)),
            "channel_std": img.std(dim=(2, 3)), "center32": img[:, :, 496:528, 496:528],
            "abs_max": img.flatten(1).abs().max(dim=1).values}


def summary_errors(ours: dict[str, torch.Tensor], ref: dict[str, torch.Tensor]) -> dict[str, float]:
    """Worst per-sample error of each summary, relative to that sample's reference abs_max."""
    n = ref["abs_max"].shape[0]
    return {k: max(rel_error(ours[k][i], ref[k][i], ref["abs_max"][i]) for i in range(n)) for k in ours}


def image_errors(img: torch.Tensor, ref: dict[str, torch.Tensor]) -> dict[str, float]:
    return summary_errors(summarize(img), ref)


def small_generator(resolution: int = 32) -> GenforceStyleGAN2:
    """A tiny random generator (test fixture only) with fixture-rule weights."""
    gen = GenforceStyleGAN2(resolution, fmaps_base=512, fmaps_max=32)
    sd = {k: v if k.endswith("kernel") else rule_value(k, tuple(v.shape), v.dtype, 2048.0)
          for k, v in gen.state_dict().items()}
    gen.load_state_dict(sd)
    return gen.eval()


def test_wplus_images_match_official(full_generator, inputs, expected):
    with torch.no_grad():
        img = full_generator.synthesize(inputs["wp"])
    assert img.shape == (2, 3, 1024, 1024)
    errors = image_errors(img, expected["wplus_images"])
    assert max(errors.values()) <= IMAGE_TOL, errors


@pytest.mark.slow
def test_dropped_noise_fails_the_image_comparison(full_generator, inputs, expected):
    """Dropping the 1024px noise of the last conv (a plausible porting slip) is caught."""
    layer = full_generator.synthesis.layer16
    saved = layer.noise_strength.detach().clone()
    try:
        with torch.no_grad():
            layer.noise_strength.zero_()
            img0 = full_generator.synthesize(inputs["wp"][:1])
    finally:
        with torch.no_grad():
            layer.noise_strength.copy_(saved)
    ref0 = {k: v[:1] for k, v in expected["wplus_images"].items()}
    assert max(image_errors(img0, ref0).values()) > IMAGE_TOL


def test_perturbed_output_fails_the_comparison(inputs, expected):
    ref = expected["wplus_images"]
    ours = {k: v.clone() for k, v in ref.items()}
    assert max(summary_errors(ours, ref).values()) == 0.0
    ours["center32"][1, 2, 5, 5] += 1e-3 * ref["abs_max"][1]  # one pixel off by 0.1% of the scale
    assert summary_errors(ours, ref)["center32"] > IMAGE_TOL
    wp = expected["mapping_wp"].clone()
    assert rel_error(wp, expected["mapping_wp"]) == 0.0
    wp[1, 7, 100] += 1e-3 * wp.abs().max()  # one value off by 0.1% of the scale
    assert rel_error(wp, expected["mapping_wp"]) > LATENT_TOL


def test_mapping_and_styles_match_official(full_generator, inputs, expected):
    with torch.no_grad():
        wp = full_generator.get_w(inputs["z"], inputs["truncation"], inputs["trunc_layers"])
        styles = full_generator.get_s(wp)
    assert rel_error(wp, expected["mapping_wp"]) <= LATENT_TOL
    assert styles.keys() == expected["mapping_styles"].keys()
    for name, ref in expected["mapping_styles"].items():
        assert rel_error(styles[name], ref) <= LATENT_TOL, name
    # sample() is the same path: psi 0.7 on all 18 layers.
    assert torch.equal(full_generator.get_w(inputs["z"]), wp)


def test_perturbed_weight_fails_the_mapping_comparison(full_generator, inputs, expected):
    dense = full_generator.mapping.dense7
    saved = dense.bias.detach().clone()
    try:
        with torch.no_grad():
            dense.bias[3] += 0.05  # a 5% nudge of one bias of the last mapping layer
            wp = full_generator.get_w(inputs["z"], 0.7, 18)
    finally:
        with torch.no_grad():
            dense.bias.copy_(saved)
    assert rel_error(wp, expected["mapping_wp"]) > LATENT_TOL


@pytest.mark.slow
def test_style_space_images_match_official(full_generator, inputs, expected):
    with torch.no_grad():
        styles = full_generator.get_s(full_generator.get_w(inputs["z"], 0.7, 18))
        img = full_generator.synthesize_styles(styles)
    errors = image_errors(img, expected["mapping_images"])
    assert max(errors.values()) <= IMAGE_TOL, errors


def test_layout_and_sampling():
    gen = small_generator(32)
    assert gen.layout.shape == (8, 512) and gen.layout.trainable == (3, 8) and gen.layout.layered
    assert gen.resolution == 32
    a, b = gen.sample(3, seed=5), gen.sample(3, seed=5)
    assert a.shape == (3, 8, 512) and torch.equal(a, b)
    assert not torch.equal(a, gen.sample(3, seed=6))
    with torch.autocast("cpu", dtype=torch.bfloat16):  # latents stay float32 and identical
        assert torch.equal(gen.sample(3, seed=5), a)
    z = torch.randn(3, 512, generator=torch.Generator().manual_seed(5))
    w = gen.mapping(z)[:, None]
    w_avg = gen.truncation.w_avg
    torch.testing.assert_close(a, (w_avg + 0.7 * (w - w_avg)).expand(-1, 8, -1))
    with pytest.raises(ValueError, match="W\\+ latents"):
        gen.synthesize(torch.zeros(1, 7, 512))


def test_batch_equals_single_images():
    gen = small_generator(32)
    wp = gen.sample(3, seed=1)
    with torch.no_grad():
        batch = gen.synthesize(wp)
        single = torch.cat([gen.synthesize(wp[i:i + 1]) for i in range(3)])
    assert rel_error(batch, single) < 1e-5


def test_gradients_and_bf16_autocast_channels_last():
    gen = small_generator(32).requires_grad_(False)
    wp = gen.sample(2, seed=3).requires_grad_(True)
    with torch.no_grad():
        ref = gen.synthesize(wp)
    gen = gen.to(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        img = gen.synthesize(wp)
    assert img.dtype == torch.bfloat16 and img.shape == (2, 3, 32, 32)
    assert rel_error(img.float(), ref) < 0.05
    img.float().square().mean().backward()
    assert wp.grad is not None and torch.isfinite(wp.grad).all() and wp.grad.abs().sum() > 0


def test_loader_container_and_errors(tmp_path):
    gen = small_generator(16)
    sd = gen.state_dict()
    path = tmp_path / "g.pth"
    torch.save({"generator": sd, "discriminator": {"x": torch.zeros(1)}}, path)  # no EMA entry
    loaded = load_genforce_stylegan2(path, truncation_psi=0.5)
    assert loaded.resolution == 16 and loaded.truncation_psi == 0.5 and not loaded.training
    torch.testing.assert_close(loaded.sample(1, 0), gen.get_w(torch.randn(
        1, 512, generator=torch.Generator().manual_seed(0)), 0.5), rtol=0, atol=0)

    bad = dict(sd)
    bad["synthesis.extra.weight"] = torch.zeros(1)
    del bad["synthesis.layer2.noise"]
    torch.save({"generator_smooth": bad}, path)
    with pytest.raises(ValueError, match=r"Missing keys: \[synthesis\.layer2\.noise\].*synthesis\.extra"):
        load_genforce_stylegan2(path)
    torch.save({"something": sd}, path)
    with pytest.raises(ValueError, match="generator_smooth"):
        load_genforce_stylegan2(path)
    with pytest.raises(MissingWeights, match="stylegan2_ffhq1024.pth"):
        load_genforce_stylegan2(tmp_path / "absent.pth")
