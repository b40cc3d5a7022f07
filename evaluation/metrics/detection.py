"""Detection rate: the share of images in which a face detector still finds a face.

A detector is any callable `images -> list of per-image detections`, images float RGB NCHW
in [-1, 1]. Each per-image item is a `Detections` or a tuple (boxes (K,4), probs (K,)[,
landmarks (K,5,2)]) of tensors or arrays, boxes (x0, y0, x1, y1) in pixels of the input image.
An image counts as detected when one of its faces has probability >= `threshold`.

`mtcnn_detector` adapts facenet-pytorch's MTCNN (weights ship inside the package).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


@dataclass
class Detections:
    """One image's faces: boxes (K,4) pixels, probs (K,), landmarks (K,5,2) or None."""

    boxes: torch.Tensor
    probs: torch.Tensor
    landmarks: torch.Tensor | None = None


Detector = Callable[[torch.Tensor], Sequence]


def _tensor(x, shape_tail: tuple[int, ...]) -> torch.Tensor:
    """float32 tensor from a tensor, float array or numpy-2 object array; None -> empty."""
    if x is None:
        return torch.zeros(0, *shape_tail)
    if isinstance(x, torch.Tensor):
        return x.float().reshape(-1, *shape_tail)
    arr = np.asarray(list(x) if isinstance(x, np.ndarray) and x.dtype == object else x)
    if arr.dtype == object:  # e.g. [None] for "no face"
        arr = np.asarray([v for v in arr.ravel() if v is not None], dtype=np.float32)
    return torch.as_tensor(arr.astype(np.float32)).reshape(-1, *shape_tail)


def as_detections(item) -> Detections:
    """Normalize one detector output item to `Detections` with float32 tensors."""
    if isinstance(item, Detections):
        return item
    boxes, probs, *rest = item  # rest = [landmarks] when the detector gives them
    return Detections(_tensor(boxes, (4,)), _tensor(probs, ()),
                      _tensor(rest[0], (5, 2)) if rest else None)


def detect(images: torch.Tensor, detector: Detector, *, batch_size: int = 32) -> list[Detections]:
    """Run `detector` over images (N,3,H,W) in batches; one `Detections` per image."""
    out: list[Detections] = []
    for batch in images.split(batch_size):
        items = list(detector(batch))
        if len(items) != len(batch):
            raise ValueError(f"detector returned {len(items)} results for {len(batch)} images")
        out.extend(as_detections(i) for i in items)
    return out


def found(detections: Sequence[Detections], threshold: float) -> torch.Tensor:
    """(N,) bool: some face with probability >= threshold."""
    return torch.tensor([bool((d.probs >= threshold).any()) for d in detections], dtype=torch.bool)


def detection_rate(images: torch.Tensor | None, detector: Detector | None = None, *,
                   threshold: float = 0.9, batch_size: int = 32,
                   detections: Sequence[Detections] | None = None) -> dict:
    """Share of images with a face at probability >= threshold.

    Pass images and a detector, or precomputed `detections` (e.g. reused for landmarks).
    threshold 0.9 is a common MTCNN operating point (MTCNN's own last stage keeps >= 0.7).
    """
    if detections is None:
        detections = detect(images, detector, batch_size=batch_size)
    hit = found(detections, threshold)
    n = len(detections)
    return {"rate": float(hit.double().mean()) if n else math.nan, "n_images": n,
            "n_detected": int(hit.sum()), "threshold": float(threshold)}


def best_landmarks(detections: Sequence[Detections], threshold: float = 0.0) -> torch.Tensor:
    """(N,5,2) landmarks of each image's most probable face; NaN where none passes threshold
    or the detector gives no landmarks (the input geometry.landmark_nme expects)."""
    out = torch.full((len(detections), 5, 2), math.nan)
    for i, d in enumerate(detections):
        ok = d.probs >= threshold
        if d.landmarks is not None and ok.any():
            best = torch.where(ok, d.probs, -math.inf).argmax()
            out[i] = d.landmarks[best]
    return out


def mtcnn_detector(threshold: float = 0.0, *, upsample_below: int = 160, min_face_size: int = 20,
                   stage_thresholds: Sequence[float] = (0.6, 0.7, 0.7),
                   device: str | torch.device = "cpu") -> Detector:
    """facenet-pytorch MTCNN as a `Detector` that also returns 5 landmarks.

    threshold: boxes below this probability are dropped here (0 keeps all MTCNN emits).
    upsample_below: images whose shorter side is below this many pixels are upsampled
        (bilinear) so that the shorter side equals it before detecting; MTCNN's smallest
        face is `min_face_size` px and its first stage works on 12 px windows, so 64-128 px
        crops (DCGAN outputs, LFW thumbnails) are otherwise often missed. Boxes and landmarks
        are mapped back to the input's pixels.
    """
    from facenet_pytorch import MTCNN

    mtcnn = MTCNN(keep_all=True, min_face_size=min_face_size, thresholds=list(stage_thresholds),
                  device=device)

    def run(images: torch.Tensor) -> list[Detections]:
        images = images.detach().float()
        short = min(images.shape[-2:])
        scale = upsample_below / short if short < upsample_below else 1.0
        if scale != 1.0:
            size = (round(images.shape[-2] * scale), round(images.shape[-1] * scale))
            images = F.interpolate(images, size=size, mode="bilinear", align_corners=False)
        pixels = ((images.clamp(-1, 1) + 1) * 127.5).permute(0, 2, 3, 1).to(device)  # (N,H,W,3) 0..255
        boxes, probs, points = mtcnn.detect(pixels, landmarks=True)
        out = []
        for b, p, m in zip(boxes, probs, points, strict=True):
            d = as_detections((b, p, m))
            keep = d.probs >= threshold
            out.append(Detections(d.boxes[keep] / scale, d.probs[keep], d.landmarks[keep] / scale))
        return out

    return run
