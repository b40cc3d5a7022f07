"""LFW: one folder per person (`Name/Name_0001.jpg`) and the verification pairs (`pairs.txt`).

`root` is the folder holding the people folders (`lfw/`, `lfw-deepfunneled/`, ...). Items are
the images one level down, id `Name/Name_0001.jpg`, identity = the folder name, sorted by id.
Image files lying directly in `root` or deeper than one level are not part of the layout and
are ignored.

`pairs.txt` (also pairsDevTrain.txt / pairsDevTest.txt): a header line `<folds> <n>` (10
folds of n same-person then n different-person pairs) or `<n>` (one set of n + n), then
    Name i j              same person, images i and j
    Name1 i Name2 j       different people
where i, j are 1-based image numbers: image i of Name is `Name/Name_{i:04d}.jpg`.
"""

from __future__ import annotations

import os
from pathlib import Path

from falco.data.folder import check_root, is_image_name
from falco.data.items import DatasetError, SourceItem, check_limit, read_rows, row_error

PAIRS_FORMAT = (
    "header `<folds> <n>` or `<n>`, then lines `name i j` (same person) or "
    "`name1 i name2 j` (different people), i and j 1-based image numbers"
)


def scan_lfw(root: str | os.PathLike, *, limit: int | None = None) -> list[SourceItem]:
    """Items for every image in a person folder below `root`; the first `limit`."""
    check_limit(limit)
    root = check_root(root, "LFW")
    try:
        ids = sorted(
            f"{person.name}/{name}"
            for person in root.iterdir()
            if person.is_dir() and not person.name.startswith(".")
            for name in os.listdir(person)
            if is_image_name(name)
        )
    except OSError as err:
        raise DatasetError(f"cannot list the LFW folder {root}: {err}") from err
    if not ids:
        hint = " (is it the parent of the lfw/ folder?)" if (root / "lfw").is_dir() else ""
        raise DatasetError(
            f"no LFW people folders with images under {root}{hint}; expected Name/Name_0001.jpg"
        )
    return [SourceItem(id=i, path=root / i, identity=i.split("/")[0]) for i in ids[:limit]]


def image_id(name: str, number: int) -> str:
    """The item id of image `number` (1-based) of person `name`."""
    return f"{name}/{name}_{number:04d}.jpg"


def read_pairs(path: str | os.PathLike) -> list[tuple[str, str, bool]]:
    """(id of image A, id of image B, same person?) for every pair of a pairs file, in order."""
    path = Path(path)
    lines = list(read_rows(path, PAIRS_FORMAT))
    if not lines:
        raise DatasetError(f"{path}: empty; expected format: {PAIRS_FORMAT}")
    header_line, header = lines[0]
    expected_count = _pair_count(path, header_line, header)
    pairs = [_parse_pair(path, number, tokens) for number, tokens in lines[1:]]
    if len(pairs) != expected_count:
        raise DatasetError(
            f"{path}: the header (line {header_line}: {' '.join(header)}) announces "
            f"{expected_count} pairs, the file lists {len(pairs)}"
        )
    return pairs


def _pair_count(path: Path, line: int, header: list[str]) -> int:
    """Pairs announced by the header: folds * 2n, or 2n (n same-person + n different)."""
    if not 1 <= len(header) <= 2 or not all(t.isdecimal() for t in header):
        raise row_error(path, line, "a header `<folds> <n>` or `<n>`", header)
    folds, n = (int(header[0]), int(header[1])) if len(header) == 2 else (1, int(header[0]))
    return folds * 2 * n


def _parse_pair(path: Path, line: int, tokens: list[str]) -> tuple[str, str, bool]:
    numbers = tokens[1:] if len(tokens) == 3 else tokens[1::2]
    if len(tokens) not in (3, 4) or not all(t.isdecimal() and int(t) > 0 for t in numbers):
        raise row_error(path, line, "`name i j` or `name1 i name2 j` with 1-based image numbers", tokens)
    if len(tokens) == 3:
        name, i, j = tokens
        return image_id(name, int(i)), image_id(name, int(j)), True
    name_a, i, name_b, j = tokens
    return image_id(name_a, int(i)), image_id(name_b, int(j)), name_a == name_b
