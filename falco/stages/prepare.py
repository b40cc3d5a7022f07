"""Stage `prepare`: read, detect, align every original into the generator's frame.

Per item: read the photo (unusable files are skipped with the reason), find the largest face
with MTCNN (none -> skipped, reason "no_face"), warp the photo into the generator's frame at
the generator's resolution (an antialiased warp: faces smaller than the frame are upsampled,
larger ones filtered), and map the 5 landmarks into that frame. Network crops are later
derived from these aligned landmarks, once per original, and applied to every generated image.

Artefacts (in the stage's cache entry): `items.json` (one entry per item: id, status, reason,
identity, labels, detection probability, shard and row) and `shard_XXXXX.pt` tensors:
`aligned` uint8 (n,3,S,S), `landmarks` float32 (n,5,2) pixels in the aligned frame, and with
`keep_unaligned` (method.faithful_quirks) `unaligned` uint8 (n,3,S,S): the whole photo resized.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F

from ..align import box_landmarks, ffhq_theta, implausible_landmarks, map_points, theta_from_landmarks
from ..backbones.base import warp
from ..data.items import SkipImage, SourceItem
from ..detect import FaceDetector
from ..progress import Progress
from ..quirks import unaligned_target
from ..stopping import check as stop_point

SHARD = 1024  # items per tensor shard: bounds memory whatever the dataset size
DETECT_CHUNK = 32  # photos read and detected together (bounds memory; MTCNN batches equal sizes)


class Source(Protocol):
    name: str
    items: list[SourceItem]

    def read(self, item: SourceItem) -> np.ndarray: ...

    def fingerprint(self) -> dict: ...


def align_theta(landmarks: torch.Tensor, image_hw: tuple[int, int], alignment: str,
                template: torch.Tensor) -> torch.Tensor:
    if alignment == "ffhq":
        return ffhq_theta(landmarks, image_hw)
    return theta_from_landmarks(landmarks, image_hw, template)


def warp_antialiased(image: torch.Tensor, theta: torch.Tensor, size: int) -> torch.Tensor:
    """Warp (1,3,H,W) by theta to (1,3,size,size), supersampling when it shrinks the face."""
    scale = float(theta[0, :, :2].det().abs().sqrt()) * image.shape[-1] / size  # input px per output px
    k = max(1, min(8, math.ceil(scale - 0.25)))
    out = warp(image, theta, size * k)
    return F.avg_pool2d(out, k) if k > 1 else out


def align_one(photo: np.ndarray, det_landmarks: np.ndarray, alignment: str, template: torch.Tensor,
              size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 photo + landmarks -> aligned uint8 (3,S,S) and landmarks (5,2) in the aligned frame."""
    hw = photo.shape[:2]
    lm = torch.tensor(det_landmarks, dtype=torch.float32).unsqueeze(0)
    theta = align_theta(lm, hw, alignment, template)
    image = torch.from_numpy(np.ascontiguousarray(photo).copy()).permute(2, 0, 1).unsqueeze(0).float() / 127.5 - 1
    aligned = warp_antialiased(image, theta, size)
    aligned_u8 = ((aligned[0].clamp(-1, 1) + 1) * 127.5).round().byte()
    return aligned_u8, map_points(lm, theta, hw, size)[0]


ALIGNMENT_FAILURE = ("skip", "box")


def face_landmarks(det, policy: str) -> tuple[np.ndarray | None, dict]:
    """The landmarks to align with and what the entry records about it.

    Implausible landmarks (falco/align.py) are an alignment failure: `skip` skips the image
    (reason "alignment_failed"), `box` aligns it from the detector box instead. Either way the
    entry says how it was aligned ("landmarks" or "box") or why it was not.
    """
    why = implausible_landmarks(det.landmarks, det.box)
    if why is None:
        return det.landmarks, {"alignment": "landmarks"}
    if policy == "box":
        return box_landmarks(det.box).numpy(), {"alignment": "box", "alignment_note": why}
    return None, {"status": "skipped", "reason": "alignment_failed", "message": f"implausible landmarks: {why}"}


