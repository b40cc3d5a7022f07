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

from ..backbones.base import AttributeEncoder, Generator
from ..detect import FaceDetector
from ..precision import autocast
from ..progress import Progress
from ..seeds import stream_seed
from ..stopping import Pace
from ..views import robust_features

CHUNK = 64  # samples per seed of the pool's stream; part of the pool's definition
SHARD_CHUNKS = 64  # chunks per saved shard


def run_fakepool(generator: Generator, attributes: AttributeEncoder, template: torch.Tensor, out: Path,
                 *, size: int, seed: int, device: str | torch.device = "cpu", batch: int = CHUNK,
                 detector: FaceDetector | None = None, views: int = 0, precision: str = "fp32") -> None:
    """The networks run where they are; `device` is where their inputs go, in batches of at
    most `batch` fakes (memory) and of about the stop budget's time (falco/stopping.py Pace),
    whatever the pool size. The artefacts are stored on the CPU.
    detector: if given, each fake records whether MTCNN finds a face in it (`detected`).
    views: pairing features averaged over this many fixed random views (falco/views.py).
    precision: the generator and the attribute network compute in it (autocast: bf16 | fp16 |
    fp32); MTCNN in fp32. The stored features are fp32."""
    lat, feat, found, shard = [], [], [], 0
    pace = Pace(batch)  # SIGTERM/SIGINT before each batch: the stage's temporary entry goes, nothing is cached
    with Progress("fake pool: sample + embed", size) as bar:
        for c in range(math.ceil(size / CHUNK)):
            n = min(CHUNK, size - c * CHUNK)
            z = generator.sample(n, stream_seed("pool", seed, c))
            parts = []
            for part in pace.split(z):
                parts.append(_embed(generator, attributes, template, part.to(device), detector, views, precision))
                bar.update(len(part))
            lat.append(z.cpu())
            feat.append(torch.cat([f for f, _ in parts]))
            found.append(torch.tensor([hit for _, hits in parts for hit in hits]))
            if len(lat) == SHARD_CHUNKS:
                _save(out / f"pool_{shard:05d}.pt", lat, feat, found)
                lat, feat, found, shard = [], [], [], shard + 1
    if lat:
        _save(out / f"pool_{shard:05d}.pt", lat, feat, found)


def _embed(generator: Generator, attributes: AttributeEncoder, template: torch.Tensor, z: torch.Tensor,
           detector: FaceDetector | None, views: int, precision: str = "fp32") -> tuple[torch.Tensor, list[bool]]:
    """Pairing features (on the CPU) of the fakes of latents z, and whether MTCNN finds each face."""
    res = generator.resolution
    with torch.no_grad(), autocast(z.device, precision):
        images = generator.synthesize(z).float()
        lm = (template * res).to(z.device).expand(len(z), -1, -1)
        f = robust_features(attributes.pairing_features, images, attributes.crop_thetas(lm, (res, res)), views)
    hits = [d is not None for d in detector.detect_tensor(images)] if detector else [True] * len(z)
    return f.float().cpu(), hits


def _save(path: Path, lat: list, feat: list, found: list) -> None:
    torch.save({"latents": torch.cat(lat), "features": torch.cat(feat), "detected": torch.cat(found)}, path)


def load_pool(root: Path) -> dict[str, torch.Tensor]:
    parts = [torch.load(p, weights_only=True) for p in sorted(Path(root).glob("pool_*.pt"))]
    return {k: torch.cat([p[k] for p in parts]) for k in ("latents", "features", "detected")}
