"""The fast synthesis used at every Adam step equals the generator's own synthesis.

`GenforceStyleGAN2.partial_synthesis` precomputes the fixed W+ layers' work once per batch and
folds the constant styles into the tail's weights (falco/backbones/stylegan2_frozen.py). It must
give the same images and the same latent gradients as `synthesize` on the full W+ code, image by
image whatever the batch, and the official fixture images at full size.
"""

from __future__ import annotations

import pytest
import torch

from falco.backbones.stylegan2_genforce import load_genforce_stylegan2
from tests.backbones.test_stylegan2_genforce import FOLDER, IMAGE_TOL, image_errors, small_generator
from tests.fixture_weights import fixture_state_dict

TOL = 1e-5  # relative to max|reference|; measured ~1e-6 (rounding of the folded weights)


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.detach() - b.detach()).abs().max() / b.detach().abs().max())


def full_and_part(gen, seed: int, n: int):
    """Fixed codes, a trainable part, and the full W+ code they make together."""
    wp, init = gen.sample(n, seed), gen.sample(n, seed + 1)
    start, stop = gen.layout.trainable
    part = init[:, start:stop].clone()
    return wp, part, torch.cat([wp[:, :start], part, wp[:, stop:]], 1)


@pytest.mark.parametrize("resolution", [32, 128])  # 32: no tail after layers 3-7; 128: a tail
def test_images_and_latent_gradients_match_synthesize(resolution):
    gen = small_generator(resolution).requires_grad_(False)
    wp, part, full = full_and_part(gen, 1, 3)
    full.requires_grad_(True)
    part.requires_grad_(True)
    ref = gen.synthesize(full)
    out = gen.partial_synthesis(wp)(part)
    (ref.square().mean() + ref.mean()).backward()
    (out.square().mean() + out.mean()).backward()
    start, stop = gen.layout.trainable
    assert rel(out, ref) < TOL
    assert rel(part.grad, full.grad[:, start:stop]) < TOL
    assert full.grad[:, :start].abs().max() > 0  # the check can fail: the fixed layers do matter


def test_each_image_is_computed_as_in_a_batch_of_one():
    gen = small_generator(128).requires_grad_(False)
    wp, part, _ = full_and_part(gen, 2, 3)
    batch = gen.partial_synthesis(wp)(part)
    for n in range(3):
        alone = gen.partial_synthesis(wp[n:n + 1])(part[n:n + 1])
        assert rel(alone[0], batch[n]) < TOL  # the batched live layers: oneDNN kernels vary with B
    other = gen.partial_synthesis(wp.roll(1, 0))(part)  # a different fixed code changes the image
    assert rel(other, batch) > 1e-2


def test_bf16_autocast_stays_close_to_float32():
    gen = small_generator(128).requires_grad_(False)
    wp, part, full = full_and_part(gen, 3, 2)
    ref = gen.synthesize(full)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        plain = gen.synthesize(full).float()
        fast = gen.partial_synthesis(wp)(part).float()
    assert rel(fast, ref) <= 2 * rel(plain, ref) + 1e-3  # no worse than autocast on the plain path


def test_full_size_fast_path_matches_the_official_images(tmp_path):
    path = tmp_path / "stylegan2_ffhq1024.pth"
    torch.save({"generator_smooth": fixture_state_dict(FOLDER)}, path)
    gen = load_genforce_stylegan2(path).requires_grad_(False)
    wp = torch.load(FOLDER / "inputs.pt")["wp"]
    start, stop = gen.layout.trainable
    with torch.no_grad():
        img = gen.partial_synthesis(wp)(wp[:, start:stop])
    errors = image_errors(img, torch.load(FOLDER / "expected.pt")["wplus_images"])
    assert max(errors.values()) <= IMAGE_TOL, errors
