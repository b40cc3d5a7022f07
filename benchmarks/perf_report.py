"""The benchmark's printed report (the JSON holds the same figures, unrounded)."""

from __future__ import annotations

MB = 2**20


def linear_fit(xs: list[float], ys: list[float]) -> tuple[float, float, float]:
    """Least-squares y = a + b x; returns (a, b, largest residual relative to y)."""
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    var = sum((x - mx) ** 2 for x in xs)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / var if var else 0.0
    a = my - b * mx
    worst = max(abs(a + b * x - y) / max(abs(y), 1.0) for x, y in zip(xs, ys, strict=True))
    return a, b, worst


def ours_table(config: dict, peak: float) -> list[str]:
    a = config["official"]
    lines = [f"  {'batch':>5}  {'s/iter':>7} {'img/s':>8} {'x(a)':>6} {'eff GFLOP/s':>11} {'%peak':>6} "
             f"{'GFLOP/it':>8} {'setup s':>7} {'warm-up s':>9} {'MB/img':>7} {'MB':>7}"]
    for r in config["ours"]:
        eff = a["flops_per_iter"] / r["s_per_iter"]
        done = "-" if r["flops_per_iter"] is None else f"{r['flops_per_iter'] / 1e9:.1f}"
        lines.append(f"  {r['batch']:>5}{' ' if r['quiet'] else '*'}{r['s_per_iter']:8.3f} {r['images_per_s']:8.4f} "
                     f"{r['images_per_s'] / a['images_per_s']:6.1f} {eff / 1e9:11.1f} {100 * eff / peak:6.1f} "
                     f"{done:>8} {r['setup_s']:7.2f} {r['warmup_s']:9.1f} "
                     f"{r['mem_in_flight_per_image'] / MB:7.0f} {r['mem_in_flight'] / MB:7.0f}")
    return lines


def memory_lines(config: dict) -> list[str]:
    rows = config["ours"]
    if len(rows) < 2:
        return []
    a, b, worst = linear_fit([r["batch"] for r in rows], [r["mem_in_flight"] / MB for r in rows])
    return [f"  memory in flight ~ {a:.0f} MB + {b:.0f} MB x batch (largest residual {100 * worst:.0f}%)"]


def check_lines(checks: dict) -> list[str]:
    lines = [f"  fp32 (b) batch 2 vs (a): first-step gradient max|diff| / max|grad| "
             f"{checks['fp32_gradient_rel_gap']:.1e} (rounding scale, (b) batch 1 vs 2: "
             f"{checks['fp32_gradient_rel_gap_b1_vs_b2']:.1e}); latents after {checks['check_steps']} steps max|diff| "
             f"{checks['fp32_b_vs_a_batch2_max_abs']:.2e} (batch 1: {checks['fp32_b_vs_a_batch1_max_abs']:.2e}; "
             f"latent scale {checks['latent_scale']:.2f}, lr {checks['lr']:g})",
             f"  fp32 batch-invariant (b) (the 32-true default) batch 2 vs (a): latents max|diff| "
             f"{checks['fp32_invariant_b_vs_a_batch2_max_abs']:.2e}",
             "  outcomes (per-image max |diff| vs fp32 (b); then the aggregates a summary reports):",
             "    fp32 (b): " + aggregate_text(checks["fp32_aggregates"])]
    for key, c in checks.items():
        if isinstance(c, dict) and "decision_flips" in c:
            diffs = ", ".join(f"{k.removeprefix('max_abs_')} {v:.3g}" for k, v in c.items() if k.startswith("max_abs_"))
            lines.append(f"    {key} ({c['images']} images x {c['steps']} steps): {diffs}; "
                         f"same-person decisions flipped {c['decision_flips']}")
            lines.append("      " + aggregate_text(c["aggregates"]))
    return lines


def aggregate_text(agg: dict) -> str:
    return ", ".join(f"{k} {v:.3g}" for k, v in agg.items())


def lightning_lines(light: dict | None) -> list[str]:
    if not light:
        return []
    return [f"  Lightning predict vs direct predict_step ({light['batches']} batches of {light['batch']}, "
            f"{light['steps']} steps): {light['lightning_s']:.2f} s vs {light['direct_s']:.2f} s, "
            f"overhead {100 * light['overhead']:+.1f}%",
            f"  Lightning memory in flight: 1 batch {light['mem_in_flight_1_batches'] / MB:.0f} MB, "
            f"3 batches {light['mem_in_flight_3_batches'] / MB:.0f} MB"]


def print_report(summary: dict) -> None:
    # "% of peak" is against the matmul peak of (b)'s dtype (fp16 runs count against bf16's)
    peak = summary["matmul_peak"]["fp32" if summary["precision"] == "fp32" else "bf16"]["flops"]
    print(f"\nmatmul peak (this process): bf16 {peak / 1e9:.0f} GFLOP/s at the start "
          f"({summary['matmul_peak']['bf16_end']['flops'] / 1e9:.0f} at the end), "
          f"fp32 {summary['matmul_peak']['fp32']['flops'] / 1e9:.0f} GFLOP/s; threads {summary['threads']}")
    for config in summary["configs"]:
        a, info = config["official"], config["info"]
        print(f"\n== {config['name']}: {info['generator_class']} {info['resolution']} px, {info['identity_class']}, "
              f"{info['attributes_class']}; {info['steps_per_image']} steps per image ==")
        print(f"(a) official-style, batch 1, fp32: {a['s_per_iter']:.3f}{'' if a['quiet'] else '*'} s/iter, "
              f"{a['images_per_s']:.4f} img/s, "
              f"{a['flops_per_iter'] / 1e9:.1f} GFLOP/iter ({a['flops_per_iter'] / a['s_per_iter'] / 1e9:.1f} "
              f"GFLOP/s, {100 * a['flops_per_iter'] / a['s_per_iter'] / peak:.1f}% of peak), warm-up "
              f"{a['warmup_s']:.1f} s, memory in flight {a['mem_in_flight'] / MB:.0f} MB")
        print(f"(b) ours, {summary['precision']}{' + torch.compile' if summary['compile'] else ''} "
              "(x(a) = images/s ratio; effective FLOP/s = (a)'s FLOPs per iteration / (b)'s time per iteration):")
        m = config["machine"]
        print(f"  machine during this config: other processes used {100 * m['others_cpu_share']:.0f}% of the "
              f"CPUs, this one {100 * m['own_cpu_share']:.0f}%; load average {m['load_average']}")
        for line in ours_table(config, peak) + memory_lines(config) + check_lines(config["checks"]) \
                + lightning_lines(config["lightning"]):
            print(line)
    print("* = no timed step ran with other processes below 10% of the CPUs: the median of all steps")
    print(f"\nload average: start {summary['load_average_start']}, end {summary['load_average_end']}; "
          f"total {summary['seconds'] / 60:.1f} min")
