"""Deterministic stand-in weights for the equivalence fixtures (tests/fixtures/*/).

The fixtures store no real weights: each folder's manifest lists the official state-dict
entries `[key, shape, dtype]` in order, and every value is rebuilt from a rule seeded by the
key's CRC-32 (see tests/fixtures/README.md, "Weight rule"). Keys named in
`manifest["keep_official"]` are constants the official code builds (e.g. resampling filters)
and come from `keep_official.pt` instead.

    sd = fixture_state_dict(fixture_dir("genforce_stylegan2_ffhq1024"))
"""

from __future__ import annotations

import json
import math
import zlib
from collections import OrderedDict
from pathlib import Path

import torch

FIXTURES = Path(__file__).resolve().parent / "fixtures"


def fixture_dir(name: str) -> Path:
    """Folder of one fixture under tests/fixtures (fails clearly when it is missing)."""
    folder = FIXTURES / name
    if not (folder / "manifest.json").is_file():
        raise FileNotFoundError(f"fixture {name!r} not found at {folder} (expected manifest.json)")
    return folder


def manifest(folder: str | Path) -> dict:
    return json.loads((Path(folder) / "manifest.json").read_text())


def rule_value(key: str, shape: tuple[int, ...], dtype: torch.dtype, multiplier: float = 1.0) -> torch.Tensor:
    """The rule's value for one entry; the same on every platform for a given torch version."""
    if not dtype.is_floating_point:  # counters such as num_batches_tracked
        return torch.zeros(shape, dtype=dtype)
    gen = torch.Generator().manual_seed(zlib.crc32(key.encode("utf-8")))
    t = torch.randn(shape, generator=gen, dtype=torch.float32)
    if key.endswith("running_var"):  # variances must stay positive
        v = t.abs() + 0.5
    elif t.ndim >= 2:  # weights: fan-in scaled so activations keep their size
        v = t * (multiplier / math.sqrt(math.prod(shape[1:])))
    elif "weight" in key and t.ndim == 1:  # norm / affine / PReLU scales near 1
        v = 1 + 0.1 * t
    else:  # biases, other vectors and scalars: small
        v = 0.1 * t
    return v.to(dtype)


def fixture_state_dict(folder: str | Path) -> OrderedDict[str, torch.Tensor]:
    """The full state dict of a fixture, in the official key order."""
    folder = Path(folder)
    m = manifest(folder)
    multiplier = float(m["weight_rule"]["multiplier"])
    kept = torch.load(folder / "keep_official.pt") if m.get("keep_official") else {}
    sd: OrderedDict[str, torch.Tensor] = OrderedDict()
    for key, shape, dtype in m["state_dict_keys"]:
        if key in kept:
            sd[key] = kept[key].clone()
        else:
            sd[key] = rule_value(key, tuple(int(s) for s in shape), getattr(torch, dtype), multiplier)
    return sd


def rel_error(ours: torch.Tensor, ref: torch.Tensor, scale: float | torch.Tensor | None = None) -> float:
    """max|ours - ref| / scale, scale defaulting to max|ref| (the fixtures' tolerance measure)."""
    ours, ref = ours.detach().float().cpu(), ref.detach().float().cpu()
    if ours.shape != ref.shape:
        raise AssertionError(f"shape mismatch: ours {tuple(ours.shape)} vs reference {tuple(ref.shape)}")
    denom = float(ref.abs().max()) if scale is None else float(scale)
    return float((ours - ref).abs().max()) / max(denom, 1e-30)


OFFICIAL_FILES = {  # fixture folder -> (official file name, config override that points at it)
    "genforce_stylegan2_ffhq1024": ("stylegan2_ffhq1024.pth", "generator.checkpoint"),
    "e4e_ffhq_encode": ("e4e_ffhq_encode.pt", "inversion.checkpoint"),
    "arcface_ir_se50": ("model_ir_se50.pth", "identity.checkpoint"),
    "farl_clip_vitb16_visual": ("FaRL-Base-Patch16-LAIONFace20M-ep64.pth", "attributes.checkpoint"),
}


def official_container(name: str) -> dict:
    """A fixture's weights wrapped the way each official checkpoint file stores them."""
    sd = fixture_state_dict(fixture_dir(name))
    if name == "genforce_stylegan2_ffhq1024":
        return {"generator_smooth": sd}
    if name == "e4e_ffhq_encode":
        return {"state_dict": {"encoder." + k: v for k, v in sd.items()},
                "latent_avg": rule_value("latent_avg", (18, 512), torch.float32),
                "opts": {"encoder_type": "Encoder4Editing", "stylegan_size": 1024, "start_from_latent_avg": True}}
    if name == "farl_clip_vitb16_visual":
        return {"state_dict": sd}
    return sd  # ArcFace: the bare state dict


def write_official_checkpoints(out_dir: str | Path) -> dict[str, Path]:
    """Write the four FALCO checkpoints (fixture weights, official containers) under out_dir.

    Returns {config key: path}; existing files are kept (they are deterministic).
        python -m tests.fixture_weights OUT_DIR   # prints the train.py overrides
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, (filename, key) in OFFICIAL_FILES.items():
        path = out / filename
        if not path.is_file():
            tmp = path.with_suffix(".partial")
            torch.save(official_container(name), tmp)
            tmp.replace(path)
        paths[key] = path
    return paths


if __name__ == "__main__":
    import sys

    written = write_official_checkpoints(sys.argv[1] if len(sys.argv) > 1 else "fixture_checkpoints")
    print(" ".join(f"{k}={v}" for k, v in written.items()))
