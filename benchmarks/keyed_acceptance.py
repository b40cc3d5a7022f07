"""Acceptance experiment of the keyed mode: 50 identities x 4 augmented views, two keys.

    .venv/bin/python benchmarks/keyed_acceptance.py [--out DIR] [--identities 50] [--views 4]
        [--wrong-keys 10] [--no-falco] [hydra overrides ...]       # e.g. method.steps=30
Runs already finished in DIR are reused (delete them to redo), so re-running only redoes the report.

Runs on the embedded default (synthetic faces; views differ by crop, scale, rotation, colour
and JPEG): `method=keyed` under key A, again under key B (diversity), and plain FALCO on the
same data (the anonymity reference), then evaluation/keyed_metrics on run A with 10 random
wrong keys. Judges: the held-out recognizers of the run's config first (no loss uses them;
each image aligned by the attacker's detector), then the recognizer the loss used (WHITE-BOX;
authentication is the key holder's and uses it by design); every figure is printed next to
the same judge's unrelated-faces false-match rate. Not a test: it reports numbers and whether each
acceptance target (TARGETS below) is met, and writes them to DIR/acceptance.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from evaluation.keyed_metrics import (  # noqa: E402
    anonymity,
    build_networks,
    consistency,
    embed,
    format_report,
    heldout_figures,
    keyed_report,
    load_judges,
    load_run,
)
from falco.agreement import gender_age_agreement  # noqa: E402

IDENTITY_TARGETS = {  # name: (path into one judge's figures, comparison, bound)
    "anonymity re-ID (verified as original)": (("anonymity", "verified_as_original"), "<=", 0.10),
    "consistency (same person, same key)": (("consistency", "same_person_verified_same", "share"), ">=", 0.90),
    "diversity (same person, other key)": (("diversity", "same_person_verified_different"), ">=", 0.90),
}
AUTH_TARGET = (("authentication", "correct_key", "top1"), ">=", 0.90)  # the key holder's (run's) recognizer


def compose(overrides: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from falco.config import register

    register()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return hydra_compose("train", overrides=overrides)


def run_one(name: str, overrides: list[str], out: Path) -> float:
    from train import run

    if (out / name / "summary.json").is_file():  # finished earlier: only the report is redone
        print(f"[{name}] already done, reusing {out / name}", flush=True)
        return 0.0
    t0 = time.perf_counter()
    run(compose(overrides), str(out / name))
    seconds = time.perf_counter() - t0
    print(f"[{name}] done in {seconds / 60:.1f} min", flush=True)
    return seconds


def baseline(run_dir: Path) -> dict:
    """FALCO on the same data: anonymity and (absent) consistency, same judges."""
    run = load_run(run_dir)
    judges = load_judges(run.cfg.get("heldout"))
    _, identity, attributes = build_networks(run.cfg)
    below, dist = identity.same_person_below, identity.distance
    e_orig, e_anon = embed(identity, run.originals, run.landmarks), embed(identity, run.anonymized, run.landmarks)
    with torch.no_grad():
        thetas = attributes.crop_thetas(run.landmarks, tuple(run.originals.shape[-2:]))
        att = gender_age_agreement(attributes.predict(run.originals, thetas),
                                   attributes.predict(run.anonymized, thetas))
    return {"heldout": heldout_figures(judges, run) if judges is not None else None,
            "anonymity": anonymity(e_anon, e_orig, run.persons, dist, below),
            "consistency": consistency(e_anon, run.persons, dist, below), "attributes": att}


def verdict(name: str, figures: dict, path: tuple, op: str, bound: float) -> dict | None:
    value = figures
    for p in path:
        value = value.get(p, {}) if isinstance(value, dict) else None
    if not isinstance(value, float):
        return None
    ok = value <= bound if op == "<=" else value >= bound
    return {"target": name, "value": value, "bound": f"{op} {bound}", "met": ok,
            "miss_by": 0.0 if ok else abs(value - bound)}


def verdicts(report: dict) -> list[dict]:
    """Each identity target per judge, held-out first, then authentication and the wrong keys."""
    judges = {f"held-out {k}": v for k, v in ((report.get("heldout") or {}).get("recognizers") or {}).items()}
    judges[f"WHITE-BOX {report['judge']}"] = report
    out = [verdict(f"{target} [{judge}]", figures, *bound) for judge, figures in judges.items()
           for target, bound in IDENTITY_TARGETS.items()]
    out.append(verdict(f"authentication top-1, correct key [WHITE-BOX {report['judge']}]", report, *AUTH_TARGET))
    out = [v for v in out if v is not None]
    wrong = report["authentication"]["wrong_keys"]
    n = len(wrong)
    # The acceptance test: per-image top-1 inside the equal-tailed Bin(N, 1/P) interval. A person's
    # views land on the same wrong identity together, so hits come in blocks and this interval
    # is too narrow on both sides (0 hits happens often); the per-person test is the sound one.
    checks = {"per image, two-sided (the acceptance test)": [w["within_chance_interval"] for w in wrong],
              "per image, not above chance (one-sided)": [w["top1"] <= w["chance_interval"][1] for w in wrong],
              "per person (majority vote), two-sided": [w["per_person_within"] for w in wrong]}
    for name, within in checks.items():
        out.append({"target": f"wrong keys within the 95% chance interval, {name}", "value": sum(within),
                    "bound": f"== {n}", "met": all(within)})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "keyed_acceptance")
    parser.add_argument("--identities", type=int, default=50)
    parser.add_argument("--views", type=int, default=4)
    parser.add_argument("--wrong-keys", type=int, default=10)
    parser.add_argument("--no-falco", action="store_true", help="skip the FALCO reference run")
    args, extra = parser.parse_known_args()
    torch.set_num_threads(2)
    from falco.keyed.key import write_new_key

    args.out.mkdir(parents=True, exist_ok=True)
    keys = args.out / "keys"  # the key holder's files: outside every run directory
    keys.mkdir(exist_ok=True)
    for k in ("A", "B"):
        if not (keys / f"{k}.key").exists():
            write_new_key(keys / f"{k}.key")
    common = [f"data.identities={args.identities}", f"data.views={args.views}", "data.augment=true",
              "inversion=none", "logger=none", "trainer.enable_progress_bar=false",
              f"cache_dir={args.out / 'cache'}", *extra]
    times = {}
    for name in ("keyed_A", "keyed_B"):
        times[name] = run_one(name, [*common, "method=keyed", f"method.key_file={keys / (name[-1] + '.key')}"],
                              args.out)
    if not args.no_falco:
        times["falco"] = run_one("falco", [*common, "method=falco"], args.out)
    report = keyed_report(args.out / "keyed_A", args.out / "keyed_B", wrong_keys=args.wrong_keys)
    print("\n" + format_report(report))
    result = {"report": report, "minutes": {k: v / 60 for k, v in times.items()}, "verdicts": verdicts(report)}
    if not args.no_falco:
        result["falco_reference"] = ref = baseline(args.out / "falco")
        for judge, figures in [*((ref.get("heldout") or {}).get("recognizers") or {}).items(), ("WHITE-BOX", ref)]:
            a = figures["anonymity"]
            print(f"FALCO on the same data [{judge}]: verified as original {a['verified_as_original']:.1%}, "
                  f"identification top-1 {a['identification_top1']:.1%}; same person verified same "
                  f"{figures['consistency']['same_person_verified_same']['share']:.1%}")
        print(f"FALCO on the same data, attributes [WHITE-BOX]: {ref['attributes']}")
    print("\nacceptance:")
    for v in result["verdicts"]:
        print(f"  {'MET ' if v['met'] else 'MISS'} {v['target']}: {v['value']} (target {v['bound']})")
    (args.out / "acceptance.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
