"""Wall time of the README's `./run train` (16 faces, embedded default), cold and warm, per CPU kind.

    .venv/bin/python benchmarks/train_wall.py [--kinds native avx2] [--json train_wall.json] [extra overrides]

For each kind: one `python train.py` with a fresh stage cache (cold: every stage, the
optimization and the summary) and the same command again on that cache into a new run directory
(warm: only the optimization and the summary's outputs). `native` is this CPU as it is; `avx2`
restricts ATen, oneDNN and MKL to their AVX2 kernels (ATEN_CPU_CAPABILITY=avx2, ONEDNN_MAX_CPU_ISA=AVX2,
MKL_ENABLE_INSTRUCTIONS=AVX2)
and tells the precision rule bf16 is emulated (FALCO_CPU_BF16=emulated), so `auto` picks 32-true
as on an AVX2-only CPU: an emulation of that kind on this machine, not a measurement on one.
`sse41` goes further (ATen's baseline kernels, oneDNN's SSE4.1 and MKL's SSE4.2 ones): a CPU slower in fp32 than
most AVX2 ones, as a bound from below. Each kind's fp32 and bf16 1024^2 matmul rate is measured
first, so a row can be set beside a real machine's.
Each row gives the wall time, the precision picked and each loop's time from its progress line,
beside the CPU's model, flags and cores and the other processes' share of the CPUs meanwhile.
Not a test: it reports numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.harness.machine import Share  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
KINDS = {"native": {},
         "avx2": {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2",
                  "FALCO_CPU_BF16": "emulated"},
         # slower still: ATen's baseline kernels, oneDNN's and MKL's SSE4 ones (fp32 below most AVX2 CPUs')
         "sse41": {"ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "SSE41", "MKL_ENABLE_INSTRUCTIONS": "SSE4_2",
                   "FALCO_CPU_BF16": "emulated"}}
# a kind's fp32 and bf16 matmul rate (1024^2), measured in a process started with the kind's environment
RATE = ("import json, torch\nfrom benchmarks.harness.peak import matmul_rate\n"
        "print(json.dumps({str(d).split('.')[-1]: round(matmul_rate(d, 1024) / 1e9, 1) "
        "for d in (torch.float32, torch.bfloat16)}))")
DONE = re.compile(r"\[progress\] (?P<loop>.+?): \d+/\d+ \w+ \(\d+%\) in (?P<h>\d+):(?P<m>\d\d):(?P<s>\d\d)")


def cpu_facts() -> dict:
    """Model, the flags that decide bf16 speed, and the cores this process may use."""
    model, flags = "?", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and model == "?":
                model = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = set(value.split())
    except OSError:
        pass
    wanted = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")
    return {"model": model, "flags": [f for f in wanted if f in flags], "cores": len(os.sched_getaffinity(0))}


def run_train(env: dict, cache: Path, run_dir: Path, extra: list[str]) -> dict:
    """One `python train.py`: wall seconds, precision line, each loop's seconds, CPU shares."""
    share = Share().start()
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "train.py", f"cache_dir={cache}", f"run_dir={run_dir}", *extra],
                          cwd=ROOT, env={**os.environ, **env}, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"train.py failed ({proc.returncode}):\n{proc.stderr[-3000:]}{proc.stdout[-2000:]}")
    loops = {m["loop"]: 3600 * int(m["h"]) + 60 * int(m["m"]) + int(m["s"]) for m in DONE.finditer(proc.stdout)}
    precision = next((line for line in proc.stdout.splitlines() if line.startswith("precision:")), "?")
    return {"wall_s": round(wall, 1), "precision": precision, "loops_s": loops, **share.stop()}


def matmul_gflops(env: dict) -> dict:
    """{"float32": GFLOP/s, "bfloat16": GFLOP/s} of a 1024 x 1024 matmul under the kind's environment."""
    proc = subprocess.run([sys.executable, "-c", RATE], cwd=ROOT, env={**os.environ, **env}, capture_output=True,
                          text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kinds", nargs="+", default=["native", "avx2"], choices=sorted(KINDS))
    ap.add_argument("--json", type=Path, default=None, help="write every figure here")
    ap.add_argument("overrides", nargs="*", help="extra Hydra overrides for both runs")
    args = ap.parse_args()
    report = {"cpu": cpu_facts(), "overrides": args.overrides, "kinds": {}}
    print(f"CPU: {report['cpu']['model']}, {report['cpu']['cores']} cores, flags {' '.join(report['cpu']['flags'])}")
    with tempfile.TemporaryDirectory(prefix="train_wall.") as tmp:
        for kind in args.kinds:
            cache = Path(tmp) / kind / "cache"
            rates = matmul_gflops(KINDS[kind])
            print(f"{kind:6s} matmul 1024: fp32 {rates['float32']}, bf16 {rates['bfloat16']} GFLOP/s", flush=True)
            rows = {run: run_train(KINDS[kind], cache, Path(tmp) / kind / run, args.overrides)
                    for run in ("cold", "warm")}
            report["kinds"][kind] = {"matmul_gflops": rates, **rows}
            for run, r in rows.items():
                loops = ", ".join(f"{k} {v} s" for k, v in r["loops_s"].items())
                others = f"others used {r['others_cpu_share']:.0%} of the CPUs"
                print(f"{kind:6s} {run}: {r['wall_s']:6.1f} s wall ({others})"
                      f"  [{r['precision']}]\n         {loops}", flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
