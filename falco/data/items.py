"""What a dataset scan yields, and the two ways reading a dataset can fail.

- `SourceItem`: one input image with its stable id, identity and utility labels.
- `SkipImage`: one image is unusable (raised by `read_rgb`); the run records the reason and
  goes on with the next image.
- `DatasetError`: the dataset itself is unusable (missing root, malformed annotation file);
  raised while scanning, before any work starts, with a message naming the file and the
  expected format.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

# The machine-readable reasons `SkipImage.reason` takes (records and summaries key on them).
SKIP_REASONS = (
    "missing",  # the file vanished or is a dangling link
    "unreadable",  # permission denied, a directory or a FIFO with an image name, I/O error
    "empty_file",  # zero bytes
    "not_an_image",  # not a supported image format (e.g. a text file named .jpg)
    "truncated",  # the encoded data ends early
    "corrupt",  # the decoder rejected the data
    "decompression_bomb",  # header claims more pixels than the configured limit
    "too_small",  # a side shorter than the configured minimum
    "unsupported_mode",  # a pixel format with no sensible RGB reading (e.g. float)
    "out_of_memory",  # decoding ran out of memory
)


@dataclass(frozen=True)
class SourceItem:
    """One input image.

    id: stable unique id (the posix path relative to the dataset root); the run keys its
        records and per-image seeds on it.
    path: file to read, or None for items that are generated rather than read.
    identity: person label when the dataset has one (CelebA identity, LFW name), else None.
    labels: utility labels carried to the release (e.g. the 40 CelebA attributes as 0/1).
    """

    id: str
    path: Path | None
    identity: str | None = None
    labels: dict[str, int | float | str] = field(default_factory=dict, hash=False)


class SkipImage(Exception):
    """An unusable image: `.reason` is one of SKIP_REASONS, `.message` says what and where."""

    def __init__(self, reason: str, message: str):
        if reason not in SKIP_REASONS:
            raise ValueError(f"unknown skip reason {reason!r}; expected one of {SKIP_REASONS}")
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message


class DatasetError(ValueError):
    """The dataset layout or one of its annotation files is missing or malformed."""


def read_rows(path: Path, expected: str) -> Iterator[tuple[int, list[str]]]:
    """Yield (1-based line number, whitespace-split tokens) of a text annotation file.

    Blank lines are skipped; a UTF-8 BOM and CRLF line ends are accepted. `expected`
    describes the format for the error raised when the file is missing or not text.
    """
    if not path.is_file():
        raise DatasetError(f"annotation file not found: {path}\nexpected format: {expected}")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        raise DatasetError(f"cannot read {path}: {err}\nexpected format: {expected}") from err
    for number, line in enumerate(text.splitlines(), start=1):
        tokens = line.split()
        if tokens:
            yield number, tokens


def row_error(path: Path, line: int, expected: str, got: list[str] | str) -> DatasetError:
    """A DatasetError pointing at one line of an annotation file."""
    shown = " ".join(got) if isinstance(got, list) else got
    if len(shown) > 120:
        shown = shown[:117] + "..."
    return DatasetError(f"{path}, line {line}: expected {expected}, got {shown!r}")


def check_limit(limit: int | None) -> None:
    """`limit` selects the first N items after deterministic ordering; None means all."""
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise DatasetError(f"limit must be a positive integer or None, got {limit!r}")
