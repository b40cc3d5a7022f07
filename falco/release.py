"""What release/ shows besides its contents: the order of things, timestamps, the optional tar.

Nothing observable in release/ may follow the input order: the originals' names sort like the
input, so anyone holding a release whose files were made in input order re-links every
pseudonym to its original by position. So:
- the work is done in a secret order (`secret_order`): HMAC-SHA256 of each id under a per-run
  key kept in private/, the same for every DDP rank, shard and resume of the run directory;
- release/images is re-created in pseudonym order at the end (`rebuild_images`): creation order
  is what a directory listing shows on tmpfs, btrfs and XFS, and what inode numbers and ctimes
  follow everywhere;
- every file and directory of release/ gets one mtime/atime (`normalize_times`), after the last
  read of the run (a read sets the atime on most mounts; reads go by id);
- `write_tar` packs release/ with members sorted by name and fixed metadata.
RunDir.finalize sorts the CSV rows by pseudonym; RunDir.seal normalizes and packs.
"""

from __future__ import annotations

import hmac
import os
import secrets
import shutil
import tarfile
import uuid
from collections.abc import Sequence
from pathlib import Path

ORDER_KEY = "order.key"  # file name of the order key, in private/
KEY_BYTES = 32  # 256-bit order key


def order_key(private: Path) -> bytes:
    """This run directory's order key: created by whichever process asks first, read by all.

    Under SLURM all ranks start together; under Lightning's DDP launcher ranks 1..n-1 start the
    script anew once rank 0 is in predict; shards and resumes come later. A fresh key is written
    to a temp file and hard-linked to its name, which fails if the name exists: there is never a
    second key or a partial one, and a process that loses the race reads the winner's key.
    """
    path = private / ORDER_KEY
    if not path.exists():
        _create_once(path, secrets.token_bytes(KEY_BYTES))
    key = path.read_bytes()
    if len(key) != KEY_BYTES:
        raise RuntimeError(f"{path} is damaged ({len(key)} bytes); delete it (it only orders the remaining work)")
    return key


def _create_once(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(temp, path)
        except FileExistsError:
            pass  # another process made the key first: use that one
    finally:
        temp.unlink(missing_ok=True)


def secret_order(ids: Sequence[str], key: bytes) -> list[int]:
    """Positions 0..len(ids)-1 sorted by HMAC-SHA256(key, id): unpredictable without the key,
    identical in every process that holds it, and a function of each id alone, so a resumed run
    or a shard orders whatever is left of the work the same way."""
    return sorted(range(len(ids)), key=lambda i: hmac.new(key, ids[i].encode(), "sha256").digest())


def rebuild_images(images: Path, work: Path) -> None:
    """Re-create `images` with its files made in sorted-name (pseudonym, so random) order.

    Copies (new inodes, not hard links) go into work/images.new, fsynced; then images becomes
    work/images.old and images.new becomes images; then images.old goes. At every instant each
    image is in `images` or in a complete images.old, and `settle_images` finishes or undoes a
    swap that a kill interrupted. No other process may write into `images` meanwhile (the end of
    an unsharded run: all ranks done, no shard running).
    """
    settle_images(images, work)
    new, old = work / "images.new", work / "images.old"
    new.mkdir(parents=True)
    for src in sorted((p for p in images.iterdir() if p.is_file()), key=lambda p: p.name):
        shutil.copyfile(src, new / src.name)
        _fsync(new / src.name)
    _fsync(new)
    os.rename(images, old)
    os.rename(new, images)
    settle_images(images, work)


def settle_images(images: Path, work: Path) -> None:
    """Finish or undo an interrupted `rebuild_images`; a no-op when none was interrupted."""
    new, old = work / "images.new", work / "images.old"
    if old.exists() and not images.exists():  # killed between the two renames
        os.rename(new if new.exists() else old, images)  # images.new is complete once images.old exists
    if old.exists():
        for p in old.iterdir():  # anything images/ lacks (it was written after the copy): keep it
            if not (images / p.name).exists():
                os.rename(p, images / p.name)
        shutil.rmtree(old)
    if new.exists():
        shutil.rmtree(new)  # a copy a kill cut off: images/ itself is whole


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def release_paths(release: Path) -> list[Path]:
    """release/ and everything under it, sorted by name (relative to release's parent)."""
    return sorted([release, *release.rglob("*")], key=lambda p: p.relative_to(release.parent).as_posix())


def normalize_times(release: Path, when: int) -> None:
    """Give every file and directory of release/ the mtime and atime `when`. Directories come
    after their contents (writing into a directory changes its mtime); the calls go in name
    order, so even the ctimes they set follow the pseudonyms."""
    paths = release_paths(release)
    for p in [*(p for p in paths if not p.is_dir()), *(p for p in reversed(paths) if p.is_dir())]:
        os.utime(p, (when, when), follow_symlinks=False)


def write_tar(release: Path, dest: Path, when: int) -> None:
    """release/ as an uncompressed ustar archive at `dest`, atomically: members sorted by name
    (release/, release/images/, the images by pseudonym, the CSVs), mtime `when`, uid/gid 0,
    no user or group name, mode 0755 for directories and 0644 for files. ustar has no fields
    for atime, ctime or inode numbers."""
    temp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex}.tmp")
    try:
        with tarfile.open(temp, "w", format=tarfile.USTAR_FORMAT) as tar:
            for p in release_paths(release):
                _add(tar, p, p.relative_to(release.parent).as_posix(), when)
        _fsync(temp)
        os.replace(temp, dest)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def _add(tar: tarfile.TarFile, path: Path, name: str, when: int) -> None:
    info = tarfile.TarInfo(name)
    info.mtime, info.uid, info.gid, info.uname, info.gname = when, 0, 0, "", ""
    if path.is_dir():
        info.type, info.mode = tarfile.DIRTYPE, 0o755
        tar.addfile(info)
        return
    info.mode, info.size = 0o644, path.stat().st_size
    with open(path, "rb") as handle:
        tar.addfile(info, handle)
