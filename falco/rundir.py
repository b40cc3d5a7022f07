"""The run directory: what may be shared (release/) and what may not (private/).

release/images/<pseudonym>.png   anonymized faces, random names, no metadata
release/labels.csv               the dataset's utility labels re-keyed to pseudonyms
release/pairs.csv                verification pairs (LFW) re-keyed to pseudonyms, identity-keeping runs only
private/records/xx/<h>.json      one record per original (written LAST: it means "done")
private/latents/xx/<h>.pt        optimized latents (they keep the original's inversion layers)
private/pending/xx/<h>.json      claim: "this id is getting this pseudonym" (only while writing)
private/mapping.csv              original id -> pseudonym
private/records.jsonl            all records, gathered at the end
private/order.key                the secret that orders the work (falco/release.py)
summary.json, config.yaml, versions.json

Pseudonyms are random (secrets), never a hash or a counter that follows the input order.

`RunReader` is the one reader of a run directory (the run's config, records, release images,
latents, and the aligned originals from the run's stage cache): the run's summary
(falco/summary.py), the evaluation (evaluation/run_eval.py) and the keyed metrics
(evaluation/keyed_metrics.py) all read through it. `RunDir` is the reader plus the writes.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from .data.imageio import atomic_torch_save, atomic_write_text, read_rgb, to_tensor
from .release import normalize_times, order_key, rebuild_images, settle_images, write_tar
from .stages.prepare import Prepared

IMAGE_EXTS = ("png", "jpg")  # release image formats: lossless PNG, JPEG (official output quirk)


def _slot(item_id: str) -> tuple[str, str]:
    h = hashlib.sha256(item_id.encode()).hexdigest()[:24]
    return h[:2], h


def new_pseudonym() -> str:
    return secrets.token_hex(8)


@dataclass
class RunImages:
    """A run's released faces beside the aligned originals they were optimized against: the ok
    records, sorted by id, row i of every tensor belonging to records[i]."""

    records: list[dict]
    originals: torch.Tensor  # (N,3,S,S) aligned originals in [-1,1]
    landmarks: torch.Tensor  # (N,5,2) float32, the originals' landmarks in the aligned frame
    anonymized: torch.Tensor  # (N,3,S,S) release images in [-1,1]

    @property
    def ids(self) -> list[str]:
        return [r["id"] for r in self.records]


class RunReader:
    """Read access to a run directory; it writes nothing (not even a missing folder)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.release = self.root / "release"
        self.private = self.root / "private"
        self.images = self.release / "images"

    def config(self) -> DictConfig:
        """The run's resolved config (config.yaml, as the run wrote it)."""
        path = self.root / "config.yaml"
        if not path.is_file():
            raise FileNotFoundError(f"{self.root}: no config.yaml (not a run directory?)")
        cfg = OmegaConf.load(path)
        assert isinstance(cfg, DictConfig)
        return cfg

    def record_path(self, item_id: str) -> Path:
        sub, h = _slot(item_id)
        return self.private / "records" / sub / f"{h}.json"

    def latent_path(self, item_id: str) -> Path:
        sub, h = _slot(item_id)
        return self.private / "latents" / sub / f"{h}.pt"

    def image_path(self, pseudonym: str, ext: str | None = None) -> Path:
        """The release image of a pseudonym: `<pseudonym>.<ext>` to write; without ext, the file
        that exists (PNG by default, JPEG under method.faithful_quirks)."""
        if ext is None:
            ext = next((e for e in IMAGE_EXTS if (self.images / f"{pseudonym}.{e}").exists()), "png")
        return self.images / f"{pseudonym}.{ext}"

    def records(self) -> list[dict]:
        """Every record written so far (one per finished original, ok or skipped), sorted by id."""
        out = []
        for p in sorted((self.private / "records").glob("*/*.json")):
            out.append(json.loads(p.read_text()))
        return sorted(out, key=lambda r: r["id"])

    def ok_records(self) -> list[dict]:
        """The records of the anonymized (released) originals, sorted by id."""
        return [r for r in self.records() if r["status"] == "ok"]

    def done_ids(self) -> set[str]:
        return {r["id"] for r in self.records()}

    def latent(self, item_id: str) -> torch.Tensor:
        """The optimized latent of an original (CPU)."""
        return torch.load(self.latent_path(item_id), map_location="cpu", weights_only=True)

    def anonymized(self, records: list[dict]) -> torch.Tensor:
        """(N,3,S,S) the release images of these records, in [-1,1], in their order."""
        return torch.stack([to_tensor(read_rgb(self.image_path(r["pseudonym"])))[0] for r in records])

    def prepared(self, records: list[dict], cache_dir: str | Path | None = None) -> Prepared:
        """The run's prepare stage in the cache (the aligned originals): under `cache_dir`,
        default the run's own cache_dir (config.yaml)."""
        if not records:
            raise ValueError(f"{self.root}: no record names the run's prepare stage")
        cache = Path(cache_dir if cache_dir is not None else self.config().cache_dir)
        root = cache / "prepare" / records[0]["stage_keys"]["prepare"]
        if not (root / "items.json").is_file():
            raise FileNotFoundError(f"the run's prepare stage is not in the cache at {root}; pass "
                                    "cache_dir=<the run's cache_dir> (originals are read from there)")
        return Prepared(root)

    def originals(self, records: list[dict], prepared: Prepared) -> tuple[torch.Tensor, torch.Tensor]:
        """((N,3,S,S) aligned originals in [-1,1], (N,5,2) float32 landmarks) of these records."""
        by_id = {e["id"]: e for e in prepared.ok}
        images, landmarks = zip(*(prepared.get(by_id[r["id"]]) for r in records), strict=True)
        return torch.stack(images), torch.stack(landmarks).float()

    def read_images(self, cache_dir: str | Path | None = None) -> RunImages:
        """Every released face of the run beside its original (see RunImages)."""
        ok = self.ok_records()
        if not ok:
            raise RuntimeError(f"{self.root}: no anonymized image ({len(self.records())} records, none ok)")
        x, lm = self.originals(ok, self.prepared(ok, cache_dir))
        return RunImages(ok, x, lm, self.anonymized(ok))


