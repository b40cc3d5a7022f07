"""benchmarks/train_wall.py reads each loop's time from the progress lines a run prints: the
pattern must match what falco/progress.py writes (else the benchmark would report no loop)."""

from __future__ import annotations

import io

from benchmarks.train_wall import DONE
from falco.progress import Progress


def test_the_benchmark_parses_the_progress_lines_of_a_run():
    clock, out = [100.0], io.StringIO()
    bar = Progress("fake pool: sample + embed", 8, stream=out, clock=lambda: clock[0], heartbeat=False,
                   enabled=True)
    bar.update(8)
    clock[0] += 75
    bar.close()
    found = {m["loop"]: (int(m["m"]), int(m["s"])) for m in DONE.finditer(out.getvalue())}
    assert found == {"fake pool: sample + embed": (1, 15)}

