"""Subnormal weights are flushed at load (falco/backbones/denormals.py), and the library sets
flush-to-zero for its arithmetic (falco/__init__.py)."""

from __future__ import annotations

import subprocess
import sys

import torch
from torch import nn

import falco  # noqa: F401  (sets flush-to-zero)
from falco.backbones.age_gender import load_age_gender
from falco.backbones.denormals import flush_denormals, subnormal
from tests.conftest import ROOT


def test_flush_zeroes_subnormals_only():
    conv = nn.Conv2d(1, 1, 2, bias=True)
    with torch.no_grad():
        # bit patterns: copies and literals would be flushed on the way in (flush-to-zero is on)
        bits = torch.tensor([0x000AE398, 0x8002CD5A - 2**32, 0x00A35D4E, 0x3F000000], dtype=torch.int32)
        conv.weight.view(-1).view(torch.int32).copy_(bits)  # 1e-39, -2.6e-40, 1.5e-38 (normal), 0.5
        conv.bias.view(torch.int32).fill_(0x80001BD4 - 2**32)  # -1e-41
    assert flush_denormals(conv) == 3
    assert conv.weight.view(-1).view(torch.int32).tolist()[2:] == [0x00A35D4E, 0x3F000000]  # kept
    negative_zero = 0x80000000 - 2**32  # each becomes a zero of its own sign, as flush-to-zero makes it
    assert conv.weight.view(-1)[:2].view(torch.int32).tolist() == [0, negative_zero]
    assert conv.bias.view(torch.int32).item() == negative_zero
    assert flush_denormals(conv) == 0


def test_loaded_attribute_nets_hold_no_subnormals():
    net = load_age_gender()  # its published weights hold 6,812 subnormals
    assert all(int(subnormal(p).sum()) == 0 for p in net.parameters())


def test_loaded_weights_do_not_depend_on_the_float_mode_at_load():
    """The converter's arithmetic flushes some subnormals itself when flush-to-zero is on (to a
    signed zero): the loaded weights, hence the stage cache keys, are the same bits either way."""
    mode = torch.set_flush_denormal(True)
    try:
        on = load_age_gender().state_dict()
        torch.set_flush_denormal(False)
        off = load_age_gender().state_dict()
    finally:
        torch.set_flush_denormal(True)
    assert on.keys() == off.keys() and mode
    floats = [k for k in on if on[k].dtype == torch.float32]
    assert floats and all(torch.equal(on[k].view(torch.int32), off[k].view(torch.int32)) for k in floats)


def test_importing_the_library_flushes_subnormal_results():
    """In a fresh process (other tests' libraries may change the thread's float mode here)."""
    code = "import falco, torch; print((torch.tensor([1e-30]) * torch.tensor([1e-10])).item())"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and float(out.stdout) == 0.0, out.stderr[-2000:]  # 1e-40 is subnormal: flushed
