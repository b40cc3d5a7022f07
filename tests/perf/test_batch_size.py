"""The rule that sizes the images in flight to the machine, and the module applying it."""

from __future__ import annotations

import torch

from falco.batch_size import CAP, MB, images_that_fit, memory_per_image
from falco.config import MethodConfig
from falco.module import AnonymizerModule
from tests.keyed import ToyAttributes, ToyGenerator, ToyIdentity

GiB = 1024 * MB


class Named(torch.nn.Module):
    """A stand-in with a generator's class name and resolution (the rule only reads those)."""

    def __init__(self, name: str, resolution: int):
        super().__init__()
        self.resolution = resolution
        self.__class__ = type(name, (Named,), {})


def test_measured_figures_and_the_rule_on_this_kind_of_machine():
    sg2 = Named("GenforceStyleGAN2", 1024)
    per, fixed = memory_per_image(sg2, "bf16")
    assert 100 * MB < per < 4 * GiB and fixed < 2 * GiB  # a 1024 px image's activations, not its weights
    # 24 GiB free: half of it holds ~16 images of the official generator in bf16, fewer in fp32
    assert images_that_fit(sg2, "bf16", available=24 * GiB) == (12 * GiB - fixed) // per
    assert images_that_fit(sg2, "fp32", available=24 * GiB) < images_that_fit(sg2, "bf16", available=24 * GiB)
    assert images_that_fit(sg2, "bf16", available=2 * GiB) == 1  # never below one image
    assert images_that_fit(Named("DCGANGenerator", 64), "bf16", available=24 * GiB) == CAP


def test_more_memory_never_means_fewer_images_and_unknown_generators_are_scaled():
    sg2 = Named("GenforceStyleGAN2", 1024)
    counts = [images_that_fit(sg2, "bf16", available=g * GiB) for g in range(1, 64)]
    assert counts == sorted(counts) and counts[0] == 1 and counts[-1] == CAP
    other = memory_per_image(Named("StyleGAN2ADA", 1024), "bf16")[0]
    assert other > memory_per_image(sg2, "bf16")[0]  # no fast path measured: a safety margin
    assert memory_per_image(Named("StyleGAN2ADA", 256), "bf16")[0] < other  # scaled with the pixels


def toy_batch(n: int) -> dict:
    g = ToyGenerator()
    return {"index": torch.arange(n), "image": g.synthesize(g.sample(n, 1)).detach(),
            "landmarks": torch.zeros(n, 5, 2), "init": g.sample(n, 2), "fixed": g.sample(n, 2), "fake": g.sample(n, 2)}


def test_a_batch_larger_than_memory_allows_is_optimized_in_parts_with_the_same_result():
    torch.manual_seed(0)
    nets = (ToyGenerator(), ToyIdentity(), ToyAttributes())
    method = MethodConfig(steps=4, margin=0.5, attr_weight=1.0)
    batch = toy_batch(5)
    whole = AnonymizerModule(*nets, method, max_in_flight=8).predict_step(batch, 0)
    parts = AnonymizerModule(*nets, method, max_in_flight=2).predict_step(batch, 0)
    assert parts["history"].shape == whole["history"].shape == (4, 5, 3)
    for key in ("latents", "images", "distance_first", "distance_final"):
        assert parts[key].shape == whole[key].shape
        torch.testing.assert_close(parts[key], whole[key], rtol=1e-5, atol=1e-5)
    assert torch.equal(parts["index"], batch["index"])


def test_the_rule_is_used_when_no_limit_is_given():
    module = AnonymizerModule(ToyGenerator(), ToyIdentity(), ToyAttributes(), MethodConfig(steps=1))
    assert module.images_in_flight() >= 1 and module.max_in_flight == module.images_in_flight()
