"""Scale tests: resume after kill -9, batch size, DDP, shards, unusual inputs.

Every test works on one small dataset (BASE: 6 synthetic faces, fp32, few steps) and compares
against one uninterrupted single-process run of it (`reference`), computed once per session.
"Same result" means: the same ids with the same status and reason, the same non-numeric record
fields, numbers within a relative 1e-5 (batching changes the floating-point reduction order,
nothing else), latents within a relative 1e-5, images within one grey level.

Why 2 optimization steps: batched CPU kernels (oneDNN convolutions, gemm) round differently
for different batch sizes (~1e-7 relative per network pass), and the optimization amplifies
that noise by roughly 3-5x per step for some faces (measured on these networks: 2e-6 after 2
steps, 1e-5 after 4, 6e-4 after 6). A 1e-5 bound on the latents is therefore meaningful for a
couple of steps only; any real coupling between images, or an image paired with another's
inputs, shows up at 1e-2 and above from the first step.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from tests.conftest import FAST, ROOT, compose_train

# batch-invariant: the strongest claim (each image as if alone), which these tests hold it to
BASE = [*FAST, "data.identities=6", "method.steps=2", "trainer.precision=32-true", "method.batch_invariant=true",
        "summary=false"]
# Record fields that legitimately differ between two runs of the same images.
VOLATILE = {"seconds", "pseudonym", "rank"}


def scale_cache(tmp_path_factory) -> Path:
    """The session's stage cache for BASE (every scale test reuses its stages)."""
    return tmp_path_factory.getbasetemp() / "scale_cache"


def reference(tmp_path_factory) -> Path:
    """The uninterrupted single-process run of BASE (batch_size 4), made once per session."""
    out = tmp_path_factory.getbasetemp() / "scale_reference"
    if not (out / "private" / "records.jsonl").is_file():
        from train import run

        run(compose_train([*BASE, f"cache_dir={scale_cache(tmp_path_factory)}"]), str(out))
    return out


def train_cli(*overrides: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """`python train.py overrides...` from the project root, as a user runs it."""
    return subprocess.run([sys.executable, "train.py", *overrides], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


def records(run_dir: Path) -> dict[str, dict]:
    """The per-image records on disk, by id (also mid-run, before records.jsonl exists)."""
    return {r["id"]: r for r in (json.loads(p.read_text())
                                 for p in (run_dir / "private" / "records").glob("*/*.json"))}


def assert_each_image_once(run_dir: Path) -> dict[str, dict]:
    """Every ok record has its image and latent; release/ holds nothing else; no claim is left."""
    recs = records(run_dir)
    ok = [r for r in recs.values() if r["status"] == "ok"]
    pseudonyms = [r["pseudonym"] for r in ok]
    assert len(set(pseudonyms)) == len(pseudonyms), "two records share a pseudonym"
    released = sorted(p.relative_to(run_dir / "release").as_posix()
                      for p in (run_dir / "release").rglob("*") if p.is_file())
    expected = sorted([f"images/{s}.png" for s in pseudonyms] + ["labels.csv"])
    assert released == expected, "release/ holds an image no record names (or lacks one)"
    latents = list((run_dir / "private" / "latents").rglob("*.pt"))
    assert len(latents) == len(ok)
    assert not list((run_dir / "private").glob("pending/*/*")), "an unfinished write was left"
    lines = (run_dir / "private" / "records.jsonl").read_text().splitlines()
    assert sorted(json.loads(line)["id"] for line in lines) == sorted(recs)
    return recs


def _close(a, b, rel: float, path: str) -> None:
    if isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), f"{path}: {a} vs {b}"
        for k in a:
            _close(a[k], b[k], rel, f"{path}.{k}")
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _close(x, y, rel, f"{path}[{i}]")
    elif isinstance(a, float) and rel:
        # records round to 6 decimals: allow one unit of the last digit besides the tolerance
        assert math.isclose(a, b, rel_tol=rel, abs_tol=2e-6), f"{path}: {a} vs {b}"
    else:
        assert a == b, f"{path}: {a!r} vs {b!r}"


def _latent(run_dir: Path, item_id: str) -> torch.Tensor:
    from falco.rundir import RunDir

    return torch.load(RunDir(run_dir).latent_path(item_id), weights_only=True)


def _image(run_dir: Path, pseudonym: str) -> np.ndarray:
    return np.asarray(Image.open(run_dir / "release" / "images" / f"{pseudonym}.png"), dtype=np.int16)


# Two runs of the same images on one machine, same thread count. BASE runs in 32-true, where each
# image is optimized as if alone (method.batch_invariant): bit for bit on an AMD EPYC (AVX512-BF16),
# but on an Intel Xeon with AMX the latents of two such runs differ by up to ~4e-8 (relative), and
# a record's 6-decimal losses by one unit in the last place: the CPU kernels' rounding depends on
# more than the batch there (memory alignment, kernel choice). A wrong result (another start,
# another target, a lost or repeated step) differs by far more than this.
SAME_MACHINE_REL = 1e-5


def assert_same_results(run_dir: Path, ref_dir: Path, rel: float = SAME_MACHINE_REL) -> None:
    """Records equal up to VOLATILE fields and numbers within `rel`; latents within `rel`, images
    within 1 grey level (rel 0: bit for bit)."""
    got, want = records(run_dir), records(ref_dir)
    assert sorted(got) == sorted(want)
    for item_id, r in want.items():
        g = got[item_id]
        _close({k: v for k, v in g.items() if k not in VOLATILE},
               {k: v for k, v in r.items() if k not in VOLATILE}, rel, item_id)
        if r["status"] != "ok":
            continue
        a, b = _latent(run_dir, item_id), _latent(ref_dir, item_id)
        err = float((a - b).abs().max() / b.abs().max())
        assert err <= rel, f"{item_id}: latent differs by {err:.2e} (relative)"
        diff = np.abs(_image(run_dir, g["pseudonym"]) - _image(ref_dir, r["pseudonym"])).max()
        assert diff <= (1 if rel else 0), f"{item_id}: image differs by {diff} grey levels"
