"""One HTTP(S) transfer into a `.part` file, resumable, with progress. Standard library only.

`fetch` appends to an existing `.part` with a `Range: bytes=N-` request (a server that ignores
the range sends the whole file, which then replaces the `.part`). A transfer that stops early
raises `TransferError` and keeps the `.part`, so the next call resumes it. Checking the result
(size, sha256) and moving it into place is the caller's business.
"""

from __future__ import annotations

import http.client
import re
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import TextIO

from .progress import Progress

CHUNK = 1 << 20
USER_AGENT = "falco-weights (python urllib)"


class TransferError(Exception):
    """A transfer that did not complete; a `.part` already on disk is kept for resuming."""


def fetch(url: str, part: Path, *, label: str, timeout: float = 60.0, stream: TextIO | None = None,
          log_every: float = 30.0) -> int:
    """Download `url` into `part`, resuming what is already there; returns the final size."""
    have = part.stat().st_size if part.is_file() else 0
    headers = {"User-Agent": USER_AGENT, **({"Range": f"bytes={have}-"} if have else {})}
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416 and have:
            return _already_complete(err, part, have, url)
        raise TransferError(f"{url}: HTTP {err.code} {err.reason}") from err
    except (urllib.error.URLError, OSError) as err:
        raise TransferError(f"{url}: cannot connect ({getattr(err, 'reason', err)})") from err
    with response:
        if response.headers.get_content_type() == "text/html":
            raise TransferError(f"{url}: served an HTML page, not the file (a download or sign-in page; "
                                "give a direct link with --mirror)")
        start, total = _resume_point(response, have, url)
        progress = Progress(label, total, unit="MB", scale=1e6, initial=start, interval_s=log_every,
                            stream=stream or sys.stderr, heartbeat=False, enabled=True)
        with progress:
            return _copy(response, part, start, total, url, progress)


def _resume_point(response, have: int, url: str) -> tuple[int, int | None]:
    """(offset the body starts at, total size or None) from a 200 or 206 response."""
    if response.status == 206:
        m = re.fullmatch(r"bytes (\d+)-(\d+)/(\d+|\*)", response.headers.get("Content-Range", "").strip())
        if not m or int(m.group(1)) != have:
            raise TransferError(f"{url}: asked to resume at byte {have}, got Content-Range "
                                f"{response.headers.get('Content-Range')!r}")
        return have, None if m.group(3) == "*" else int(m.group(3))
    length = response.headers.get("Content-Length")
    return 0, int(length) if length and length.isdigit() else None


def _copy(response, part: Path, start: int, total: int | None, url: str, progress: Progress) -> int:
    done = start
    try:
        with open(part, "ab" if start else "wb") as out:
            while chunk := response.read(CHUNK):
                out.write(chunk)
                done += len(chunk)
                progress.update(len(chunk))
    except (OSError, http.client.HTTPException) as err:  # reset, timeout, IncompleteRead
        raise TransferError(f"{url}: transfer broke off at {done} bytes ({err!r}); {part.name} is kept, "
                            "the next run resumes it") from err
    if total is not None and done != total:
        raise TransferError(f"{url}: transfer ended at {done} of {total} bytes; {part.name} is kept, "
                            "the next run resumes it")
    return done


def _already_complete(err: urllib.error.HTTPError, part: Path, have: int, url: str) -> int:
    """416 on a resume: the `.part` is whole when the server's size equals it, else stale."""
    m = re.fullmatch(r"bytes \*/(\d+)", (err.headers.get("Content-Range") or "").strip())
    if m and int(m.group(1)) == have:
        return have
    part.unlink()
    raise TransferError(f"{url}: cannot resume at byte {have} (HTTP 416); the stale {part.name} was "
                        "deleted, the next run starts afresh") from err
