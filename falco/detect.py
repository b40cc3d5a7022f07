"""Face detection and 5 landmarks with facenet-pytorch's MTCNN (weights ship in the package).

Landmarks: left eye, right eye, nose, left mouth corner, right mouth corner, in pixels.
Small images are upscaled before detection (MTCNN's smallest face is ~20 px and 64 px DCGAN
faces are found reliably at 160 px); coordinates are mapped back to the input image.

The one MTCNN wrapper of the project: the stages align with it, and the run's summary and the
evaluation (evaluate.py) count detected outputs with it and `detection_rate`, so the two report
the same rate for the same images and probability threshold. A detector here is anything with
`detect_tensor(images) -> [Detection | None]` (also YuNet, falco/backbones/yunet.py).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image


@dataclass
class Detection:
    box: np.ndarray  # (4,) x0, y0, x1, y1 in pixels
    prob: float
    landmarks: np.ndarray  # (5, 2) in pixels


class FaceDetector:
    def __init__(self, min_prob: float = 0.9, min_side: int = 160, device: str = "cpu") -> None:
        from facenet_pytorch import MTCNN  # imported here: it loads its weights on construction

        self.mtcnn = MTCNN(keep_all=True, device=device)
        self.min_prob = min_prob  # faces below this MTCNN probability are ignored
        self.min_side = min_side  # images whose short side is below this are upscaled first

    @property
    def device(self) -> torch.device:
        return torch.device(self.mtcnn.device)

    def to(self, device: str | torch.device) -> FaceDetector:
        """Run MTCNN's networks on `device` (it copies each image there; detections come back as numpy)."""
        self.mtcnn.device = torch.device(device)
        self.mtcnn.to(self.mtcnn.device)
        return self

    def detect(self, image: np.ndarray) -> Detection | None:
        """Largest face of a uint8 HxWx3 RGB image, or None."""
        return self.detect_batch([image])[0]

    def detect_batch(self, images: list[np.ndarray]) -> list[Detection | None]:
        """Largest face of each image; images of equal size go through MTCNN together."""
        out: list[Detection | None] = [None] * len(images)
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, im in enumerate(images):
            groups.setdefault(im.shape, []).append(i)
        for shape, idx in groups.items():
            h, w = shape[:2]
            scale = max(1.0, self.min_side / min(h, w))
            pils = [Image.fromarray(images[i]) for i in idx]
            if scale > 1:
                pils = [p.resize((round(w * scale), round(h * scale)), Image.BICUBIC) for p in pils]
            # oneDNN (CPU) caches a compiled kernel per input shape, up to 1024 of them; MTCNN's
            # second and third networks see a new number of candidate boxes on almost every call,
            # so over a dataset that cache grows by hundreds of MB (measured: +300 MB over 384
            # photos). Plain CPU kernels keep memory flat for ~1.5x the detection time; no-op on GPU.
            with torch.no_grad(), torch.backends.mkldnn.flags(enabled=False):
                boxes, probs, points = self.mtcnn.detect(pils, landmarks=True)
            for i, b, p, m in zip(idx, boxes, probs, points, strict=True):
                out[i] = self._largest(b, p, m, scale)
        return out

    def _largest(self, boxes, probs, points, scale: float) -> Detection | None:
        if boxes is None:
            return None
        boxes = np.asarray(boxes, dtype=np.float64) / scale
        probs = np.asarray(probs, dtype=np.float64)
        points = np.asarray(points, dtype=np.float64) / scale
        keep = np.flatnonzero(probs >= self.min_prob)
        if keep.size == 0:
            return None
        areas = (boxes[keep, 2] - boxes[keep, 0]) * (boxes[keep, 3] - boxes[keep, 1])
        i = keep[int(np.argmax(areas))]
        return Detection(boxes[i], float(probs[i]), points[i])

    def detect_tensor(self, images: torch.Tensor, chunk: int = 64) -> list[Detection | None]:
        """Detections for a batch in the pipeline's convention (N,3,H,W in [-1,1])."""
        arr = ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()
        out: list[Detection | None] = []
        for s in range(0, len(arr), chunk):
            out += self.detect_batch(list(arr[s:s + chunk]))
        return out


def detection_rate(detections: Sequence[Detection | None], min_prob: float | None = None) -> dict:
    """Share of images in which a face was found ({"rate", "n_images", "n_detected", "min_prob"});
    rate NaN without images. `min_prob`: the detector's threshold, recorded with the figure."""
    n, hits = len(detections), sum(d is not None for d in detections)
    return {"rate": hits / n if n else math.nan, "n_images": n, "n_detected": hits, "min_prob": min_prob}


def detected_landmarks(detections: Sequence[Detection | None]) -> torch.Tensor:
    """(N,5,2) float32 landmarks of each detected face, NaN where none was found."""
    out = torch.full((len(detections), 5, 2), math.nan)
    for i, d in enumerate(detections):
        if d is not None:
            out[i] = torch.as_tensor(d.landmarks, dtype=torch.float32)
    return out
