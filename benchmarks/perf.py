"""Speed of the latent optimization: the official-style loop (a) against ours (b), one process.

    .venv/bin/python benchmarks/perf.py                       # both configs, defaults (~10 min on 2 cores)
    .venv/bin/python benchmarks/perf.py --config official --iters 3 --batch-sizes 1 2 4 --json perf.json
    .venv/bin/python benchmarks/perf.py --config embedded --compile

(a) benchmarks/harness/official_loop.py: batch 1, float32, fresh Adam per image, the targets recomputed
    from the original at every step, generator and attribute network not frozen (their weight
    gradients are computed), like the official anonymize.py.
(b) falco/optimize.py::optimize_latents as a run calls it: frozen networks, targets once per
    batch, bf16 autocast where the CPU has AVX512-BF16/AMX, else fp32 (or --precision), the
    fixed W+ layers' work done once per batch, frozen weights cast once, channels_last StyleGAN2
    tail, batches of --batch-sizes, no host syncs.
Both on the same networks, built from the project's Hydra configs: `embedded` (the default
DCGAN 64 px + dlib ResNet + dlib/Cydral age-gender) and `official` (genforce StyleGAN2 1024 px
+ ArcFace IR-SE-50 + FaRL ViT-B/16 with the equivalence fixtures' deterministic weights,
written once to --weights-dir in the official containers).

Reported per config: seconds per iteration and images/s of (a) and of (b) at each batch size
(an iteration is one Adam step of one image; images/s assumes the configured 50 steps plus
(b)'s per-batch set-up), the ratio (b)/(a), FLOPs of one (a) iteration (FlopCounterMode) and
the effective FLOP/s (those FLOPs over (b)'s time per image-iteration) as a share of the matmul
peak of (b)'s dtype (bf16, or fp32) measured at the start, memory in flight per batch size
(peak resident memory above the level before the call), (b) float32 vs (a) latents (batch
invariance), (b)'s dtype vs float32 outcomes, and (embedded) the Lightning predict loop's overhead over calling
`predict_step` directly and its peak memory over 1 vs 3 batches. Warm-up (first calls, oneDNN
kernel creation, torch.compile) is excluded from the timings and reported. The load average
is printed at start and end: other processes on the machine slow both (a) and (b).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.harness.checks import outcome_tolerance  # noqa: E402
from benchmarks.harness.lightning_overhead import PRECISIONS, lightning_overhead  # noqa: E402
from benchmarks.harness.machine import Share, wait_for_idle  # noqa: E402
from benchmarks.harness.peak import matmul_peak  # noqa: E402
from benchmarks.harness.problem import Problem  # noqa: E402
from benchmarks.harness.timing import measure_official, measure_ours  # noqa: E402
from benchmarks.perf_problem import build_problem  # noqa: E402
from benchmarks.perf_report import print_report  # noqa: E402
from falco.precision import resolve_precision  # noqa: E402


@dataclass
class ConfigResult:
    name: str
    info: dict
    official: dict
    ours: list[dict] = field(default_factory=list)
    checks: dict = field(default_factory=dict)
    lightning: dict | None = None
    machine: dict = field(default_factory=dict)


def run_config(problem: Problem, args) -> ConfigResult:
    """(a) once at batch 1, (b) at each batch size, then the correctness checks."""
    idle = wait_for_idle(args.wait_idle) if args.wait_idle else {}
    share = Share().start()
    print(f"[{problem.name}] official-style loop (a) ...", flush=True)
    official = measure_official(problem, args.iters)
    result = ConfigResult(problem.name, problem.info(), official)
    for b in args.batch_sizes:
        print(f"[{problem.name}] ours (b), batch {b} ...", flush=True)
        result.ours.append(measure_ours(problem, b, args.iters, args.precision, compile_step=args.compile))
    print(f"[{problem.name}] checks ...", flush=True)
    embedded = problem.name == "embedded"  # the full-size outcome runs are kept short (random weights anyway)
    result.checks = outcome_tolerance(problem, official, args.precision,
                                      args.outcome_steps if embedded else args.iters,
                                      args.outcome_images if embedded else min(args.outcome_images, 4))
    official.pop("latents")  # only the checks use it
    if problem.name == "embedded" and args.lightning:
        print(f"[{problem.name}] Lightning overhead ...", flush=True)
        result.lightning = lightning_overhead(problem, args.lightning_batch, args.lightning_steps, args.precision)
    result.machine = {**share.stop(), "load_average": os.getloadavg(), **idle}
    return result


def chosen_precision(name: str) -> tuple[str, str]:
    """--precision -> ((b)'s precision, why): `auto` by this CPU (falco/precision.py); an explicit
    bf16 on a CPU that emulates it is kept, with a warning giving the slowdown."""
    choice = resolve_precision("auto" if name == "auto" else PRECISIONS[name], "cpu")
    return {v: k for k, v in PRECISIONS.items()}[choice.precision], choice.reason


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", choices=["embedded", "official", "both"], default="both",
                    help="which networks: the embedded default, FALCO's official architectures, or both")
    ap.add_argument("--iters", type=int, default=3, help="timed Adam steps per measurement (after a warm-up step)")
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=None,
                    help="batch sizes of (b) (default: 1 2 4 official, 1 4 16 embedded)")
    ap.add_argument("--precision", choices=["auto", "bf16", "fp16", "fp32"], default="auto",
                    help="(b)'s autocast dtype; auto: bf16 where this CPU computes it natively (AVX512-BF16/AMX), "
                         "else fp32 (emulated bf16 is ~50x slower); fp16 is for GPUs (on CPU it is slow and unscaled)")
    ap.add_argument("--compile", action="store_true",
                    help="torch.compile the loss networks and the StyleGAN2 tail in (b) (needs a C++ compiler; "
                         "the compile time is reported as warm-up)")
    ap.add_argument("--outcome-steps", type=int, default=50,
                    help="embedded: steps of the bf16-vs-fp32 outcome comparison (official: --iters)")
    ap.add_argument("--outcome-images", type=int, default=16,
                    help="images in the outcome comparison (official: at most 4)")
    ap.add_argument("--no-lightning", dest="lightning", action="store_false", help="skip the Lightning overhead part")
    ap.add_argument("--lightning-batch", type=int, default=8, help="batch size of the Lightning overhead part")
    ap.add_argument("--lightning-steps", type=int, default=50, help="steps per batch in the Lightning part")
    ap.add_argument("--weights-dir", type=Path, default=ROOT / ".cache" / "perf" / "fixture_weights",
                    help="where the official architectures' fixture checkpoints are written (reused)")
    ap.add_argument("--wait-idle", type=float, default=0.0,
                    help="before each config, wait up to this many seconds for other processes to leave "
                         "the CPUs idle (shared machines)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--json", type=Path, default=ROOT / ".cache" / "perf" / "perf.json", help="write all figures here")
    return ap.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    args.precision, precision_reason = chosen_precision(args.precision)
    print(f"precision of (b): {precision_reason}", flush=True)
    started, load_start = time.time(), os.getloadavg()
    print(f"load average at start: {load_start}; torch threads: {torch.get_num_threads()}", flush=True)
    peak = {"bf16": matmul_peak(torch.bfloat16), "fp32": matmul_peak(torch.float32)}
    configs = ["embedded", "official"] if args.config == "both" else [args.config]
    results = []
    for name in configs:
        sizes = args.batch_sizes or ([1, 4, 16] if name == "embedded" else [1, 2, 4])
        args_for = argparse.Namespace(**{**vars(args), "batch_sizes": sizes})
        problem = build_problem(name, max(*sizes, args.outcome_images, args.lightning_batch), args.weights_dir)
        results.append(run_config(problem, args_for))
        del problem
    peak["bf16_end"] = matmul_peak(torch.bfloat16)
    summary = {"load_average_start": load_start, "load_average_end": os.getloadavg(),
               "seconds": time.time() - started, "threads": torch.get_num_threads(),
               "torch": torch.__version__, "matmul_peak": peak, "precision": args.precision,
               "precision_reason": precision_reason,
               "compile": args.compile, "iters": args.iters,
               "configs": [vars(r) for r in results]}
    print_report(summary)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(summary, indent=1, default=float))
    print(f"figures written to {args.json}")


if __name__ == "__main__":
    main()
