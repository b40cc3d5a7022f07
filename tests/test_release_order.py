"""A release leaks nothing through its order. 64 images go through the real writer, finalize and
seal in the order run_job gives them (`secret_order` under the run's key); then every order an
attacker holding release/ (or release.tar) can observe is compared with the input order (the
sorted original names) by Spearman's rank correlation: mtimes, ctimes, inode numbers, the
directory listing, labels.csv and pairs.csv rows, tar members. A small real run checks that
run_job works in exactly that order and seals the release.

For 64 items a random order's |rho| exceeds 0.3 about 2% of the time; the entropy (order key,
pseudonyms) is drawn from a seeded generator so the figures are reproducible, while every order
is still made by the real code. A broken feature gives |rho| = 1 (input order).
"""

from __future__ import annotations

import csv
import os
import random
import shutil
import stat
import tarfile
import threading
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

import falco.release
from falco.data.imageio import write_png_clean
from falco.release import secret_order
from falco.rundir import RunDir
from falco.writer import RecordWriter
from tests.conftest import FAST, compose_train

N = 64
MAX_RHO = 0.3


def rho(observed: list[str], position: dict[str, int]) -> float:
    """Spearman's rho between an observed order of ids and their input positions."""
    return float(spearmanr(range(len(observed)), [position[i] for i in observed])[0])


def seeded_entropy(monkeypatch: pytest.MonkeyPatch, seed: int) -> None:
    """secrets.token_bytes / token_hex (order key, pseudonyms) from a seeded generator."""
    rng = random.Random(seed)
    monkeypatch.setattr(falco.release.secrets, "token_bytes", lambda n=32: rng.randbytes(n))
    monkeypatch.setattr(falco.release.secrets, "token_hex", lambda n=32: rng.randbytes(n).hex())


