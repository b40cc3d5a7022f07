"""Image quality of the anonymized set: FID and KID against the real images.

Features come from a feature extractor: any nn.Module mapping uint8 images (N,3,H,W) in
0..255 to (N,D) features. The default is the standard FID Inception-v3 (TF 2015-12-05 weights,
2048-d pool features) through torchmetrics/torch-fidelity, loaded from a LOCAL file — nothing
is downloaded; a missing file raises `MissingWeights` naming it. Tests inject a tiny extractor.

FID and KID are computed by torchmetrics' FrechetInceptionDistance / KernelInceptionDistance
on the extracted features (a pass-through module stands in for their network), so real-image
features can be computed once and cached in a file keyed by a string (written atomically).
The key must name both the real set and the extractor, e.g. "celebahq-test/inception2048".
FID is biased upwards for small sets: compare methods at equal set sizes. KID is unbiased and
reported with its spread over random subsets.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path

import torch
from torch import nn

from falco.backbones.checkpoints import user_checkpoint

INCEPTION_FILENAME = "pt_inception-2015-12-05-6726825d.pth"
INCEPTION_SOURCE = (
    "pytorch-fid's release 'fid_weights' (github.com/mseitzer/pytorch-fid/releases/download/"
    "fid_weights/pt_inception-2015-12-05-6726825d.pth). torch-fidelity publishes the same TF "
    "2015-12-05 weights as 'weights-inception-2015-12-05-6726825d.pth' (release v0.2.0); a machine "
    "where torch-fidelity once ran has it in ~/.cache/torch/hub/checkpoints/, usable as is")
Images = torch.Tensor | Iterable[torch.Tensor]


def inception_extractor(weights_path: str | os.PathLike | None, *,
                        config_key: str = "evaluation.inception_weights") -> nn.Module:
    """torchmetrics' FID Inception-v3 (2048-d) from a local weights file.

    Put the file (see INCEPTION_SOURCE) anywhere and pass its path (config key `config_key`).
    The file is checked with `weights_only=True` first, so a pickle that would run code is
    refused before torch-fidelity (which loads without that guard) touches it.
    """
    path = user_checkpoint(weights_path, what="Inception-v3 feature extractor for FID/KID",
                           filename=INCEPTION_FILENAME, source=INCEPTION_SOURCE, config_key=config_key)
    try:
        torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # any failure means "not a plain state dict"
        raise ValueError(f"{path} is not a plain tensor state dict (weights_only load failed: {err}); "
                         f"expected the file {INCEPTION_FILENAME!r}") from err
    try:
        from torchmetrics.image.fid import NoTrainInceptionV3
        return NoTrainInceptionV3("inception-v3-compat", ["2048"], feature_extractor_weights_path=str(path))
    except ModuleNotFoundError as err:
        raise ModuleNotFoundError(
            "FID/KID with Inception needs torch-fidelity: pip install torch-fidelity") from err


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] float (N,3,H,W) -> uint8 0..255, rounded like saving an 8-bit image."""
    return ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def _batches(images: Images, batch_size: int) -> Iterable[torch.Tensor]:
    return images.split(batch_size) if isinstance(images, torch.Tensor) else images


@torch.no_grad()
def extract_features(images: Images, extractor: nn.Module, *, batch_size: int = 50,
                     device: str | torch.device = "cpu") -> torch.Tensor:
    """(N,D) float64 features on CPU of images in [-1,1]: one tensor or an iterable of batches."""
    extractor = extractor.to(device).eval()
    out = [extractor(to_uint8(b).to(device)).reshape(len(b), -1).double().cpu()
           for b in _batches(images, batch_size)]
    if not out:
        raise ValueError("no images to extract features from")
    return torch.cat(out)


def cache_path(cache_dir: str | os.PathLike, key: str) -> Path:
    """Readable and collision-free file name for a cache key."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", key)[:80]
    return Path(cache_dir) / f"{slug}-{hashlib.sha256(key.encode()).hexdigest()[:16]}.pt"


def cached_features(key: str, cache_dir: str | os.PathLike,
                    compute: Callable[[], torch.Tensor]) -> torch.Tensor:
    """Load features stored under `key`, or compute them and store them atomically."""
    path = cache_path(cache_dir, key)
    if path.is_file():
        payload = torch.load(path, map_location="cpu", weights_only=True)
        if payload.get("key") == key:
            return payload["features"]
    features = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    os.close(fd)
    torch.save({"key": key, "features": features}, tmp)
    os.replace(tmp, path)  # readers see the old file or the whole new one, never half
    return features


class _Given(nn.Module):
    """Pass-through 'network': lets torchmetrics' FID/KID consume precomputed features."""

    def __init__(self, dim: int):
        super().__init__()
        self.num_features = dim

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features


def fid_kid(real: torch.Tensor, fake: torch.Tensor, *, kid_subsets: int = 100,
            kid_subset_size: int = 1000, seed: int = 0) -> dict:
    """FID and KID between feature sets real (N,D) and fake (M,D).

    KID's subset size is capped at min(N, M) and reported; KID is NaN below 2 per set.
    """
    from torchmetrics.image.fid import FrechetInceptionDistance
    from torchmetrics.image.kid import KernelInceptionDistance

    real, fake = real.double(), fake.double()
    if len(real) < 2 or len(fake) < 2:
        raise ValueError(f"FID needs at least 2 images per set, got {len(real)} real and {len(fake)} fake")
    fid = FrechetInceptionDistance(feature=_Given(real.shape[1]))
    fid.update(real, real=True)
    fid.update(fake, real=False)
    size = min(kid_subset_size, len(real), len(fake))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*will save all extracted features.*")
        kid = KernelInceptionDistance(feature=_Given(real.shape[1]), subsets=kid_subsets, subset_size=size)
    kid.update(real, real=True)
    kid.update(fake, real=False)
    with torch.random.fork_rng(devices=[]):  # KID draws subsets from the global RNG
        torch.manual_seed(seed)
        kid_mean, kid_std = kid.compute()
    return {"fid": float(fid.compute()), "kid_mean": float(kid_mean), "kid_std": float(kid_std),
            "kid_subset_size": size, "kid_subsets": kid_subsets, "n_real": len(real),
            "n_fake": len(fake), "feature_dim": int(real.shape[1])}


def image_quality(real_images: Images | None, fake_images: Images, *,
                  extractor: nn.Module | None = None, weights_path: str | os.PathLike | None = None,
                  cache_dir: str | os.PathLike | None = None, real_key: str | None = None,
                  batch_size: int = 50, device: str | torch.device = "cpu",
                  kid_subsets: int = 100, kid_subset_size: int = 1000, seed: int = 0) -> dict:
    """FID/KID of anonymized images vs real images, both in [-1,1] (tensor or batches).

    extractor: injected feature network; default = Inception from `weights_path`.
    cache_dir + real_key: real features are read from / written to the cache; on a hit
    real_images is not touched (may be None).
    """
    extractor = extractor if extractor is not None else inception_extractor(weights_path)

    def real_features() -> torch.Tensor:
        if real_images is None:
            raise ValueError("real_images is None and no cached features exist for this key")
        return extract_features(real_images, extractor, batch_size=batch_size, device=device)

    use_cache = cache_dir is not None and real_key is not None
    real = cached_features(real_key, cache_dir, real_features) if use_cache else real_features()
    fake = extract_features(fake_images, extractor, batch_size=batch_size, device=device)
    return fid_kid(real, fake, kid_subsets=kid_subsets, kid_subset_size=kid_subset_size, seed=seed)
