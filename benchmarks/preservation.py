"""The preservation ablation: held-out (first) and white-box figures of the embedded default under
each preservation knob, on generated faces and on real ones (benchmarks/real_faces.py).

    .venv/bin/python benchmarks/preservation.py [--faces 64] [--variants default ensemble ...]
        [--out preservation.json]

Datasets: `generated` (data=synthetic, --faces), `real` (29 real faces, 5 of them men,
with their true gender), `astronaut` (her alone:
each judge's verdict on her, 0 or 100%; re-identification is meaningless with one face).
Each (dataset, variant) is one `python train.py` into its own run directory; every run shares
one stage cache, so a variant recomputes only what its knobs change. Prints a markdown table
per dataset: re-identification top-1 per held-out recognizer beside chance, SFace diversity
(anonymized vs originals), gender agreement per held-out judge with its ceiling (original vs
its mirror) in brackets, |age difference| of the held-out age judges, on the real faces how
often each gender judge reads the men as men and the women as women (originals -> anonymized,
against the true labels), then the white-box figures. A judge the variant's loss uses is left out
of that run (its cell says so).
Not a test: it reports numbers.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.real_faces import write_real_faces  # noqa: E402
from falco.reid import p_above_chance  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = {  # name -> train.py overrides
    "paper": ["method.views.views=0", "stages.pairing_unique=false"],  # the paper's loss and pairing
    "shared": ["stages.pairing_unique=false"],  # 4 views, each original its nearest fake, shared or not
    "default": [],  # 4 views, no fake shared by two originals
    "ensemble+shared": ["attributes=ensemble", "stages.pairing_unique=false"],  # two attribute families
    "ensemble": ["attributes=ensemble"],  # two attribute families, unique pairing
    "ensemble+weight3": ["attributes=ensemble", "attributes.attr_weight=3.0"],  # two families, 3x their weight
    "ensemble_faceres": ["attributes=ensemble_faceres"],  # dlib nets + FaceRes in the loss (face-api.js judges)
    "weight2+shared": ["attributes.attr_weight=2.0", "stages.pairing_unique=false"],  # twice the attribute weight
    "weight1": ["attributes.attr_weight=1.0"],  # the default until 2026-12-03 (the README's older `default` rows)
    "weight3": ["attributes.attr_weight=3.0"],  # the default's attribute weight, stated
    "weight5": ["attributes.attr_weight=5.0"],  # five and ten times the old default's weight
    "weight10": ["attributes.attr_weight=10.0"],
    "weight3+views8": ["attributes.attr_weight=3.0", "method.views.views=8"],  # the default with 8 views
    # other faces (data=synthetic only): a check on faces no knob was chosen on
    "seed1": ["data.seed=1"],
    "seed1+weight1": ["data.seed=1", "attributes.attr_weight=1.0"],
    "seed1+views8": ["data.seed=1", "method.views.views=8"],
    "margin0.7": ["identity.margin=0.7"],  # a smaller identity push (dlib's same-person rule is < 0.6)
    "seed1+margin0.7": ["data.seed=1", "identity.margin=0.7"],
    "fp32": ["trainer.precision=32-true"],  # the default in float32 (where auto picks bf16)
    "views8": ["method.views.views=8"],  # 8 random views in the attribute loss
    # views that zoom out (and in) by up to 1.3x / 1.6x: the attribute loss also sees hair and jaw
    "zoom0.3": ["method.views.zoom=0.3"],
    "zoom0.6": ["method.views.zoom=0.6"],
    "pool4096": ["stages.pool_size=4096"],  # 4x the fake pool: closer fakes to pair with
    "pool4096+margin0.85": ["stages.pool_size=4096", "identity.margin=0.85"],  # closer fakes, pushed farther
    "pairviews4": ["stages.pairing_views=4"],  # pairing features averaged over 4 fixed random views
    "pool4096+pairviews4": ["stages.pool_size=4096", "stages.pairing_views=4"],
    "pool16384": ["stages.pool_size=16384"],  # 16x the fake pool
    "steps100": ["method.steps=100"],  # twice the Adam steps
    # no two originals start from fakes the run's recognizer calls one person (stages.pairing_distinct)
    "distinct": ["stages.pairing_distinct=true"],
    "pool4096+distinct": ["stages.pool_size=4096", "stages.pairing_distinct=true"],
    "pool4096+margin0.85+distinct": ["stages.pool_size=4096", "identity.margin=0.85", "stages.pairing_distinct=true"],
    "inversion": ["method.init=inversion", "inversion=projection"],  # from the original's own code
    # the generator's own reach: the original's inversion, left as it is (both loss weights 0, so
    # Adam's steps move nothing): what the judges read when only the generator changes the face
    "reconstruction": ["method.init=inversion", "inversion=projection", "method.id_weight=0",
                       "attributes.attr_weight=0", "method.steps=1"],
    # the paired fake itself, unoptimized: what the judges read when only the pairing chooses the face
    "start": ["method.id_weight=0", "attributes.attr_weight=0", "method.steps=1"],
    "reconstruction1000": ["method.init=inversion", "inversion=projection", "inversion.net.steps=1000",
                           "method.id_weight=0", "attributes.attr_weight=0", "method.steps=1"],
}
GENDER_JUDGES = ("faceapi", "faceres", "adience", "mini_xception", "faceplugin")
AGE_JUDGES = ("faceapi", "faceres", "adience", "faceplugin")
RECOGNIZERS = ("sface", "lightcnn_v4", "faceplugin_mfn")


def run(dataset: list[str], variant: list[str], run_dir: Path, cache: Path) -> dict:
    """summary.json of `train.py` with these overrides; a finished run in run_dir is read back."""
    if (run_dir / "summary.json").is_file():
        return json.loads((run_dir / "summary.json").read_text())
    cmd = [sys.executable, "train.py", f"run_dir={run_dir}", f"cache_dir={cache}", *dataset, *variant]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads((run_dir / "summary.json").read_text())


def row(summary: dict) -> dict:
    """The table's figures of one run's summary.json."""
    h = summary["heldout"]
    out: dict = {"n": h["n"], "skipped": sorted(h.get("skipped", {}))}
    for name, r in h["identity"].items():
        ident = r["attacker_alignment"]["identification"]
        out[f"top1/{name}"], out["chance"] = ident["top1"], ident["chance_top1"]
        hits = round(ident["top1"] * ident["n_evaluated"])  # one-sided binomial test against chance:
        out[f"p/{name}"] = p_above_chance(hits, ident["n_evaluated"], ident["chance_top1"])
        if name == "sface":
            div = r["diversity"]
            out["diversity"] = (div["anonymized_same_person_rate"], div["originals_same_person_rate"])
    for name, a in h["attributes"].items():
        ceiling = h["attributes_original_mirrored"][name]
        if "gender_agreement" in a:
            out[f"gender/{name}"] = (a["gender_agreement"], ceiling["gender_agreement"])
        if "age_abs_diff" in a:
            out[f"age/{name}"] = a["age_abs_diff"]
            out[f"age_ceiling/{name}"] = ceiling.get("age_abs_diff")
    for name, g in h.get("gender_vs_truth", {}).items():  # against the true labels (real faces)
        out[f"men/{name}"] = (g["men_read_male"]["originals"], g["men_read_male"]["anonymized"], g["n_men"])
        out[f"women/{name}"] = (g["women_read_female"]["originals"], g["women_read_female"]["anonymized"],
                                g["n_women"])
    wb = summary["attributes"]["anonymized"]
    out["white_box"] = (summary["attributes"]["network"], wb["gender_agreement"], wb["age_abs_diff"])
    return out


def table(rows: dict[str, dict]) -> str:
    chance = next(iter(rows.values()))["chance"]
    head = ["variant", f"re-ID top-1 {'/'.join(RECOGNIZERS)} (chance {100 * chance:.1f}%; * above it, p < 0.05)",
            "diversity SFace anon / orig", *(f"gender {j} (ceiling)" for j in GENDER_JUDGES),
            f"abs age diff {'/'.join(AGE_JUDGES)} (ceilings)", "WHITE-BOX gender / age diff"]
    truth = [k for k in ("men", "women") if any(f"{k}/{j}" in r for r in rows.values() for j in GENDER_JUDGES)]
    head[-1:-1] = [f"{k} read as {k}, original -> anonymized, {' / '.join(GENDER_JUDGES)}" for k in truth]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    pct = lambda v: "-" if v is None else f"{100 * v:.1f}"  # noqa: E731
    for name, r in rows.items():
        div = r.get("diversity")
        one = r["n"] < 2  # one face: identification and diversity mean nothing
        top1 = " / ".join(pct(r.get(f"top1/{k}")) + ("*" if (r.get(f"p/{k}") or 1.0) < 0.05 else "")
                          for k in RECOGNIZERS)
        cells = [name, "n/a (one face)" if one else top1 + "%",
                 "-" if one or not div else f"{pct(div[0])} / {pct(div[1])}%"]
        for j in GENDER_JUDGES:
            g = r.get(f"gender/{j}")
            cells.append(f"{pct(g[0])}% ({pct(g[1])})" if g else "in the loss" if j in r["skipped"] else "-")
        ages = [r.get(f"age/{j}") for j in AGE_JUDGES]
        ceilings = [r.get(f"age_ceiling/{j}") for j in AGE_JUDGES]
        years = lambda vs: " / ".join("-" if v is None else f"{v:.1f}" for v in vs)  # noqa: E731
        cells.append(f"{years(ages)} y ({years(ceilings)})")
        for k in truth:
            cells.append(" / ".join(f"{pct(t[0])}->{pct(t[1])}" if (t := r.get(f"{k}/{j}")) else "-"
                                    for j in GENDER_JUDGES) + "%")
        net, g, a = r["white_box"]
        cells.append(f"{net}: {pct(g)}% / {a:.1f} y")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--faces", type=int, default=64, help="generated faces (data=synthetic)")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--datasets", nargs="+", default=["generated", "real", "astronaut"],
                        choices=["generated", "real", "astronaut"])
    parser.add_argument("--work", type=Path, default=None, help="run directories and stage cache (default: a temp dir)")
    parser.add_argument("--out", type=Path, default=None, help="write every row as JSON here")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="falco_preservation_"))
    datasets = {"generated": [f"data.identities={args.faces}"]}
    if {"real", "astronaut"} & set(args.datasets):
        real = write_real_faces(work / "real_faces")
        datasets["real"] = ["data=folder", f"data.root={work / 'real_faces'}",
                            f"data.labels={work / 'real_faces' / 'labels.csv'}"]
        print(f"real faces: {len(real)} in {work / 'real_faces'}", flush=True)
        (work / "astronaut").mkdir(exist_ok=True)  # the astronaut alone: her own verdicts (n = 1)
        (work / "astronaut" / "astronaut.png").write_bytes((work / "real_faces" / "astronaut.png").read_bytes())
        datasets["astronaut"] = ["data=folder", f"data.root={work / 'astronaut'}"]
    results: dict = {}
    for ds in args.datasets:
        results[ds] = {}
        for v in args.variants:
            print(f"[preservation] {ds} / {v} ...", flush=True)
            results[ds][v] = row(run(datasets[ds], VARIANTS[v], work / "runs" / ds / v, work / "cache"))
        print(f"\n{ds} faces (n = {next(iter(results[ds].values()))['n']}):\n{table(results[ds])}\n", flush=True)
    if args.out:
        args.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