def _csv(path: Path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


def _names(run_dir: Path) -> dict[str, str]:
    """pseudonym -> original id (private/mapping.csv)."""
    return {r["pseudonym"]: r["id"] for r in _csv(run_dir / "private" / "mapping.csv")}


def _stats(run_dir: Path) -> dict[Path, os.stat_result]:
    """os.stat of every release path, found by name: listing a directory would set its atime."""
    release = run_dir / "release"
    paths = [release, release / "images", *(release / n for n in ("labels.csv", "pairs.csv") if (release / n).exists()),
             *(release / "images" / f"{p}.png" for p in _names(run_dir))]
    return {p: os.stat(p) for p in paths}


def _prediction(ks: list[int]) -> dict:
    """What the module returns for a batch of items `ks` (images, latents, losses, distances)."""
    b = len(ks)
    return {"index": torch.tensor(ks), "images": torch.rand(b, 3, 8, 8) * 2 - 1, "latents": torch.zeros(b, 4),
            "history": torch.zeros(2, b, 3), "distance_first": torch.zeros(b), "distance_final": torch.ones(b),
            "seconds_per_image": 0.1}


@pytest.fixture(scope="module")
def released(tmp_path_factory):
    """64 images written in run_job's order, finalized with an input-ordered pair list, sealed
    with release.tar: (run dir, ids in writing order, input position of each id, os.stat of
    each release path right after sealing)."""
    root = tmp_path_factory.mktemp("release_order") / "run"
    ids = [f"person_{k // 2:03d}/img_{k:03d}.jpg" for k in range(N)]  # input order = sorted names
    entries = [{"id": i, "labels": {"smiling": k % 2}} for k, i in enumerate(ids)]
    # a pair list in input order, the earlier image first (like LFW's pairs.txt)
    pairs = [(ids[k], ids[k + 1], k % 2 == 0) for k in range(N - 1)]
    with pytest.MonkeyPatch.context() as mp:
        seeded_entropy(mp, 7)
        run = RunDir(root)
        todo = secret_order(ids, run.order_key())  # what run_job does with the work left
        writer = RecordWriter(run, entries, {"method": "keyed", "stage_keys": {}, "judge": "test",
                                             "pairs": [0] * N, "pair_sims": [0.0] * N})
        for b in range(0, N, 4):
            writer.write_on_batch_end(SimpleNamespace(global_rank=0), None, _prediction(todo[b:b + 4]), None, None, b)
        run.finalize(pairs=pairs)
        run.seal(tar=True)
    return root, [ids[k] for k in todo], {item_id: k for k, item_id in enumerate(ids)}, _stats(root), pairs


def test_work_is_done_in_a_secret_order(released):
    _, written, position, _, _ = released
    assert abs(rho(written, position)) <= MAX_RHO


def test_files_carry_no_order(released):
    run_dir, _, position, stats, _ = released
    name = _names(run_dir)
    images = run_dir / "release" / "images"
    assert sorted(stats) == sorted([run_dir / "release", *(run_dir / "release").rglob("*")])
    assert len({(s.st_mtime_ns, s.st_atime_ns) for s in stats.values()}) == 1  # one timestamp, atime too
    listing = os.listdir(images)
    assert sorted(listing) == sorted(f"{p}.png" for p in name) and len(listing) == N
    info = {f: stats[images / f] for f in listing}

    def ids(order):
        return [name[f.removesuffix(".png")] for f in order]

    orders = {"listing": listing,
              "mtime, ctime, inode": sorted(listing, key=lambda f: (info[f].st_mtime_ns, info[f].st_ctime_ns,
                                                                    info[f].st_ino)),
              "ctime": sorted(listing, key=lambda f: info[f].st_ctime_ns),
              "inode": sorted(listing, key=lambda f: info[f].st_ino)}
    for what, order in orders.items():
        assert abs(rho(ids(order), position)) <= MAX_RHO, what
    assert not list((run_dir / "private").glob("images.*"))  # the rebuild's work directories are gone


def test_labels_rows_carry_no_order(released):
    run_dir, _, position, _, _ = released
    name = _names(run_dir)
    rows = [r["pseudonym"] for r in _csv(run_dir / "release" / "labels.csv")]
    assert rows == sorted(rows) and len(rows) == N
    assert abs(rho([name[p] for p in rows], position)) <= MAX_RHO


def test_pairs_rows_and_sides_carry_no_order(released):
    run_dir, _, position, _, pairs = released
    name = _names(run_dir)
    rows = _csv(run_dir / "release" / "pairs.csv")
    assert len(rows) == len(pairs)
    released_pairs = {(frozenset((name[r["pseudonym_a"]], name[r["pseudonym_b"]])), r["same"] == "1") for r in rows}
    assert released_pairs == {(frozenset((a, b)), same) for a, b, same in pairs}  # the same pairs, same meaning
    order = {frozenset(p[:2]): k for k, p in enumerate(pairs)}
    row_order = [order[frozenset((name[r["pseudonym_a"]], name[r["pseudonym_b"]]))] for r in rows]
    assert abs(float(spearmanr(range(len(rows)), row_order)[0])) <= MAX_RHO
    earlier_first = np.mean([position[name[r["pseudonym_a"]]] < position[name[r["pseudonym_b"]]] for r in rows])
    assert 0.3 <= earlier_first <= 0.7  # which image is "a" no longer follows the input (it was always the earlier)


def test_tar_members_sorted_with_fixed_metadata(released):
    run_dir, _, position, _, _ = released
    name = _names(run_dir)
    with tarfile.open(run_dir / "release.tar") as tar:
        members = tar.getmembers()
        assert [m.name for m in members] == sorted(m.name for m in members)
        assert [m.name for m in members if not m.name.startswith("release/images/")] == [
            "release", "release/images", "release/labels.csv", "release/pairs.csv"]
        when = os.stat(run_dir / "release" / "labels.csv").st_mtime
        for m in members:
            assert (m.mtime, m.uid, m.gid, m.uname, m.gname) == (when, 0, 0, "", "")
            assert m.mode == (0o755 if m.isdir() else 0o644) and not m.pax_headers
            if m.isfile():
                assert tar.extractfile(m).read() == (run_dir / m.name).read_bytes()
        images = [m.name.split("/")[-1].removesuffix(".png") for m in members if m.name.startswith("release/images/")]
    assert len(images) == N
    assert abs(rho([name[p] for p in images], position)) <= MAX_RHO


def test_run_job_works_in_the_secret_order_and_seals_the_release(tmp_path, monkeypatch):
    from train import run

    written: list[str] = []
    real_write = RunDir.write_record

    def noting_order(self, record):
        if record["status"] == "ok":
            written.append(record["id"])
        real_write(self, record)

    seeded_entropy(monkeypatch, 3)
    monkeypatch.setattr(RunDir, "write_record", noting_order)
    out = tmp_path / "run"
    run(compose_train([*FAST, f"cache_dir={tmp_path / 'cache'}", "data.identities=6", "stages.pool_size=64",
                       "method.steps=1", "trainer.precision=32-true", "summary=false", "release_tar=true"]), str(out))
    ids = sorted(written)
    assert len(ids) >= 5 and written != ids  # (seeded: not the input order by chance)
    assert written == [ids[i] for i in secret_order(ids, (out / "private" / "order.key").read_bytes())]
    stats = _stats(out)
    assert len(stats) == len(ids) + 3 and len({(s.st_mtime_ns, s.st_atime_ns) for s in stats.values()}) == 1
    with tarfile.open(out / "release.tar") as tar:
        names = tar.getnames()
    assert names == sorted(names) and len(names) == len(ids) + 3


def test_order_key_one_per_run_dir_shared_by_all_its_processes(tmp_path):
    ids = [f"img_{k:03d}.jpg" for k in range(N)]
    start = threading.Barrier(8)
    keys: list[bytes] = []

    def rank():  # ranks started at once (SLURM): exactly one key is made, all read it
        run = RunDir(tmp_path / "run")
        start.wait()
        keys.append(run.order_key())

    threads = [threading.Thread(target=rank) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(keys) == 8 and len(set(keys)) == 1 and len(keys[0]) == 32
    key_file = tmp_path / "run" / "private" / "order.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert [p.name for p in key_file.parent.iterdir() if p.is_file()] == ["order.key"]  # no temp file left
    later = RunDir(tmp_path / "run")  # a rank re-started by the launcher, a resume, a shard
    assert secret_order(ids, later.order_key()) == secret_order(ids, keys[0])
    other = RunDir(tmp_path / "other").order_key()  # another run: another, unrelated order
    assert other != keys[0] and secret_order(ids, other) != secret_order(ids, keys[0])
    assert sorted(secret_order(ids, other)) == list(range(N))  # a permutation: none missed, none twice
    # a resume orders what is left like the whole: the order of each id depends on it alone
    rest = ids[::3]
    assert [rest[i] for i in secret_order(rest, other)] == [ids[i] for i in secret_order(ids, other) if ids[i] in rest]


def _released_in_input_order(root: Path, monkeypatch, count: int = N) -> tuple[RunDir, dict[str, int]]:
    """A run directory whose images were written in input order (what the writer did before)."""
    seeded_entropy(monkeypatch, 11)
    run = RunDir(root)
    image = np.zeros((4, 4, 3), np.uint8)
    position = {}
    for k in range(count):
        pseudonym = falco.release.secrets.token_hex(8)
        write_png_clean(run.image_path(pseudonym), image + k)
        run.write_record({"id": f"img_{k:03d}.jpg", "pseudonym": pseudonym, "status": "ok", "labels": {}})
        position[f"{pseudonym}.png"] = k
    return run, position


def test_listing_in_creation_order_is_rebuilt(monkeypatch):
    """tmpfs lists a directory in (reverse) creation order; the rebuild leaves it in pseudonym order."""
    shm = Path("/dev/shm")
    if not (shm.is_dir() and os.access(shm, os.W_OK)):
        pytest.skip("no /dev/shm here")
    root = Path(os.path.realpath(shm)) / f"falco_release_order_{os.getpid()}"
    try:
        run, position = _released_in_input_order(root, monkeypatch)
        before = os.listdir(run.images)
        if abs(rho(before, position)) < 0.99:
            pytest.skip("this /dev/shm does not list files in creation order")
        run.finalize()
        after = os.listdir(run.images)
        assert sorted(after) == sorted(before) and abs(rho(after, position)) <= MAX_RHO
    finally:
        shutil.rmtree(root, ignore_errors=True)


class _Kill(BaseException):
    """A kill -9 at this point (BaseException: nothing on the way catches it)."""


def test_kill_between_the_swap_renames_loses_nothing(tmp_path, monkeypatch):
    run, position = _released_in_input_order(tmp_path / "run", monkeypatch, count=8)
    contents = {f: (run.images / f).read_bytes() for f in position}
    real_rename, calls = os.rename, []

    def killed_at_second(src, dst):
        calls.append(src)
        if len(calls) == 2:  # images/ is now private/images.old, images.new not yet in place
            raise _Kill
        real_rename(src, dst)

    monkeypatch.setattr(falco.release.os, "rename", killed_at_second)
    with pytest.raises(_Kill):
        run.finalize()
    monkeypatch.setattr(falco.release.os, "rename", real_rename)
    assert not run.images.exists()
    late = run.private / "images.old" / "late.png"  # written into images/ after the copy was taken
    late.write_bytes(b"late")
    again = RunDir(run.root)  # the next run's start settles it
    assert {f: (again.images / f).read_bytes() for f in position} == contents
    assert (again.images / "late.png").read_bytes() == b"late"
    assert not list(run.private.glob("images.*"))


def test_kill_during_the_copy_keeps_images_whole(tmp_path, monkeypatch):
    run, position = _released_in_input_order(tmp_path / "run", monkeypatch, count=8)
    real_copy, copied = shutil.copyfile, []

    def killed_at_fourth(src, dst):
        copied.append(src)
        if len(copied) == 4:
            raise _Kill
        return real_copy(src, dst)

    monkeypatch.setattr(falco.release.shutil, "copyfile", killed_at_fourth)
    with pytest.raises(_Kill):
        run.finalize()
    monkeypatch.setattr(falco.release.shutil, "copyfile", real_copy)
    assert (run.private / "images.new").is_dir()
    again = RunDir(run.root)
    assert sorted(os.listdir(again.images)) == sorted(position) and not list(run.private.glob("images.*"))
    again.finalize()  # and the next finalize completes the rebuild
    assert sorted(os.listdir(again.images)) == sorted(position)
