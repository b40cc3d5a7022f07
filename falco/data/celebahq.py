"""CelebA-HQ in the CelebAMask-HQ layout, with the 40 attributes, the CelebA split and identities.

Layout under `root` (the unpacked CelebAMask-HQ folder):
    CelebA-HQ-img/{0..29999}.jpg
    CelebAMask-HQ-attribute-anno.txt   line 1: image count; line 2: the 40 attribute names;
                                       then `<i>.jpg` and 40 values of 1 / -1
    CelebA-HQ-to-CelebA-mapping.txt    header `idx orig_idx orig_file`, then one row per image
The split and the identities come from the original CelebA release:
    list_eval_partition.txt            `<celeba file> <0|1|2>` (train / val / test)
    identity_CelebA.txt                `<celeba file> <identity>`
Each CelebA file is looked for, first match wins, in `root/`, `root/celeba/`, `root/CelebA/`
and their `Anno/` and `Eval/` subfolders (the official CelebA archive puts the partition in
`Eval/` and the identities in `Anno/`); keyword arguments give explicit paths instead
(relative to `root`, or absolute). The partition is needed only for split != 'all'; the
identities are used when found and required only with `require_identity=True`.
CelebA file names are matched by their number, so `099095.jpg` and `99095.jpg` agree (the
mapping file and the partition file pad them differently in some copies).

Items: id `CelebA-HQ-img/<i>.jpg`, ordered by i; labels = the 40 attributes as 0/1 (-1 -> 0);
identity = the CelebA identity number as a string. Files listed in the annotation but absent
from disk stay in the list: reading them reports a 'missing' skip, so nothing vanishes
silently.
"""

from __future__ import annotations

import os
from pathlib import Path

from falco.data.folder import check_root
from falco.data.items import DatasetError, SourceItem, check_limit, read_rows, row_error

ATTRIBUTE_NAMES = (
    "5_o_Clock_Shadow", "Arched_Eyebrows", "Attractive", "Bags_Under_Eyes", "Bald", "Bangs",
    "Big_Lips", "Big_Nose", "Black_Hair", "Blond_Hair", "Blurry", "Brown_Hair",
    "Bushy_Eyebrows", "Chubby", "Double_Chin", "Eyeglasses", "Goatee", "Gray_Hair",
    "Heavy_Makeup", "High_Cheekbones", "Male", "Mouth_Slightly_Open", "Mustache",
    "Narrow_Eyes", "No_Beard", "Oval_Face", "Pale_Skin", "Pointy_Nose", "Receding_Hairline",
    "Rosy_Cheeks", "Sideburns", "Smiling", "Straight_Hair", "Wavy_Hair", "Wearing_Earrings",
    "Wearing_Hat", "Wearing_Lipstick", "Wearing_Necklace", "Wearing_Necktie", "Young",
)  # fmt: skip
SPLITS = {"train": 0, "val": 1, "test": 2}
IMAGES_DIR = "CelebA-HQ-img"
ATTRIBUTES_FILE = "CelebAMask-HQ-attribute-anno.txt"
MAPPING_FILE = "CelebA-HQ-to-CelebA-mapping.txt"
PARTITION_FILE = "list_eval_partition.txt"
IDENTITY_FILE = "identity_CelebA.txt"
CELEBA_DIRS = tuple(f"{base}{sub}" for base in ("", "celeba/", "CelebA/") for sub in ("", "Anno/", "Eval/"))
ATTRIBUTES_FORMAT = (
    "line 1: the image count; line 2: the 40 CelebA attribute names; then one line per image: "
    "`<i>.jpg` followed by 40 values of 1 or -1"
)
MAPPING_FORMAT = "header `idx orig_idx orig_file`, then lines `<hq index> <celeba index> <celeba file>`"
PARTITION_FORMAT = "lines `<celeba file> <0|1|2>` (0 = train, 1 = val, 2 = test)"
IDENTITY_FORMAT = "lines `<celeba file> <identity number>`"
_VALUES = {"1": 1, "-1": 0, "0": 0}
_OPTION = {PARTITION_FILE: "partition_file", IDENTITY_FILE: "identity_file"}  # for error messages


def scan_celebahq(
    root: str | os.PathLike,
    *,
    split: str = "all",
    limit: int | None = None,
    require_identity: bool = False,
    images_dir: str = IMAGES_DIR,
    attributes_file: str | os.PathLike = ATTRIBUTES_FILE,
    mapping_file: str | os.PathLike = MAPPING_FILE,
    partition_file: str | os.PathLike | None = None,
    identity_file: str | os.PathLike | None = None,
) -> list[SourceItem]:
    """Items of one split ('train', 'val', 'test' or 'all'), the first `limit` of them."""
    check_limit(limit)
    if split != "all" and split not in SPLITS:
        raise DatasetError(f"unknown CelebA-HQ split {split!r}; expected one of all, {', '.join(SPLITS)}")
    root = check_root(root, "CelebA-HQ")
    images = root / images_dir
    if not images.is_dir():
        raise DatasetError(f"CelebA-HQ image folder not found: {images} (expected {IMAGES_DIR}/<i>.jpg)")
    rows = read_attributes(root / attributes_file)
    identity_path = _celeba_file(root, identity_file, IDENTITY_FILE, IDENTITY_FORMAT, require_identity)
    numbers: dict[int, int] = {}  # CelebA-HQ index -> CelebA file number, when needed
    if split != "all" or identity_path is not None:
        numbers = _celeba_numbers(rows, root / mapping_file)
    if split != "all":
        partition_path = _celeba_file(root, partition_file, PARTITION_FILE, PARTITION_FORMAT, True)
        assert partition_path is not None  # required=True raises instead of returning None
        partition = read_celeba_column(partition_path, PARTITION_FORMAT, allowed={"0", "1", "2"})
        wanted = str(SPLITS[split])
        rows = [r for r in rows if _lookup(partition, numbers[r[0]], partition_path) == wanted]
    rows = rows[:limit]
    identity_of: dict[int, str] = {}
    if identity_path is not None:
        identities = read_celeba_column(identity_path, IDENTITY_FORMAT)
        identity_of = {i: _lookup(identities, numbers[i], identity_path) for i, _, _ in rows}
    items = []
    for index, name, labels in rows:
        items.append(SourceItem(f"{images_dir}/{name}", images / name, identity_of.get(index), labels))
    return items


