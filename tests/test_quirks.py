"""method.faithful_quirks: the official code's range mix, unaligned target and min-max JPEG output."""

from __future__ import annotations

import json

import numpy as np
import torch
from PIL import Image

from falco.quirks import adaptive_uint8, apply_network_quirks, official_range, unaligned_target
from train import run


def test_adaptive_output_stretches_each_image_to_the_full_range():
    x = torch.stack([torch.linspace(-0.5, 0.3, 3 * 4 * 4).view(3, 4, 4), torch.full((3, 4, 4), 0.2)])
    x[1, 0, 0, 0] = 0.9
    out = adaptive_uint8(x)
    assert out.shape == (2, 4, 4, 3) and out.dtype == np.uint8
    assert out[0].min() == 0 and out[0].max() == 255  # -0.5 -> 0 and 0.3 -> 255, not 64 and 166
    assert out[1].min() == 0 and out[1].max() == 255
    assert official_range(torch.tensor([-1.0, 0.0, 1.0])).tolist() == [0.0, 0.5, 1.0]


def test_unaligned_target_is_the_whole_photo_resized():
    photo = np.zeros((40, 80, 3), np.uint8)
    photo[:, 40:] = 200  # right half bright
    t = unaligned_target(photo, 16)
    assert t.shape == (3, 16, 16) and t.dtype == torch.uint8
    assert int(t[0, 8, 2]) == 0 and int(t[0, 8, 13]) == 200  # squeezed, not cropped around a face


def test_network_quirk_switches_farl_normalization_off():
    class FakeFaRL(torch.nn.Module):
        normalize = True

    net = FakeFaRL()
    apply_network_quirks(net)
    assert net.normalize is False
    apply_network_quirks(torch.nn.Linear(1, 1))  # networks without the knob are left alone


def _first_losses(run_dir) -> list[float]:
    lines = (run_dir / "private" / "records.jsonl").read_text().splitlines()
    return sorted(json.loads(s)["losses"]["first"]["attribute"] for s in lines)


def test_quirks_run_writes_min_max_jpegs_and_uses_other_targets(fast_cfg, tmp_path):
    cfg = ("data.identities=2", "method.steps=2", "summary=true")
    plain = run(fast_cfg(*cfg), str(tmp_path / "plain"))
    quirky = run(fast_cfg(*cfg, "method.faithful_quirks=true"), str(tmp_path / "quirky"))
    assert plain.processed == quirky.processed == 2
    images = sorted((tmp_path / "quirky" / "release" / "images").iterdir())
    assert [p.suffix for p in images] == [".jpg", ".jpg"]
    for p in images:
        im = Image.open(p)
        assert im.format == "JPEG" and not im.info.get("exif") and not im.info.get("icc_profile")
        levels = np.asarray(im)
        assert levels.min() <= 8 and levels.max() >= 247  # stretched to the full range (JPEG blurs extremes)
    assert quirky.summary["done"] == 2  # the summary reads the JPEGs back
    # Same pairs and starting latents, but the attribute target is the unaligned [0,1] photo.
    assert _first_losses(tmp_path / "plain") != _first_losses(tmp_path / "quirky")
    assert not any((tmp_path / "plain" / "release" / "images").glob("*.jpg"))
