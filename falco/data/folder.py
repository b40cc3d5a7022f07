"""Any folder of images, scanned recursively.

Every file whose extension is an image extension (case-insensitive) becomes an item; the
file's content is only checked when it is read (`read_rgb`), so a broken file is a recorded
skip, not a scan failure. Hidden files and folders (names starting with '.', e.g. macOS
'._x.jpg' resource forks and our own atomic-write temp files) are ignored. Symlinked folders
are followed once (loops are cut). Items are sorted by their id, the posix path relative to
the root, so the order and ids do not depend on the file system or the platform.
"""

from __future__ import annotations

import os
from pathlib import Path

from falco.data.items import DatasetError, SourceItem, check_limit

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"})


def is_image_name(name: str) -> bool:
    """True for a visible file name with an image extension, in any letter case."""
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def check_root(root: str | os.PathLike, what: str) -> Path:
    """The dataset root as a Path, or a DatasetError saying it is missing or not a folder."""
    path = Path(root).expanduser()
    if not path.exists():
        raise DatasetError(f"{what} root not found: {path}")
    if not path.is_dir():
        raise DatasetError(f"{what} root is not a folder: {path}")
    return path


def image_files(root: Path) -> list[str]:
    """Posix paths, relative to `root`, of every image file below it, sorted."""
    found: list[str] = []
    seen_dirs: set[str] = set()
    for directory, subdirs, files in os.walk(root, onerror=_unlistable, followlinks=True):
        real = os.path.realpath(directory)
        if real in seen_dirs:  # a symlink loop or a second link to the same folder
            subdirs[:] = []
            continue
        seen_dirs.add(real)
        subdirs[:] = [d for d in subdirs if not d.startswith(".")]
        relative = Path(directory).relative_to(root)
        found.extend((relative / name).as_posix() for name in files if is_image_name(name))
    return sorted(found)


def _unlistable(err: OSError) -> None:
    # os.walk would silently leave out a folder it cannot list: images must never vanish so.
    raise DatasetError(f"cannot list folder {err.filename}: {err.strerror}") from err


def scan_folder(root: str | os.PathLike, *, limit: int | None = None) -> list[SourceItem]:
    """Items for every image below `root` (no identities, no labels); the first `limit`."""
    check_limit(limit)
    path = check_root(root, "image folder")
    names = image_files(path)
    if not names:
        extensions = ", ".join(sorted(IMAGE_EXTENSIONS))
        raise DatasetError(f"no image files found under {path} (looked for {extensions}, any case)")
    return [SourceItem(id=name, path=path / name) for name in names[:limit]]
