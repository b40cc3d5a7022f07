"""Report a search's chosen point on a disjoint split (the search never saw those images).

A search scored on its own images overfits them (Optuna picks the luckiest trial); the point it
chooses is therefore run again on a REPORT split and evaluated there by the same suite and
objective. The run's overrides are the search's own (a trial's <sweep>/0/.hydra/overrides.yaml),
minus the swept parameters, plus the chosen ones (<sweep>/optimization_results.yaml), plus the report
split's overrides given here:

    python -m evaluation.search_report multirun/search data.seed=1          # synthetic: another stream
    python -m evaluation.search_report multirun/search_celebahq data.split=test   # searched on val

Writes <sweep>/report/ (the run) and <sweep>/report.json: the chosen parameters, the search
split's objective, and the report split's objective, utility and re-ID.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from omegaconf import OmegaConf

from falco.data.imageio import atomic_write_text

from .objective import CONF, from_config, trial_objective


def report_overrides(sweep: Path, split: list[str]) -> tuple[list[str], dict]:
    """The report run's overrides and the search's results."""
    results_file, trial = sweep / "optimization_results.yaml", sweep / "0" / ".hydra" / "overrides.yaml"
    for f in (results_file, trial):
        if not f.is_file():
            raise FileNotFoundError(f"{f} is missing: is {sweep} the hydra.sweep.dir of a finished search?")
    results = OmegaConf.to_container(OmegaConf.load(results_file))
    assert isinstance(results, dict)
    best = results["best_params"]
    task = [str(o) for o in OmegaConf.load(trial)]
    swept = set(best)
    keep = [o for o in task if o.split("=", 1)[0].lstrip("+~") not in swept]
    split_keys = {o.split("=", 1)[0] for o in split}
    keep = [o for o in keep if o.split("=", 1)[0] not in split_keys]
    return [*keep, *(f"{k}={v}" for k, v in best.items()), *split, f"run_dir={sweep / 'report'}"], results


def main(argv: list[str]) -> dict:
    if not argv:
        raise SystemExit(__doc__)
    sweep, split = Path(argv[0]), argv[1:]
    if not split:
        raise SystemExit("give the report split's overrides (e.g. data.seed=1 or data.split=test): "
                         "reporting on the search's own images would report its overfit")
    overrides, results = report_overrides(sweep, split)
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
        if cfg.get("objective") is None:
            raise ValueError(f"{sweep}: the search had no objective: block")
        spec = from_config(cfg.objective)
        OmegaConf.set_struct(cfg, False)
        cfg.objective = None  # the report run itself is not a trial
        from train import run

        run(cfg, cfg.run_dir)
        scored = trial_objective(cfg.run_dir, spec)
    out = {"chosen": results["best_params"], "search_split_value": results.get("best_value"),
           "report_split": split, "report_value": scored["value"], "report_utility": scored["utility"],
           "report_reid": scored["reid"], "objective": scored["objective"], "report_run": str(cfg.run_dir)}
    atomic_write_text(sweep / "report.json", json.dumps(out, indent=1))
    print(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main(sys.argv[1:])
