"""Stage `fakepool`: N generator samples with their latents and attribute pairing features.

Generated in batches (seed stream "pool", one seed per chunk, so the pool is identical
whatever the batch size used elsewhere) into a few tensor shards, never one folder per
sample. Fakes are already in the generator's frame, so the attribute networks' crops come
from the frame template's landmarks.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..backbones.base import AttributeEncoder, Generator
from ..seeds import stream_seed

CHUNK = 64  # samples per generator call; part of the pool's definition (seeds are per chunk)
SHARD_CHUNKS = 64  # chunks per saved shard


def run_fakepool(generator: Generator, attributes: AttributeEncoder, template: torch.Tensor, out: Path,
                 *, size: int, seed: int, device: str = "cpu") -> None:
    res = generator.resolution
    lat, feat, shard = [], [], 0
    for c in tqdm(range(math.ceil(size / CHUNK)), desc="fake pool: sample + embed", unit="chunk"):
        n = min(CHUNK, size - c * CHUNK)
        z = generator.sample(n, stream_seed("pool", seed, c)).to(device)
        with torch.no_grad():
            images = generator.synthesize(z).float()
            lm = (template * res).to(device).expand(n, -1, -1)
            f = attributes.pairing_features(images, attributes.crop_thetas(lm, (res, res)))
        lat.append(z.cpu())
        feat.append(f.float().cpu())
        if len(lat) == SHARD_CHUNKS:
            torch.save({"latents": torch.cat(lat), "features": torch.cat(feat)}, out / f"pool_{shard:05d}.pt")
            lat, feat, shard = [], [], shard + 1
    if lat:
        torch.save({"latents": torch.cat(lat), "features": torch.cat(feat)}, out / f"pool_{shard:05d}.pt")


def load_pool(root: Path) -> dict[str, torch.Tensor]:
    parts = [torch.load(p, weights_only=True) for p in sorted(Path(root).glob("pool_*.pt"))]
    return {k: torch.cat([p[k] for p in parts]) for k in ("latents", "features")}
