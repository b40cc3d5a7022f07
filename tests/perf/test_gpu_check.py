"""`benchmarks/gpu_check.py --device cpu --quick` as a person runs it: the embedded networks on the
CPU, every part of the report present, and the values that break when the feature breaks: every
stage of the real tiny run computed on the CPU (and was estimated before it), every measured
precision timed, the ones this CPU cannot do natively skipped with their reason, the reduced
precision's outcomes within their bound of fp32's, DDP skipped (a CPU is checked) with its reason."""

from __future__ import annotations

import json
import math
import subprocess
import sys

from falco.precision import cpu_bf16_native
from tests.conftest import ROOT

STAGES = ["frame", "prepare", "inversion", "fake pool", "pairing", "optimization", "summary"]


def run_check(tmp_path) -> tuple[dict, str]:
    out = tmp_path / "gpu_check.json"
    proc = subprocess.run([sys.executable, "benchmarks/gpu_check.py", "--device", "cpu", "--quick", "--json", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-3000:])
    return json.loads(out.read_text()), proc.stdout


def check_stages(report: dict) -> None:
    assert list(report["stages"]) == STAGES
    for stage, s in report["stages"].items():
        assert s["device"] == "cpu" and s["networks"], stage  # some network computed, all of it on the CPU
        assert all(devices == ["cpu"] for devices in s["networks"].values()) and s["seconds"] > 0, stage
    assert set(report["stages"]["optimization"]["networks"]) == {"generator", "identity", "attributes"}
    assert "detector" in report["stages"]["prepare"]["networks"]
    run = report["stage_run"]
    assert run["images"] == run["images_ok"] == run["processed"] == 2
    # the run printed its estimate first (train.py with estimate=true), every stage a positive time
    assert list(run["estimate"]) == STAGES and all(e["seconds"] > 0 for e in run["estimate"].values())


def check_precisions(report: dict) -> list[str]:
    """The precisions this CPU computes natively (measured); the others carry their reason."""
    p = report["precisions"]
    assert p["fp32"] == {"native": True}
    assert not p["fp16"]["native"] and "GPU" in p["fp16"]["skipped"]
    if cpu_bf16_native():
        assert p["bf16"] == {"native": True}
    else:
        assert not p["bf16"]["native"] and "emulated" in p["bf16"]["skipped"]
    return [k for k in ("bf16", "fp16", "fp32") if p[k]["native"]]


def check_speed(report: dict, measured: list[str]) -> None:
    assert set(report["matmul_peak"]) == set(measured) and all(v["flops"] > 0 for v in report["matmul_peak"].values())
    assert [(r["precision"], r["batch"]) for r in report["speed"]] == [(p, b) for p in measured for b in (1, 2)]
    assert report["flops_per_iter"] > 0
    for r in report["speed"]:
        assert r["s_per_iter"] > 0 and r["s_per_step"] >= r["s_per_iter"] and r["images_per_s"] > 0, r
        assert r["memory_kind"] == "process_rss" and r["memory_per_image"] >= 0 and r["memory_peak"] > 0, r
        assert r["peak_share"] > 0 and math.isfinite(r["peak_share"]), r


def check_agreement(report: dict, measured: list[str]) -> None:
    assert report["agreement"]["official"] is None  # the embedded problem: the bounded agreement only
    agree = report["agreement"]["embedded"]
    bound = agree["bound_max_abs_distance"]
    assert agree["problem"] == "embedded" and agree["bounded"] is True
    assert bound == 0.1 * agree["same_person_below"] > 0
    computed = ["fp32_jitter0.0001_vs_fp32"] + [f"{p}_vs_fp32" for p in ("bf16", "fp16") if p in measured]
    for key in computed:
        v = agree[key]
        assert v["images"] == 2 and v["steps"] == 5 and v["within_bounds"] is True, (key, v)
        assert 0 <= v["max_abs_distance"] <= bound and 0 <= v["decision_flips"] <= v["images"], (key, v)
        assert math.isfinite(v["max_abs_attr_loss"]) and "mean_distance" in v["aggregates"], (key, v)
    for p in ("bf16", "fp16"):
        if p not in measured:
            assert agree[f"{p}_vs_fp32"]["skipped"] == report["precisions"][p]["skipped"]


def test_cpu_quick_check_reports_devices_speed_and_agreement(tmp_path):
    report, stdout = run_check(tmp_path)
    assert report["host"]["device"] == "cpu" and report["problem_name"] == "embedded" and report["quick"]
    assert report["host"]["threads"] == 1  # the quick CPU check's own thread count
    check_stages(report)
    measured = check_precisions(report)
    check_speed(report, measured)
    check_agreement(report, measured)
    assert report["ddp"]["skipped"] == "the 2-rank DDP run checks GPUs; the device checked is cpu"
    assert report["checks"] == {"stage_devices": True, "stage_run_images_ok": True, "speed_measured": True,
                                "agreement_within_bounds": True, "ddp": None} and report["ok"] is True
    for text in ("stages (tiny train.py run, device=cpu", "matmul peak fp32", "agreement embedded fp32_jitter",
                 "ddp: skipped", "checks: stage_devices ok"):
        assert text in stdout