def read_attributes(path: Path) -> list[tuple[int, str, dict[str, int | float | str]]]:
    """(hq index, file name, {attribute: 0/1}) per image of the attribute file, by index."""
    lines = list(read_rows(path, ATTRIBUTES_FORMAT))
    if len(lines) < 2:
        raise DatasetError(f"{path}: too short; expected format: {ATTRIBUTES_FORMAT}")
    (count_line, count), (names_line, names) = lines[0], lines[1]
    if len(count) != 1 or not count[0].isdecimal():
        raise row_error(path, count_line, "the image count (one integer)", count)
    if sorted(names) != sorted(ATTRIBUTE_NAMES):
        raise row_error(path, names_line, "the 40 CelebA attribute names", names)
    rows = [_attribute_row(path, number, tokens, names) for number, tokens in lines[2:]]
    if len(rows) != int(count[0]):
        raise DatasetError(
            f"{path}: line {count_line} announces {count[0]} images, the file lists {len(rows)}"
        )
    rows.sort(key=lambda row: row[0])
    return rows


def _attribute_row(path: Path, number: int, tokens: list[str], names: list[str]):
    expected = "`<i>.jpg` followed by 40 values of 1 or -1"
    if len(tokens) != 41 or any(v not in _VALUES for v in tokens[1:]):
        raise row_error(path, number, expected, tokens)
    stem = os.path.splitext(tokens[0])[0]
    if not stem.isdecimal():
        raise row_error(path, number, expected + " (a numbered CelebA-HQ file name)", tokens)
    values = dict(zip(names, tokens[1:], strict=True))
    labels: dict[str, int | float | str] = {name: _VALUES[values[name]] for name in ATTRIBUTE_NAMES}
    return int(stem), tokens[0], labels


def read_mapping(path: Path) -> dict[int, int]:
    """CelebA-HQ index -> CelebA file number (the number in `orig_file`)."""
    mapping = {}
    for number, tokens in read_rows(path, MAPPING_FORMAT):
        if number == 1 and tokens[0] == "idx":  # the header line
            continue
        if len(tokens) != 3 or not tokens[0].isdecimal() or not _file_number(tokens[2]):
            raise row_error(path, number, "`<hq index> <celeba index> <celeba file>`", tokens)
        mapping[int(tokens[0])] = _file_number(tokens[2])
    if not mapping:
        raise DatasetError(f"{path}: no rows; expected format: {MAPPING_FORMAT}")
    return mapping


def read_celeba_column(path: Path, expected: str, allowed: set[str] | None = None) -> dict[int, str]:
    """CelebA file number -> second column, for the partition and the identity files."""
    column = {}
    for number, tokens in read_rows(path, expected):
        valid = len(tokens) == 2 and _file_number(tokens[0]) and tokens[1].lstrip("-").isdecimal()
        if not valid or (allowed is not None and tokens[1] not in allowed):
            raise row_error(path, number, expected.removeprefix("lines "), tokens)
        column[_file_number(tokens[0])] = str(int(tokens[1]))
    return column


def _file_number(name: str) -> int:
    """000123.jpg -> 123; 0 for a name that is not a number (CelebA numbers start at 1)."""
    stem = os.path.splitext(name)[0]
    return int(stem) if stem.isdecimal() else 0


def _celeba_numbers(rows: list, mapping_path: Path) -> dict[int, int]:
    """The CelebA file number of every attribute row, through the mapping file."""
    mapping = read_mapping(mapping_path)
    for index, name, _ in rows:
        if index not in mapping:
            raise DatasetError(f"{mapping_path}: no row for CelebA-HQ image {name} (idx {index})")
    return mapping


def _lookup(column: dict[int, str], celeba: int, path: Path) -> str:
    if celeba not in column:
        raise DatasetError(f"{path}: no row for CelebA file {celeba:06d}.jpg")
    return column[celeba]


def _celeba_file(
    root: Path, given: str | os.PathLike | None, name: str, expected: str, required: bool
) -> Path | None:
    """An explicit path (which must exist), else the first CELEBA_DIRS match, else None."""
    if given is not None:
        path = root / given
        if not path.is_file():
            raise DatasetError(f"CelebA file not found: {path}\nexpected format: {expected}")
        return path
    candidates = [root / f"{folder}{name}" for folder in CELEBA_DIRS]
    for path in candidates:
        if path.is_file():
            return path
    if required:
        searched = "\n  ".join(str(p) for p in candidates)
        raise DatasetError(
            f"CelebA file {name} not found; looked in:\n  {searched}\n"
            f"expected format: {expected} (from the CelebA release; or pass its path as "
            f"{_OPTION[name]}=...)"
        )
    return None
