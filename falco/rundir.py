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
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import secrets
import time
from pathlib import Path

import torch

from .data.imageio import atomic_torch_save, atomic_write_text
from .release import normalize_times, order_key, rebuild_images, settle_images, write_tar

IMAGE_EXTS = ("png", "jpg")  # release image formats: lossless PNG, JPEG (official output quirk)


def _slot(item_id: str) -> tuple[str, str]:
    h = hashlib.sha256(item_id.encode()).hexdigest()[:24]
    return h[:2], h


def new_pseudonym() -> str:
    return secrets.token_hex(8)


class RunDir:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.release = self.root / "release"
        self.private = self.root / "private"
        self.images = self.release / "images"
        settle_images(self.images, self.private)  # before mkdir: a kill may have left images/ mid-swap
        for d in (self.images, self.private / "records", self.private / "latents"):
            d.mkdir(parents=True, exist_ok=True)

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

    def records(self) -> list[dict]:
        out = []
        for p in sorted((self.private / "records").glob("*/*.json")):
            out.append(json.loads(p.read_text()))
        return sorted(out, key=lambda r: r["id"])

    def done_ids(self) -> set[str]:
        return {r["id"] for r in self.records()}

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
