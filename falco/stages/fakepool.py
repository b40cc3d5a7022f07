"""Stage `fakepool`: N generator samples with their latents and attribute pairing features.

Generated in batches (seed stream "pool", one seed per chunk, so the pool is identical
whatever the batch size used elsewhere) into a few tensor shards, never one folder per
sample. Fakes are already in the generator's frame, so the attribute networks' crops come
from the frame template's landmarks. Each fake also records whether MTCNN finds a face in it
(about 5% of DCGAN samples are not faces to it), so pairing can skip those.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..backbones.base import AttributeEncoder, Generator
from ..detect import FaceDetector
from ..seeds import stream_seed
from ..views import robust_features

CHUNK = 64  # samples per generator call; part of the pool's definition (seeds are per chunk)
SHARD_CHUNKS = 64  # chunks per saved shard


def run_fakepool(generator: Generator, attributes: AttributeEncoder, template: torch.Tensor, out: Path,
                 *, size: int, seed: int, device: str = "cpu", detector: FaceDetector | None = None,
                 views: int = 0) -> None:
    """detector: if given, each fake records whether MTCNN finds a face in it (`detected`).
    views: pairing features averaged over this many fixed random views (falco/views.py)."""
    res = generator.resolution
    lat, feat, found, shard = [], [], [], 0
    for c in tqdm(range(math.ceil(size / CHUNK)), desc="fake pool: sample + embed", unit="chunk"):
        n = min(CHUNK, size - c * CHUNK)
        z = generator.sample(n, stream_seed("pool", seed, c)).to(device)
        with torch.no_grad():
            images = generator.synthesize(z).float()
            lm = (template * res).to(device).expand(n, -1, -1)
            f = robust_features(attributes.pairing_features, images, attributes.crop_thetas(lm, (res, res)), views)
        lat.append(z.cpu())
        feat.append(f.float().cpu())
        hits = [d is not None for d in detector.detect_tensor(images)] if detector else [True] * n
        found.append(torch.tensor(hits))
        if len(lat) == SHARD_CHUNKS:
            _save(out / f"pool_{shard:05d}.pt", lat, feat, found)
            lat, feat, found, shard = [], [], [], shard + 1
    if lat:
        _save(out / f"pool_{shard:05d}.pt", lat, feat, found)


def _save(path: Path, lat: list, feat: list, found: list) -> None:
    torch.save({"latents": torch.cat(lat), "features": torch.cat(feat), "detected": torch.cat(found)}, path)


def load_pool(root: Path) -> dict[str, torch.Tensor]:
    parts = [torch.load(p, weights_only=True) for p in sorted(Path(root).glob("pool_*.pt"))]
    return {k: torch.cat([p[k] for p in parts]) for k in ("latents", "features", "detected")}