def run_prepare(source: Source, detector: FaceDetector, out: Path, *, alignment: str,
                template: torch.Tensor, size: int, keep_unaligned: bool = False,
                alignment_failure: str = "skip") -> None:
    if alignment_failure not in ALIGNMENT_FAILURE:
        raise ValueError(f"stages.alignment_failure must be one of {ALIGNMENT_FAILURE}, got {alignment_failure!r}")
    entries: list[dict] = []
    buf_img: list[torch.Tensor] = []
    buf_lm: list[torch.Tensor] = []
    buf_raw: list[torch.Tensor] = []
    shard = 0

    def flush() -> None:
        nonlocal shard, buf_img, buf_lm, buf_raw
        if buf_img:
            tensors = {"aligned": torch.stack(buf_img), "landmarks": torch.stack(buf_lm)}
            if keep_unaligned:
                tensors["unaligned"] = torch.stack(buf_raw)
            torch.save(tensors, out / f"shard_{shard:05d}.pt")
            shard, buf_img, buf_lm, buf_raw = shard + 1, [], [], []

    with Progress("prepare: detect + align", len(source.items)) as bar:
        for c in range(0, len(source.items), DETECT_CHUNK):
            stop_point()  # SIGTERM/SIGINT: the stage's temporary entry goes, nothing is cached
            chunk = source.items[c:c + DETECT_CHUNK]
            photos: dict[int, np.ndarray] = {}
            for j, item in enumerate(chunk):
                try:
                    photos[j] = source.read(item)
                except SkipImage as e:
                    photos[j] = e  # type: ignore[assignment]
            readable = [j for j in photos if not isinstance(photos[j], SkipImage)]
            dets = dict(zip(readable, detector.detect_batch([photos[j] for j in readable]), strict=True))
            for j, item in enumerate(chunk):
                entry = {"id": item.id, "identity": item.identity, "labels": item.labels,
                         "status": "ok", "reason": None}
                got = photos[j]
                if isinstance(got, SkipImage):
                    entries.append({**entry, "status": "skipped", "reason": got.reason, "message": got.message})
                elif dets[j] is None:
                    entries.append({**entry, "status": "skipped", "reason": "no_face",
                                    "message": f"MTCNN found no face with probability >= {detector.min_prob}"})
                else:
                    landmarks, how = face_landmarks(dets[j], alignment_failure)
                    entry = {**entry, "prob": dets[j].prob, **how}
                    if landmarks is None:
                        entries.append(entry)
                        continue
                    aligned, lm = align_one(got, landmarks, alignment, template, size)
                    entries.append({**entry, "shard": shard, "row": len(buf_img)})
                    buf_img.append(aligned)
                    buf_lm.append(lm)
                    if keep_unaligned:
                        buf_raw.append(unaligned_target(got, size))
                    if len(buf_img) == SHARD:
                        flush()
            bar.update(len(chunk))
    flush()
    (out / "items.json").write_text(json.dumps(entries, indent=0))


class Prepared:
    """Read access to a prepare entry: item table plus lazily loaded tensor shards."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.entries: list[dict] = json.loads((self.root / "items.json").read_text())
        self.ok = [e for e in self.entries if e["status"] == "ok"]
        self._shard: tuple[int, dict] | None = None

    def _load(self, shard: int) -> dict:
        if self._shard is None or self._shard[0] != shard:
            self._shard = (shard, torch.load(self.root / f"shard_{shard:05d}.pt", weights_only=True))
        return self._shard[1]

    def get(self, entry: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """(aligned float (3,S,S) in [-1,1], landmarks (5,2)) of an ok entry."""
        data = self._load(entry["shard"])
        return data["aligned"][entry["row"]].float() / 127.5 - 1, data["landmarks"][entry["row"]]

    def unaligned(self, entry: dict) -> torch.Tensor:
        """The whole photo resized, float (3,S,S) in [-1,1] (prepared with keep_unaligned)."""
        data = self._load(entry["shard"])
        if "unaligned" not in data:
            raise KeyError("this prepare entry was computed without keep_unaligned (method.faithful_quirks)")
        return data["unaligned"][entry["row"]].float() / 127.5 - 1
