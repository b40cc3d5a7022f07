"""Any folder of images, scanned recursively.

Every file whose extension is an image extension (case-insensitive) becomes an item; the
file's content is only checked when it is read (`read_rgb`), so a broken file is a recorded
skip, not a scan failure. Hidden files and folders (names starting with '.', e.g. macOS
'._x.jpg' resource forks and our own atomic-write temp files) are ignored. Symlinked folders
are followed once (loops are cut). Items are sorted by their id, the posix path relative to
the root, so the order and ids do not depend on the file system or the platform.

Optional per-image labels come from a CSV file (`read_labels`): a header `file,<name>,...`, one row
per image (its path relative to the root); they travel with the item into the records and the
release, and a `Male` column (1 man, 0 woman; CelebA's name) is the truth the held-out gender
judges are scored against.
"""

from __future__ import annotations

import csv
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


def scan_folder(root: str | os.PathLike, *, limit: int | None = None,
                labels: str | os.PathLike | None = None) -> list[SourceItem]:
    """Items for every image below `root` (no identities; the labels of the `labels` CSV file,
    when given); the first `limit`."""
    check_limit(limit)
    path = check_root(root, "image folder")
    names = image_files(path)
    if not names:
        extensions = ", ".join(sorted(IMAGE_EXTENSIONS))
        raise DatasetError(f"no image files found under {path} (looked for {extensions}, any case)")
    of = read_labels(labels, set(names), path) if labels is not None else {}
    return [SourceItem(id=name, path=path / name, labels=of.get(name, {})) for name in names[:limit]]


LABELS_FORMAT = "a CSV file with a header `file,<label>,...` and one row per image: its path relative to data.root"


def read_labels(labels: str | os.PathLike, names: set[str], root: Path) -> dict[str, dict[str, int | float | str]]:
    """image name -> {label: value} from the CSV file; numbers are read as numbers, an empty cell
    is no label. A missing file, a bad header, an unknown or repeated image is a DatasetError."""
    file = Path(labels).expanduser()
    if not file.is_file():
        raise DatasetError(f"labels file not found: {file} (data.labels: {LABELS_FORMAT})")
    with file.open(newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    if not rows or len(rows[0]) < 2 or rows[0][0].strip() != "file":
        raise DatasetError(f"{file}: the first line must be the header `file,<label>,...` ({LABELS_FORMAT})")
    head = [h.strip() for h in rows[0][1:]]
    out: dict[str, dict[str, int | float | str]] = {}
    for line, row in enumerate(rows[1:], start=2):
        if not row:
            continue
        name = row[0].strip()
        if len(row) != len(head) + 1:
            raise DatasetError(f"{file} line {line}: {len(row)} cells, the header has {len(head) + 1}")
        if name not in names:
            raise DatasetError(f"{file} line {line}: {name!r} is not an image under {root}")
        if name in out:
            raise DatasetError(f"{file} line {line}: {name!r} is listed twice")
        out[name] = {k: _value(v) for k, v in zip(head, row[1:], strict=True) if v.strip()}
        if out[name].get("Male", 0) not in (0, 1):  # refused now, not after the whole run
            cell = row[head.index("Male") + 1]
            raise DatasetError(f"{file} line {line}: Male must be 1 (man) or 0 (woman), not {cell!r}")
    return out


def _value(text: str) -> int | float | str:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text.strip()
