"""The search objective: attribute preservation, penalized above a re-identification ceiling.

Optuna's sweeper maximizes one float per trial and knows no constraints, so the privacy
requirement enters as a penalty on the evaluation summary's metrics (evaluate.py's schema):

    objective = utility                                  when reid <= ceiling
              = utility - penalty * (reid - ceiling)     above it

`utility` is the metric named by `maximize` (e.g. gender_agreement, or
attr_agreement_mean@<classifier>), `reid` a re-identification rate (e.g.
reid_native@dlib_resnet). Below the ceiling the objective is the utility itself; above it,
it falls linearly with the excess, so a trial over the ceiling beats one under it only when
its utility gain outweighs penalty x excess. train.py returns this value for a multirun job
when the config has an `objective:` block (experiments/optuna_search.yaml).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from falco.data.imageio import atomic_write_text

from .run_eval import evaluate

CONF = Path(__file__).resolve().parents[1] / "conf"


@dataclass(frozen=True)
class Objective:
    maximize: str = "heldout_gender_agreement@adience"  # summary metric to maximize (a rate in [0, 1])
    reid: str = "heldout_reid_native@sface"  # re-identification metric held under the ceiling
    ceiling: float = 0.05  # highest re-ID rate with no penalty
    penalty: float = 10.0  # objective lost per unit of re-ID above the ceiling
    evaluate: Sequence[str] = field(default_factory=tuple)  # overrides of conf/evaluate.yaml

    def __post_init__(self) -> None:
        if not 0.0 <= self.ceiling <= 1.0:
            raise ValueError(f"objective.ceiling is a re-ID rate in [0, 1], got {self.ceiling}")
        if not self.penalty >= 0.0:
            raise ValueError(f"objective.penalty must be >= 0, got {self.penalty}")


def from_config(node: DictConfig | Mapping) -> Objective:
    """An Objective from the config's `objective:` block (unknown keys are errors)."""
    values = OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else dict(node)
    assert isinstance(values, dict)
    unknown = set(values) - set(Objective.__dataclass_fields__)
    if unknown:
        raise ValueError(f"unknown objective keys {sorted(unknown)}; known: {sorted(Objective.__dataclass_fields__)}")
    values["evaluate"] = tuple(values.get("evaluate") or ())
    return Objective(**values)


def metric_value(metrics: Mapping[str, Mapping], name: str) -> float:
    """The finite value of one metric of an evaluation summary, or an error naming the others."""
    if name not in metrics:
        raise KeyError(f"metric {name!r} is not in the evaluation summary; it has: {', '.join(sorted(metrics))}")
    value = metrics[name]["value"]
    if value is None or not math.isfinite(value):
        raise ValueError(f"metric {name!r} has no finite value ({value}); the objective cannot use it")
    return float(value)


def objective_value(metrics: Mapping[str, Mapping], spec: Objective) -> float:
    """Utility, minus penalty x the re-ID rate's excess over the ceiling."""
    utility, reid = metric_value(metrics, spec.maximize), metric_value(metrics, spec.reid)
    return utility - spec.penalty * max(0.0, reid - spec.ceiling)


def evaluation_config(run_dir: str | Path, overrides: Sequence[str]) -> DictConfig:
    """conf/evaluate.yaml for `run_dir`, composed in the running Hydra app when there is one."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    args = [f"run_dir={run_dir}", *overrides]
    if GlobalHydra.instance().is_initialized():
        return compose(config_name="evaluate", overrides=args)
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="evaluate", overrides=args)


def trial_objective(run_dir: str | Path, spec: Objective) -> dict[str, Any]:
    """Evaluate a finished run with the evaluation suite, then score it; the result (value,
    the two metrics, the spec) is also written to <run_dir>/objective.json."""
    cfg = evaluation_config(run_dir, spec.evaluate)
    summary = evaluate(cfg)
    result = {"value": objective_value(summary["metrics"], spec),
              "utility": metric_value(summary["metrics"], spec.maximize),
              "reid": metric_value(summary["metrics"], spec.reid),
              "summary": str(Path(run_dir) / "eval" / (cfg.name or summary["method"]) / "summary.json"),
              "objective": {**asdict(spec), "evaluate": list(spec.evaluate)}}
    atomic_write_text(Path(run_dir) / "objective.json", json.dumps(result, indent=1))
    return result

