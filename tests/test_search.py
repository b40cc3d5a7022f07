"""The Optuna search from the command line: each trial is evaluated by the evaluation suite
and returns the objective, and the sweeper's best value is the best trial's objective."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import yaml

from evaluation.make_tables import main as make_tables
from evaluation.objective import from_config, objective_value
from tests.conftest import FAST, ROOT


def test_two_trial_optuna_search_returns_the_evaluated_objective(tmp_path):
    sweep = tmp_path / "sweep"
    cmd = [sys.executable, "train.py", "-m", "experiments=optuna_search", *FAST, "data.identities=4",
           "method.steps=2", "summary=false", "hydra.sweeper.n_trials=2", f"cache_dir={tmp_path / 'cache'}",
           f"hydra.sweep.dir={sweep}"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    spec = from_config(yaml.safe_load((ROOT / "experiments" / "optuna_search.yaml").read_text())["objective"])
    trials = {}
    for job in (0, 1):
        summary = json.loads((sweep / str(job) / "eval" / "falco" / "summary.json").read_text())
        params = {k: v for k, v in (o.split("=", 1) for o in
                                    yaml.safe_load((sweep / str(job) / ".hydra" / "overrides.yaml").read_text()))}
        trials[job] = (objective_value(summary["metrics"], spec), params)
        assert json.loads((sweep / str(job) / "objective.json").read_text())["value"] == trials[job][0]
    assert best["best_value"] == max(value for value, _ in trials.values())
    # The best parameters are those of a trial with the best objective.
    assert any(value == best["best_value"] and all(float(p[k]) == v for k, v in best["best_params"].items())
               for value, p in trials.values())
    assert {name for _, p in trials.values() for name in p} >= {"method.margin", "method.id_weight",
                                                                "method.attr_weight"}
    assert set(best["best_params"]) == {"method.margin", "method.id_weight", "method.attr_weight"}
    # The margin is drawn from the recognizer's own range (identity.margin_range: dlib distances).
    assert all(0.6 <= float(p["method.margin"]) <= 1.0 for _, p in trials.values())

    # The tables command on the two evaluated runs: one margin-table row per trial, by margin.
    table = make_tables([str(tmp_path / "tables"), str(sweep)])["margin.csv"]
    ours = [row for row in csv.DictReader(table.open()) if row["Method"] == "falco"]
    assert [float(row["margin"]) for row in ours] == sorted(float(p["method.margin"]) for _, p in trials.values())
    assert all(row["Gender agreement % [age_gender]"] for row in ours)  # the search's utility is in the table

    # The chosen point, run again on a disjoint split (another stream of faces) and scored there.
    from evaluation.search_report import main as search_report

    out = search_report([str(sweep), "data.seed=1"])
    assert out["chosen"] == best["best_params"] and out["search_split_value"] == best["best_value"]
    report_eval = json.loads((sweep / "report" / "eval" / "falco" / "summary.json").read_text())
    assert out["report_value"] == objective_value(report_eval["metrics"], spec)
    report_cfg = yaml.safe_load((sweep / "report" / "config.yaml").read_text())
    assert report_cfg["data"]["seed"] == 1 and report_cfg["data"]["identities"] == 4
    assert all(report_cfg["method"][k.split(".")[1]] == v for k, v in best["best_params"].items())
