"""Gather evaluated runs into the paper's tables and a privacy-utility plot.

    python -m evaluation.make_tables OUT_DIR RUN_OR_SUMMARY [RUN_OR_SUMMARY ...]
        [--reid reid_native@dlib_resnet] [--utility gender_agreement] [--param margin]

Each argument is an `eval/<name>/summary.json`, or a run directory (all its eval summaries,
or, for a multirun directory, those of every job below it).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .plot import plot_sweep
from .tables import write_tables


def find_summaries(paths: list[str]) -> list[Path]:
    found: list[Path] = []
    for p in map(Path, paths):
        if p.is_file():
            found.append(p)
        elif p.is_dir():
            found += sorted(p.glob("**/eval/*/summary.json"))
        else:
            raise FileNotFoundError(f"{p}: neither a summary.json nor a run directory")
    if not found:
        raise FileNotFoundError(f"no eval/*/summary.json under {paths}; run evaluate.py on the runs first")
    return found


def main(argv: list[str] | None = None) -> dict[str, Path]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out_dir")
    ap.add_argument("inputs", nargs="+")
    ap.add_argument("--reid", default="reid_native@dlib_resnet", help="metric on the plot's x axis")
    ap.add_argument("--utility", default="gender_agreement", help="metric on the plot's y axis")
    ap.add_argument("--param", default="margin", help="swept parameter labelling the points")
    args = ap.parse_args(argv)
    summaries = [json.loads(p.read_text()) for p in find_summaries(args.inputs)]
    written = write_tables(summaries, args.out_dir)
    written["plot"] = plot_sweep(summaries, Path(args.out_dir) / "privacy_utility.png",
                                 reid_metric=args.reid, utility_metric=args.utility, param=args.param)
    for name, path in written.items():
        print(f"{name}: {path}")
    return written


if __name__ == "__main__":
    main()
