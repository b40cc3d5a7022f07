"""The run's own log: what a job prints also lands in `<run_dir>/train.log`, line by line.

Whether the job ran on a terminal, into a pipe or under a scheduler that drops its output, the run
directory keeps its progress lines, warnings, stop line and traceback (nothing lost on a crash).
Hydra's file handler appends its log records to the same file. A line redrawn with carriage
returns (a terminal's progress bar) is kept in its last state only, without terminal escapes.
"""

from __future__ import annotations

import re
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

_ESCAPE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")  # terminal control sequences (cursor moves, colours)


def final_state(line: str) -> str:
    """A line as it last stood on a terminal: the text after its last carriage return, no escapes."""
    return _ESCAPE.sub("", line.rsplit("\r", 1)[-1]).rstrip()


class LogFile:
    """Complete lines appended to one file, each flushed at once (O_APPEND: safe beside other writers)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file: IO[str] | None = open(path, "a", encoding="utf-8", errors="replace")
        self._pending = ""
        self._lock = threading.Lock()

    def write(self, text: str) -> None:
        with self._lock:
            if self._file is None:
                return
            self._pending += text
            *lines, self._pending = self._pending.split("\n")
            for line in lines:
                self._file.write(final_state(line) + "\n")
            if lines:
                self._file.flush()

    def close(self) -> None:
        with self._lock:
            if self._file is None:
                return
            last = final_state(self._pending)
            if last:
                self._file.write(last + "\n")
            self._file.close()
            self._file = None


class Tee:
    """A text stream that writes to `stream` as it is and to a LogFile; everything else
    (isatty, fileno, encoding: what tqdm and Lightning ask) is the stream's."""

    def __init__(self, stream: IO[str], log: LogFile) -> None:
        self._stream, self._log = stream, log

    def write(self, text: str) -> int:
        n = self._stream.write(text)
        self._log.write(text)
        return len(text) if n is None else n

    def flush(self) -> None:
        self._stream.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


@contextmanager
def tee_output(path: Path, enabled: bool = True) -> Iterator[None]:
    """stdout and stderr also go to `path` inside the block; `enabled=False` (ranks > 0 of a
    multi-process run) changes nothing."""
    if not enabled:
        yield
        return
    log = LogFile(path)
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = Tee(sys.stdout, log), Tee(sys.stderr, log)  # type: ignore[assignment]
    try:
        yield
    except BaseException:  # the traceback too (Hydra prints it after this block)
        import traceback

        log.write(traceback.format_exc())
        raise
    finally:
        sys.stdout, sys.stderr = saved
        log.close()
