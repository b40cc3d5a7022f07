"""One command that checks a GPU (or a CPU) end to end, on the fixture weights (no real weights needed).

    ./run python benchmarks/gpu_check.py                          # the first GPU, official 1024 px: < 8 min
    ./run python benchmarks/gpu_check.py --json gpu.json --device cuda:1
    ./run python benchmarks/gpu_check.py --device cpu --quick     # the embedded networks on the CPU: ~1 min

It reports, prints and writes to --json:
- stages: where each stage computed (frame, prepare = detect + align, inversion, fake pool, pairing,
  optimization, summary), from a real tiny `train.py` run with device=<dev> whose every network
  forward is watched (benchmarks/gpu_stages.py), beside the run's own `[estimate]` of each stage;
- precisions: bf16, fp16, fp32, each measured or skipped with the reason (not native here);
- speed: per precision and batch size, seconds per iteration (one Adam step of one image), images/s
  over the configured 50 steps, memory per image (CUDA: torch.cuda.max_memory_allocated above the
  level before; CPU: the process's resident size) and the effective FLOP/s as a share of the device's
  own measured matmul peak in that precision (benchmarks/gpu_speed.py);
- agreement: bf16 and fp16 outcomes (identity distance, attribute loss, attributes) vs fp32, next to
  fp32 from jittered latents (the optimization's own sensitivity): with a bound on the embedded
  networks (real weights, 16 images x 50 steps), as figures only on the official architectures
  (their fixture weights are random networks, whose outcomes mean nothing);
- ddp: a 2-rank `train.py trainer=ddp` run when 2 GPUs are visible, else why it was skipped.
The exit code is 1 when a check fails (a stage off the device, an agreement past its bound, a failed run).

Problems (benchmarks/perf_problem.py): `official` = genforce StyleGAN2 1024 px + e4e + ArcFace IR-SE-50
+ FaRL with the equivalence fixtures' deterministic weights (written once to --weights-dir);
`embedded` = the DCGAN 64 px default. `auto`: embedded for --device cpu --quick, else official.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.gpu_speed import PRECISIONS, agreement, device_peak, flops_per_iter, native, speed, to_device  # noqa: E402
from benchmarks.gpu_stages import ddp_run, stages_ok, watched_run  # noqa: E402
from benchmarks.perf_problem import build_problem  # noqa: E402
from falco.precision import cpu_bf16_native  # noqa: E402

MB = 2**20
QUICK_CPU_THREADS = 1  # torch threads of --device cpu --quick (see with_defaults)
OFFICIAL_AGREE_STEPS = 10  # at most this many steps in the official (fixture-weight) agreement figures
OFFICIAL_AGREE_IMAGES = 4  # at most this many images in them


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                    help="cuda, cuda:N or cpu (default: cuda when a GPU is visible)")
    ap.add_argument("--quick", action="store_true",
                    help="fewer batch sizes, steps and images; on the CPU the embedded networks (~1 min)")
    ap.add_argument("--problem", choices=["auto", "embedded", "official"], default="auto",
                    help="which networks (auto: embedded for --device cpu --quick, else official 1024 px)")
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=None,
                    help="batch sizes timed (default: 1 4 8 on a GPU, 1 4 with --quick; 1 2 on a CPU)")
    ap.add_argument("--iters", type=int, default=None, help="timed Adam steps per measurement (default 3, quick 2)")
    ap.add_argument("--agree-steps", type=int, default=None,
                    help="Adam steps of the precision agreement runs (default 50, quick 5; official: at most "
                         f"{OFFICIAL_AGREE_STEPS})")
    ap.add_argument("--agree-images", type=int, default=None,
                    help="images in the agreement runs (default 16, quick 2; official: at most "
                         f"{OFFICIAL_AGREE_IMAGES})")
    ap.add_argument("--weights-dir", type=Path, default=ROOT / ".cache" / "perf" / "fixture_weights",
                    help="where the official architectures' fixture checkpoints are written (reused)")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch threads (default: torch's choice; 1 with --device cpu --quick)")
    ap.add_argument("--json", type=Path, default=ROOT / ".cache" / "perf" / "gpu_check.json",
                    help="write the figures here")
    args = ap.parse_args(argv)
    return with_defaults(args)


def with_defaults(args: argparse.Namespace) -> argparse.Namespace:
    """Fill the sizes left unset from --device and --quick."""
    cpu = torch.device(args.device).type == "cpu"
    if args.problem == "auto":
        args.problem = "embedded" if cpu and args.quick else "official"
    if args.batch_sizes is None:
        args.batch_sizes = [1, 2] if cpu else [1, 4] if args.quick else [1, 4, 8]
    args.iters = args.iters or (2 if args.quick else 3)
    args.agree_steps = args.agree_steps or (5 if args.quick else 50)
    args.agree_images = args.agree_images or (2 if args.quick else 16)
    args.peak_seconds = 0.25 if args.quick else 0.6  # seconds of each matmul size of the peak measurement
    # A quick CPU check is a smoke test: on a shared 2-core machine two threads spin against the other
    # processes' (measured under load: 212 s with two, 21 s with one), one keeps it short anywhere.
    args.threads = args.threads or (QUICK_CPU_THREADS if cpu and args.quick else None)
    return args


def host(device: str) -> dict:
    """What the figures were measured on."""
    kind = torch.device(device).type
    name = torch.cuda.get_device_name(torch.device(device)) if kind == "cuda" else cpu_name()
    info = {"device": device, "device_name": name, "torch": torch.__version__, "cpu_count": os.cpu_count(),
            "threads": torch.get_num_threads(), "cpu_bf16_native": cpu_bf16_native(),
            "gpus": torch.cuda.device_count() if torch.cuda.is_available() else 0}
    if kind == "cuda":
        info["tf32"] = {"matmul": torch.backends.cuda.matmul.allow_tf32, "cudnn": torch.backends.cudnn.allow_tf32}
    return info


def cpu_name() -> str:
    """The CPU's model name (/proc/cpuinfo), else what the platform says."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or "cpu"


