"""The batch-invariant mode (method.batch_invariant, method.batch_invariant=true): every image is
optimized as if alone, so its latents are bit for bit the official per-image loop's in float32,
whatever its batch mates, on a StyleGAN2 with a folded tail and the embedded loss networks."""

from __future__ import annotations

import pytest
import torch

from benchmarks.harness.official_loop import official_style_optimize
from falco.backbones.age_gender import load_age_gender
from falco.backbones.dlib_resnet import load_dlib_recognizer
from falco.config import MethodConfig
from falco.module import AnonymizerModule
from tests.backbones.test_stylegan2_genforce import small_generator
from tests.perf.test_official_loop import LANDMARKS

RES = 128  # W+ 3-7 feed the layers up to 64 px: the 128 px layers are a folded tail
STEPS = 5


def image_range_generator():
    """The fixture-rule generator with its ToRGB layers scaled so that images lie within [-0.5, 0.5]
    (the embedded recognizers take [-1, 1] images; the RGB skip sum is linear in those layers)."""
    gen = small_generator(RES).requires_grad_(False)
    with torch.no_grad():
        scale = 0.5 / float(gen.synthesize(gen.sample(8, 0)).abs().max())
        for j in range(gen.synthesis.num_blocks):
            out = getattr(gen.synthesis, f"output{j}")
            out.weight.mul_(scale)
            out.bias.mul_(scale)
    return gen


@pytest.fixture(scope="module")
def nets():
    return image_range_generator(), load_dlib_recognizer(), load_age_gender()


def batch(gen, n: int, init_shift: float = 0.0) -> dict:
    with torch.no_grad():
        images = gen.synthesize(gen.sample(n, 21))
    init = gen.sample(n, 22)
    init[-1] += init_shift  # only the last image changes
    return {"index": torch.arange(n), "image": images, "landmarks": (LANDMARKS * RES / 64).expand(n, 5, 2),
            "init": init, "fixed": gen.sample(n, 23)}


def ours(nets, b: dict, invariant: bool) -> torch.Tensor:
    method = MethodConfig(steps=STEPS, margin=0.75, attr_weight=1.0)
    return AnonymizerModule(*nets, method, batch_invariant=invariant).predict_step(b, 0)["latents"]


def official(nets, b: dict) -> torch.Tensor:
    gen, identity, attributes = nets
    lm = b["landmarks"]
    return official_style_optimize(gen, identity, attributes, b["image"], b["init"], b["fixed"],
                                    identity.crop_theta(lm, (RES, RES)), attributes.crop_thetas(lm, (RES, RES)),
                                    steps=STEPS, margin_distance=0.75, attr_weight=1.0)


def test_exact_partial_synthesis_is_bit_for_bit_synthesize(nets):
    gen = nets[0]
    wp, init = gen.sample(3, 1), gen.sample(3, 2)
    start, stop = gen.layout.trainable
    part = init[:, start:stop].clone().requires_grad_(True)
    full = torch.cat([wp[:, :start], init[:, start:stop], wp[:, stop:]], 1).requires_grad_(True)
    out, ref = gen.partial_synthesis(wp, exact=True)(part), gen.synthesize(full)
    out.square().mean().backward()
    ref.square().mean().backward()
    assert torch.equal(out, ref)
    assert torch.equal(part.grad, full.grad[:, start:stop])


def test_a_batch_gives_the_official_per_image_latents_bit_for_bit(nets):
    b = batch(nets[0], 3)
    got, ref = ours(nets, b, invariant=True), official(nets, b)
    assert (got - b["init"]).abs().max() > 0.01  # the latents did move
    assert torch.equal(got, ref)


def test_an_image_does_not_depend_on_its_batch_mates(nets):
    got = ours(nets, batch(nets[0], 3), invariant=True)
    moved = ours(nets, batch(nets[0], 3, init_shift=1e-3), invariant=True)
    assert torch.equal(got[:2], moved[:2])
    assert not torch.equal(got[2], moved[2])  # the comparison can fail
