"""The generator's face frame: where its faces' 5 landmarks sit in its output.

Real photos are aligned into this frame (so an original and its anonymized version are in
the same geometry), and fake-pool faces are cropped for the attribute networks with these
landmarks. `alignment=ffhq` (StyleGAN FFHQ models, e4e) uses FFHQ's recipe to align photos;
`alignment=template` (any other generator) aligns photos to the mean landmarks that MTCNN
finds on the generator's own samples.
"""

from __future__ import annotations

import numpy as np
import torch

from ..backbones.base import Generator
from ..detect import FaceDetector
from ..precision import autocast
from ..progress import Progress
from ..seeds import stream_seed
from ..stopping import Pace

# FFHQ's canonical 5 points in unit coordinates (eye distance = 1/4 of the side, crop centred
# 0.1 of the eye-to-mouth vector below the eyes, typical eye-to-mouth / eye-distance ~ 1.1).
FFHQ_TEMPLATE = torch.tensor([[0.375, 0.4725], [0.625, 0.4725], [0.5, 0.61], [0.4, 0.7475], [0.6, 0.7475]])
CHUNK = 16  # samples per seed of the frame's stream; part of the frame's definition


def measure_frame(generator: Generator, detector: FaceDetector, *, samples: int = 64, seed: int = 0,
                  device: str | torch.device = "cpu", batch: int = CHUNK,
                  precision: str = "fp32") -> tuple[torch.Tensor, float]:
    """Mean MTCNN landmarks (5,2) in unit coordinates over generator samples, and the hit rate.
    The latents go to `device` (where the generator is) in batches of at most `batch`; the
    generator renders in `precision` (autocast), MTCNN detects in fp32 (landmark coordinates)."""
    found: list[np.ndarray] = []
    res = generator.resolution
    pace = Pace(batch)  # SIGTERM/SIGINT before each batch: the stage's temporary entry goes, nothing is cached
    with Progress("frame: detect on generator samples", samples) as bar:
        for start in range(0, samples, CHUNK):
            n = min(CHUNK, samples - start)
            z = generator.sample(n, stream_seed("frame", seed, start))
            for part in pace.split(z):
                with torch.no_grad(), autocast(device, precision):
                    images = generator.synthesize(part.to(device)).float()
                found += [det.landmarks / res for det in detector.detect_tensor(images) if det is not None]
                bar.update(len(part))
    rate = len(found) / samples
    if not found:
        return torch.full((5, 2), float("nan")), 0.0
    return torch.tensor(np.mean(found, axis=0), dtype=torch.float32), rate


def generator_frame(generator: Generator, detector: FaceDetector, alignment: str, *,
                    samples: int = 64, seed: int = 0, device: str | torch.device = "cpu",
                    batch: int = CHUNK, precision: str = "fp32") -> tuple[torch.Tensor, dict]:
    """The frame template (5,2) unit coordinates, and a report of how it was obtained."""
    if alignment not in ("ffhq", "template"):
        raise ValueError(f"generator.alignment must be 'ffhq' or 'template', got {alignment!r}")
    measured, rate = measure_frame(generator, detector, samples=samples, seed=seed, device=device, batch=batch,
                                   precision=precision)
    if alignment == "ffhq" and rate < 0.5:
        return FFHQ_TEMPLATE.clone(), {"source": "ffhq_canonical", "detection_rate": rate}
    if rate < 0.5:
        raise RuntimeError(
            f"MTCNN found faces in only {rate:.0%} of {samples} generator samples, so the generator's "
            "face frame cannot be measured. Use alignment=ffhq for FFHQ-aligned generators, or check "
            "that the generator weights are real.")
    return measured, {"source": "measured", "detection_rate": rate}