def precisions_of(device: str) -> dict[str, dict]:
    """Each precision: native on this device, or skipped with the reason."""
    out = {}
    for p in PRECISIONS:
        reason = native(p, device)
        out[p] = {"native": reason is None, **({"skipped": reason} if reason else {})}
    return out


def measure_problem(args, skipped: dict[str, str | None]) -> dict:
    """Matmul peaks, speed rows and the agreement on the problem's networks, on the device."""
    measured = [p for p in PRECISIONS if skipped[p] is None]
    print(f"[peak] matmul peak of {', '.join(measured)} on {args.device} ...", flush=True)
    peaks = {p: device_peak(p, args.device, args.peak_seconds) for p in measured}
    agree_images = min(args.agree_images, OFFICIAL_AGREE_IMAGES) if args.problem == "official" else args.agree_images
    images = max(*args.batch_sizes, agree_images)
    print(f"[problem] {args.problem}: {images} originals ...", flush=True)
    problem = to_device(build_problem(args.problem, images, args.weights_dir), args.device)
    flops = flops_per_iter(problem, args.device)
    out = {"problem": problem.info(), "matmul_peak": peaks, "flops_per_iter": flops,
           "speed": speed(problem, args.batch_sizes, measured, args.iters, args.device, peaks, flops)}
    out["agreement"] = agreements(args, skipped, problem)
    return out


def agreements(args, skipped: dict[str, str | None], problem) -> dict:
    """Bounded on the embedded networks (real weights); on the official architectures, whose fixture
    weights make outcomes meaningless, the figures only (a few images and steps)."""
    if problem.name != "official":
        return {"embedded": agreement(problem, skipped, args.agree_steps, args.agree_images, args.device),
                "official": None}
    fixture = agreement(problem, skipped, min(args.agree_steps, OFFICIAL_AGREE_STEPS),
                        min(args.agree_images, OFFICIAL_AGREE_IMAGES), args.device, bounded=False)
    print(f"[problem] embedded: {args.agree_images} originals (the bounded agreement) ...", flush=True)
    real = to_device(build_problem("embedded", args.agree_images, args.weights_dir), args.device)
    return {"embedded": agreement(real, skipped, args.agree_steps, args.agree_images, args.device),
            "official": fixture}


def verdicts(report: dict) -> dict[str, bool | None]:
    """Each check: True (passed), False (failed) or None (not run)."""
    run, ddp = report["stage_run"], report["ddp"]
    timed = [r for r in report["speed"] if "skipped" not in r]
    agreed = [v for v in report["agreement"]["embedded"].values() if isinstance(v, dict) and "within_bounds" in v]
    return {"stage_devices": stages_ok(report["stages"], report["host"]["device"]),
            "stage_run_images_ok": run["images"] > 0 and run["images_ok"] == run["images"],
            "speed_measured": bool(timed) and all(r["s_per_iter"] > 0 for r in timed),
            "agreement_within_bounds": bool(agreed) and all(v["within_bounds"] for v in agreed),
            "ddp": None if "skipped" in ddp else ddp["returncode"] == 0 and ddp["images_ok"] == ddp["expected_images"]}