class RunDir(RunReader):
    """The run directory a job writes (creating its folders); reading is RunReader's."""

    def __init__(self, root: str | Path) -> None:
        super().__init__(root)
        settle_images(self.images, self.private)  # before mkdir: a kill may have left images/ mid-swap
        for d in (self.images, self.private / "records", self.private / "latents"):
            d.mkdir(parents=True, exist_ok=True)

    def write_latent(self, item_id: str, latent: torch.Tensor) -> None:
        atomic_torch_save(latent.detach().cpu().clone(), self.latent_path(item_id))

    def pending_path(self, item_id: str) -> Path:
        sub, h = _slot(item_id)
        return self.private / "pending" / sub / f"{h}.json"

    def claim(self, item_id: str, pseudonym: str) -> None:
        """Write-ahead note, before an image is written under a fresh random pseudonym.

        The pseudonym is random, so without this a kill between the image and the record
        would leave a release image that nothing names: an un-recorded output. `recover`
        reads the claims to delete exactly those.
        """
        atomic_write_text(self.pending_path(item_id), json.dumps({"id": item_id, "pseudonym": pseudonym}))

    def unclaim(self, item_id: str) -> None:
        self.pending_path(item_id).unlink(missing_ok=True)

    def recover(self, ids: set[str]) -> int:
        """Undo the writes a kill interrupted, for these ids only; returns how many were undone.

        An id with a claim and no record was cut off mid-write: its image and latent go. An id
        with a record is done (the kill came after the record): only the claim goes. Scoped to
        the ids a job owns, so concurrent array jobs on one run directory never touch each
        other's in-flight writes; call it before any of the job's processes writes.
        """
        undone = 0
        for p in sorted((self.private / "pending").glob("*/*.json")):
            claim = json.loads(p.read_text())
            if claim["id"] not in ids:
                continue
            if not self.record_path(claim["id"]).is_file():
                images = [self.image_path(claim["pseudonym"], e) for e in IMAGE_EXTS]
                for out in (*images, self.latent_path(claim["id"])):
                    out.unlink(missing_ok=True)
                    for temp in out.parent.glob(f".{out.name}.*.tmp"):  # killed inside an atomic write
                        temp.unlink(missing_ok=True)
                undone += 1
            p.unlink()
        return undone

    def write_record(self, record: dict) -> None:
        """Atomic; call after the image and the latent are written."""
        atomic_write_text(self.record_path(record["id"]), json.dumps(record, sort_keys=True))

    def order_key(self) -> bytes:
        """The secret every process of this run directory orders its work by (falco/release.py)."""
        return order_key(self.private)

    def finalize(self, pairs: list[tuple[str, str, bool]] | None = None, *, rebuild: bool = True) -> list[dict]:
        """Gather records into records.jsonl, mapping.csv and release/labels.csv; with `pairs`
        (item id A, item id B, same person?), also release/pairs.csv re-keyed to pseudonyms,
        keeping the pairs whose two images are both released. With `rebuild` (only when no other
        process writes into images/), images/ is re-created in pseudonym order. `seal` comes last."""
        records = self.records()
        atomic_write_text(self.private / "records.jsonl", "".join(json.dumps(r, sort_keys=True) + "\n"
                                                                   for r in records))
        ok = [r for r in records if r["status"] == "ok"]
        atomic_write_text(self.private / "mapping.csv", _csv(["id", "pseudonym"],
                                                              [[r["id"], r["pseudonym"]] for r in ok]))
        names = sorted({k for r in ok for k in r.get("labels", {})})
        rows = sorted([[r["pseudonym"]] + [r["labels"].get(k, "") for k in names] for r in ok])
        atomic_write_text(self.release / "labels.csv", _csv(["pseudonym", *names], rows))
        if pairs is not None:
            name = {r["id"]: r["pseudonym"] for r in ok}
            # The source orders its pairs (LFW: by fold, matched ones first) and the two images of
            # each (LFW: the lower image number, the earlier name first): both would tie pseudonyms
            # to originals. So each row holds its two (random) pseudonyms in sorted order, and the
            # rows are sorted; a pair is unordered, so nothing of its meaning is lost.
            kept = sorted([*sorted((name[a], name[b])), int(same)] for a, b, same in pairs
                          if a in name and b in name)
            atomic_write_text(self.release / "pairs.csv", _csv(["pseudonym_a", "pseudonym_b", "same"], kept))
        if rebuild:
            rebuild_images(self.images, self.private)
        return records

    def seal(self, tar: bool = False) -> None:
        """One mtime and atime (now, in whole seconds) for all of release/; with `tar`, first
        <run_dir>/release.tar. Call it after the last read of release/ (the summary): a read
        sets an atime, and reads by id would leave the input order there."""
        when = int(time.time())
        if tar:
            write_tar(self.release, self.root / "release.tar", when)
        normalize_times(self.release, when)


def _csv(header: list[str], rows: list[list]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue()
