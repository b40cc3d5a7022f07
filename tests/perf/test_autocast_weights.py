"""Casting the frozen weights once per optimization changes no result, and is undone after."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from falco.backbones.autocast_weights import autocast_weights
from falco.backbones.farl import FaRLVisual
from falco.backbones.irse50 import make_body, make_input_layer


def small_nets() -> dict[str, tuple[nn.Module, torch.Tensor]]:
    """Stock conv/BN/PReLU/SE (IR-SE units), a ViT with FaRL's attention, and a DCGAN-like head."""
    torch.manual_seed(0)
    irse = nn.Sequential(make_input_layer(), make_body(((64, 64, 1), (64, 128, 1)))).eval()
    for key, value in irse.state_dict().items():  # non-trivial BN statistics and affine parameters
        if value.is_floating_point() and value.ndim == 1:
            value.copy_(torch.rand_like(value) + 0.5 if "var" in key or "weight" in key else torch.randn_like(value))
    vit = FaRLVisual(width=64, layers=2).eval()
    for p in vit.parameters():
        nn.init.normal_(p, std=0.05)
    dcgan = nn.Sequential(nn.ConvTranspose2d(8, 16, 4, 1, 0), nn.BatchNorm2d(16), nn.ReLU(), nn.Linear(4, 4)).eval()
    return {"irse": (irse, torch.randn(2, 3, 32, 32)), "vit": (vit, torch.randn(2, 3, 224, 224)),
            "dcgan": (dcgan, torch.randn(2, 8, 1, 1))}


@pytest.mark.parametrize("name", ["irse", "vit", "dcgan"])
def test_bit_identical_under_bf16_autocast_and_restored(name):
    net, x = small_nets()[name]
    net.requires_grad_(False)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ref = net(x) if name != "vit" else net.tokens(x)
        with autocast_weights(net):
            cast = [p for p in net.parameters() if p.dtype == torch.bfloat16]
            out = net(x) if name != "vit" else net.tokens(x)
    assert cast  # something was cast (else the test proves nothing)
    assert torch.equal(out, ref)
    after = net.state_dict()
    assert all(after[k].dtype == v.dtype and torch.equal(after[k], v) for k, v in before.items())


def test_a_real_change_of_precision_is_detected():
    """The comparison above can fail: also casting BatchNorm (which autocast leaves in fp32) shows."""
    net, x = small_nets()["irse"]
    net.requires_grad_(False)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ref = net(x)
        with autocast_weights(net):
            net.apply(lambda m: m.to(torch.bfloat16) if isinstance(m, nn.BatchNorm2d) else None)
            assert not torch.equal(net(x), ref)


def test_nothing_happens_outside_autocast_or_for_trainable_weights():
    net, _ = small_nets()["irse"]
    with autocast_weights(net):  # no autocast: weights stay float32
        assert all(p.dtype == torch.float32 for p in net.parameters())
    net.requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16), autocast_weights(net):
        assert all(p.dtype == torch.float32 for p in net.parameters())  # trainable: left to autocast


def test_weights_are_restored_after_an_exception():
    net, _ = small_nets()["vit"]
    net.requires_grad_(False)
    with pytest.raises(ValueError), torch.autocast("cpu", dtype=torch.bfloat16), autocast_weights(net):
        raise ValueError("boom")
    assert all(p.dtype == torch.float32 for p in net.parameters())
