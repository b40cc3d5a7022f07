"""Stage cache: artefacts stored under a key of everything they depend on.

key = sha256 of {stage name, the stage's resolved sub-config, the code version (a hash of the
library's source), the weight files' content hashes, the input data's identity}. The cache
root lives outside the run directory, so every job of a sweep that changes only, say, the
margin reuses prepare / fake pool / pairing. Entries are written atomically (temp directory
then rename), so a crash never leaves a half-written entry that a later run would trust.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch

PACKAGE_ROOT = Path(__file__).resolve().parents[1]


@lru_cache(maxsize=1)
def code_version() -> str:
    """Hash of the library's Python source: any code change invalidates cached stages."""
    h = hashlib.sha256()
    for p in sorted(PACKAGE_ROOT.rglob("*.py")):
        h.update(p.relative_to(PACKAGE_ROOT).as_posix().encode())
        h.update(p.read_bytes())
    return h.hexdigest()[:16]


@lru_cache(maxsize=64)
def _file_hash(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def file_hash(path: str | os.PathLike) -> str:
    """Content hash of a weight file (memoized per path, size and modification time)."""
    st = os.stat(path)
    return _file_hash(str(Path(path).resolve()), st.st_size, st.st_mtime_ns)


def module_fingerprint(module: torch.nn.Module, *, all_buffers: bool = False) -> str:
    """Hash of a network's weights, for networks built in memory rather than read from a file.

    all_buffers: also hash the non-persistent buffers, which a loader may fill from its
    checkpoint (e4e's latent_avg) although they are not in the state dict."""
    h = hashlib.sha256()
    tensors = dict(module.state_dict())
    if all_buffers:
        tensors.update((f"buffer:{name}", b) for name, b in module.named_buffers() if name not in tensors)
    for name, t in tensors.items():
        h.update(name.encode())
        h.update(t.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def stage_key(stage: str, spec: dict[str, Any]) -> str:
    blob = json.dumps({"stage": stage, "code": code_version(), "spec": spec}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


class StageCache:
    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root).expanduser()

    def entry(self, stage: str, key: str) -> Path:
        return self.root / stage / key

    def get_or_compute(self, stage: str, spec: dict[str, Any],
                       compute: Callable[[Path], None]) -> tuple[Path, str, bool]:
        """Directory of the stage's artefacts; `compute(tmpdir)` fills it when absent.

        Returns (entry directory, key, whether it was reused).
        """
        key = stage_key(stage, spec)
        final = self.entry(stage, key)
        if (final / "spec.json").is_file():
            return final, key, True
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=final.parent))
        try:
            compute(tmp)
            (tmp / "spec.json").write_text(json.dumps(spec, indent=1, sort_keys=True, default=str))
            try:
                os.replace(tmp, final)
            except OSError:  # another job of the sweep finished the same entry first
                if not (final / "spec.json").is_file():
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return final, key, False
