"""Peak memory and throughput of whole runs on 16 and 256 images (memory must be O(batch)).

    .venv/bin/python benchmarks/memory_scaling.py [--sizes 16 64 256] [--steps 5] [--batch-size 16]

Each size is one `python train.py` process on the embedded default (synthetic faces), with a
fresh stage cache, so every stage (detection, alignment, inversion, fake pool, pairing), the
optimization and the end-of-run summary count. Peak RSS comes from wait4() on that process
alone. The stages' batch (stages.batch) is set to --batch-size too, so the smallest run fills
its batches like the largest. Prints one line per size and each peak relative to the
smallest; more than x1.2 means something grows with the dataset. The middle size separates
growth with N from what a tiny run never reaches (prepare detects 32 photos at a time; MTCNN's
variable-size tensors leave an allocator high-water mark that settles after a few batches).
Not a test: it reports numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_once(images: int, steps: int, batch_size: int, work: Path, extra: list[str], tag: str = "") -> dict:
    out = work / f"run_{images}{tag}"
    cmd = [sys.executable, "train.py", f"data.identities={images}", f"method.steps={steps}",
           f"batch_size={batch_size}", f"stages.batch={batch_size}", f"run_dir={out}",
           f"cache_dir={work / f'cache_{images}'}", "logger=none", "trainer.enable_progress_bar=false", *extra]
    t0 = time.perf_counter()
    child = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    # wait4 gives this child's own resource usage (getrusage(CHILDREN) would mix the runs).
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - t0
    code = os.waitstatus_to_exitcode(status)
    if code not in (0, 3):  # 3: finished, some images skipped
        raise SystemExit(f"run on {images} images failed ({code}):\n{child.stderr.read()[-3000:]}")
    recs = [json.loads(line) for line in (out / "private" / "records.jsonl").read_text().splitlines()]
    ok = [r for r in recs if r["status"] == "ok"]
    optimize_s = sum(r["seconds"] for r in ok)  # per-image share of its batch's predict_step
    return {"images": images, "tag": tag, "done": len(ok), "peak_rss_mb": usage.ru_maxrss / 1024, "wall_s": wall,
            "optimize_img_per_s": len(ok) / optimize_s if optimize_s else float("nan"),
            "overall_img_per_s": len(ok) / wall}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[16, 64, 256], help="dataset sizes (images)")
    ap.add_argument("--steps", type=int, default=5, help="optimization steps per image (paper: 50)")
    ap.add_argument("--batch-size", type=int, default=16, help="images optimized together")
    ap.add_argument("--work", type=Path, default=None, help="keep run and cache directories here")
    ap.add_argument("--warm", action="store_true",
                    help="also re-run each size on its warm stage cache: the peak of the per-image "
                         "phases (optimization, writing, summary) without the fixed-size stages")
    ap.add_argument("overrides", nargs="*", help="more train.py overrides, e.g. trainer.precision=32-true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="falco_mem_") as tmp:
        work = args.work or Path(tmp)
        rows = [run_once(n, args.steps, args.batch_size, work, args.overrides) for n in args.sizes]
        warm = [run_once(n, args.steps, args.batch_size, work, args.overrides, "_warm")
                for n in args.sizes] if args.warm else []
    report(rows, "cold cache (every stage)")
    if warm:
        report(warm, "warm cache (per-image phases only)")


def report(rows: list[dict], title: str) -> None:
    print(title)
    for r in rows:
        print(f"{r['images']:>6} images ({r['done']} done): peak RSS {r['peak_rss_mb']:8.1f} MB   "
              f"wall {r['wall_s']:7.1f} s   optimize {r['optimize_img_per_s']:6.2f} img/s   "
              f"overall {r['overall_img_per_s']:6.2f} img/s")
    for r in rows[1:]:
        ratio = r["peak_rss_mb"] / rows[0]["peak_rss_mb"]
        verdict = "within 20%" if ratio <= 1.2 else "MORE THAN 20% ABOVE"
        print(f"peak RSS {r['images']} vs {rows[0]['images']} images: x{ratio:.3f} ({verdict})")
    if len(rows) > 2:
        print(f"peak RSS {rows[-1]['images']} vs {rows[-2]['images']} images: "
              f"x{rows[-1]['peak_rss_mb'] / rows[-2]['peak_rss_mb']:.3f}")


if __name__ == "__main__":
    main()
