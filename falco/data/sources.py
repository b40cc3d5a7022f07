"""Data sources the pipeline reads: a list of items and a way to read each as a photo.

Each source has `items` (SourceItem list), `read(item) -> uint8 HxWx3` (raises SkipImage
for unusable files) and `fingerprint()` (the input data's identity for stage cache keys).
The builders below are what the `data/` configs instantiate.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from ..backbones.base import Generator
from .folder import scan_folder
from .imageio import DEFAULT_MAX_PIXELS, DEFAULT_MIN_SIDE, read_rgb
from .items import SourceItem
from .synthetic import SyntheticSource


class FileSource:
    """Items that are files on disk (folder, CelebA-HQ, LFW)."""

    def __init__(self, name: str, items: list[SourceItem], *, max_pixels: int = DEFAULT_MAX_PIXELS,
                 min_side: int = DEFAULT_MIN_SIDE, pairs: list[tuple[str, str, bool]] | None = None) -> None:
        self.name = name
        self.items = items
        self.max_pixels = max_pixels
        self.min_side = min_side
        self.pairs = pairs  # verification pairs (item id A, item id B, same person?) or None

    def read(self, item: SourceItem) -> np.ndarray:
        assert item.path is not None
        return read_rgb(item.path, max_pixels=self.max_pixels, min_side=self.min_side)

    def fingerprint(self) -> dict:
        h = hashlib.sha256()
        for it in self.items:
            try:
                st = os.stat(it.path) if it.path is not None else None
            except OSError:
                st = None
            h.update(f"{it.id}\x1f{st.st_size if st else -1}\x1f{st.st_mtime_ns if st else -1}\n".encode())
            if it.labels:  # labels travel with the cached entries: new labels, new entries
                h.update(json.dumps(it.labels, sort_keys=True).encode())
        return {"source": self.name, "items": len(self.items), "files": h.hexdigest()[:20],
                "max_pixels": self.max_pixels, "min_side": self.min_side}


def synthetic(generator: Generator, check_faces: bool = True, check_min_prob: float = 0.95,
              **knobs) -> SyntheticSource:
    """check_faces: redraw identities whose face MTCNN does not find with check_min_prob."""
    accept = None
    if check_faces:
        from ..detect import FaceDetector

        detector = FaceDetector(min_prob=check_min_prob)

        def accept(face: np.ndarray) -> bool:
            return detector.detect(face) is not None

    return SyntheticSource(generator, accept=accept, **knobs)


def folder(generator: Generator, root: str, limit: int | None = None, max_pixels: int = DEFAULT_MAX_PIXELS,
           min_side: int = DEFAULT_MIN_SIDE, labels: str | None = None) -> FileSource:
    """Any folder of photos, recursively, with the labels of the `labels` CSV file; the generator
    is not used (same signature as synthetic)."""
    return FileSource("folder", scan_folder(root, limit=limit, labels=labels), max_pixels=max_pixels,
                      min_side=min_side)


def celebahq(generator: Generator, root: str, split: str = "all", limit: int | None = None,
             require_identity: bool = False, partition_file: str | None = None,
             identity_file: str | None = None, max_pixels: int = DEFAULT_MAX_PIXELS,
             min_side: int = DEFAULT_MIN_SIDE) -> FileSource:
    """CelebA-HQ in the CelebAMask-HQ layout, with the 40 attributes as labels."""
    from .celebahq import scan_celebahq

    items = scan_celebahq(root, split=split, limit=limit, require_identity=require_identity,
                          partition_file=partition_file, identity_file=identity_file)
    return FileSource(f"celebahq:{split}", items, max_pixels=max_pixels, min_side=min_side)


def lfw(generator: Generator, root: str, limit: int | None = None, max_pixels: int = DEFAULT_MAX_PIXELS,
        min_side: int = DEFAULT_MIN_SIDE, pairs_file: str | None = "pairs.txt") -> FileSource:
    """LFW people folders (identity = folder name) and, when present, its verification pairs."""
    from .lfw import read_pairs, scan_lfw

    pairs = None
    if pairs_file is not None and (Path(root) / pairs_file).is_file():
        pairs = read_pairs(Path(root) / pairs_file)
    return FileSource("lfw", scan_lfw(root, limit=limit), max_pixels=max_pixels, min_side=min_side, pairs=pairs)
