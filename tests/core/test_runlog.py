"""The run's own log (falco/runlog.py): what the job prints, line by line, in the run directory."""

from __future__ import annotations

import io
import sys

import pytest

from falco.runlog import LogFile, Tee, tee_output


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_tee_passes_output_through_and_logs_final_lines(tmp_path):
    term, path = _Terminal(), tmp_path / "train.log"
    log = LogFile(path)
    tee = Tee(term, log)
    tee.write("precision: 32-true\n")
    tee.write("\roptimize:  10%|#  | 1/10\roptimize: 100%|###| 10/10\x1b[A\n")  # a bar redrawn, then done
    tee.write("no newline yet")
    assert term.getvalue().startswith("precision: 32-true\n\roptimize:  10%")  # the terminal sees it all
    assert tee.isatty() is True  # tqdm still draws its bar on a terminal
    assert path.read_text() == "precision: 32-true\noptimize: 100%|###| 10/10\n"
    log.close()
    assert path.read_text().endswith("no newline yet\n")
    tee.write("after close\n")  # a late heartbeat thread: ignored by the file, not an error
    assert "after close" not in path.read_text()


def test_tee_output_restores_streams_and_records_the_traceback(tmp_path):
    path = tmp_path / "run" / "train.log"
    before = sys.stdout, sys.stderr
    with pytest.raises(ValueError, match="bad value"):
        with tee_output(path):
            print("[progress] optimize: 0/4 images (0%), started")
            print("a warning", file=sys.stderr)
            raise ValueError("bad value")
    assert (sys.stdout, sys.stderr) == before
    text = path.read_text()
    assert "[progress] optimize: 0/4 images (0%), started\na warning\n" in text
    assert "Traceback" in text and "ValueError: bad value" in text
    with tee_output(path, enabled=False):  # ranks > 0: nothing changes
        assert sys.stdout is before[0]
        print("rank 1")
    assert "rank 1" not in path.read_text()