def stage_lines(r: dict) -> list[str]:
    h = r["host"]
    lines = [f"stages (tiny train.py run, device={h['device']}, {r['stage_run']['precision']}):"]
    for stage, s in r["stages"].items():
        est = r["stage_run"]["estimate"].get(stage)
        nets = ", ".join(f"{k} {'/'.join(v)}" for k, v in s["networks"].items())
        took = "-" if s["seconds"] is None else f"{s['seconds']:.1f} s"
        guess = f" (estimated {est['seconds']:.1f} s)" if est else ""
        lines.append(f"  {stage:<13} {s['device']:<8} {took}{guess}  [{nets}]")
    return lines


def speed_lines(r: dict) -> list[str]:
    lines = [f"precision {p}: " + ("native" if v["native"] else f"skipped: {v['skipped']}")
             for p, v in r["precisions"].items()]
    lines += [f"matmul peak {p}: {v['flops'] / 1e12:.2f} TFLOP/s (size {v['size']:.0f})"
              for p, v in r["matmul_peak"].items()]
    lines.append(f"  {'prec':<5} {'batch':>5} {'s/iter':>9} {'img/s':>9} {'MB/image':>9} {'% peak':>7}")
    for s in r["speed"]:
        head = f"  {s['precision']:<5} {s['batch']:>5}"
        lines.append(f"{head}  skipped: {s['skipped']}" if "skipped" in s else
                     f"{head} {s['s_per_iter']:9.4f} {s['images_per_s']:9.3f} {s['memory_per_image'] / MB:9.0f} "
                     f"{100 * s['peak_share']:7.1f}")
    return lines


def agreement_lines(r: dict) -> list[str]:
    lines = []
    for name, agree in r["agreement"].items():
        if agree is None:
            continue
        bound = " (fixture weights: no bound)"
        if agree["bounded"]:
            bound = f" (bound {agree['bound_max_abs_distance']:.2e})"
        for key, v in agree.items():
            if isinstance(v, dict):
                lines.append(f"agreement {name} {key}: " + (f"skipped: {v['skipped']}" if "skipped" in v else
                             f"max |distance gap| {v['max_abs_distance']:.2e}{bound}, "
                             f"decision flips {v['decision_flips']}/{v['images']} after {v['steps']} steps"))
    return lines


def tail_lines(r: dict) -> list[str]:
    ddp = r["ddp"]
    done = "" if "skipped" in ddp else f"{ddp['images_ok']}/{ddp['expected_images']} images"
    lines = ["ddp: " + (f"skipped: {ddp['skipped']}" if "skipped" in ddp else
                        f"exit {ddp['returncode']}, {done}, {ddp['seconds']:.0f} s")]
    marks = {None: "-", True: "ok", False: "FAILED"}
    return [*lines, "checks: " + ", ".join(f"{k} {marks[v]}" for k, v in r["checks"].items())]


def print_report(r: dict) -> None:
    h = r["host"]
    print(f"\n== gpu_check on {h['device']} ({h['device_name']}), torch {h['torch']}, "
          f"{r['problem']['resolution']} px ({r['problem_name']}), {r['seconds']:.0f} s")
    print("\n".join(stage_lines(r) + speed_lines(r) + agreement_lines(r) + tail_lines(r)), flush=True)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    report: dict = {"host": host(args.device), "quick": args.quick, "problem_name": args.problem,
                    "precisions": precisions_of(args.device)}
    skipped = {p: v.get("skipped") for p, v in report["precisions"].items()}
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as tmp:
        work = Path(tmp)
        print(f"[stages] tiny train.py run on {args.device} ({args.problem}) ...", flush=True)
        report["stage_run"] = watched_run(args.problem, args.device, work, args.weights_dir)
        report["stages"] = report["stage_run"].pop("stages")
        gc.collect()  # the run's networks go before the problem's are built
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        measured_at = time.perf_counter()
        report.update(measure_problem(args, skipped))
        ddp_at = time.perf_counter()
        report["ddp"] = ddp_run(args.problem, args.device, work, args.weights_dir)
    end = time.perf_counter()
    report["seconds"] = end - started
    report["phase_seconds"] = {"stage_run": measured_at - started, "measurements": ddp_at - measured_at,
                               "ddp": end - ddp_at}
    report["checks"] = verdicts(report)
    report["ok"] = all(v is not False for v in report["checks"].values())
    print_report(report)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=1, default=float))
    print(f"figures written to {args.json}")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
