"""The search objective on constructed evaluation summaries with known answers."""

from __future__ import annotations

import math

import pytest

from evaluation.objective import Objective, from_config, objective_value

SPEC = Objective(maximize="gender_agreement", reid="reid_native@judge", ceiling=0.1, penalty=5.0)


def metrics(agreement: float | None, reid: float | None) -> dict:
    return {"gender_agreement": {"value": agreement, "judge": "age_gender", "white_box": True},
            "reid_native@judge": {"value": reid, "judge": "judge", "white_box": False},
            "detection": {"value": 1.0, "judge": None, "white_box": None}}


@pytest.mark.parametrize("reid", [0.0, 0.05, 0.1])
def test_at_or_below_the_ceiling_the_objective_is_the_agreement(reid):
    assert objective_value(metrics(0.8, reid), SPEC) == 0.8


def test_above_the_ceiling_the_excess_is_penalized_linearly():
    assert math.isclose(objective_value(metrics(0.8, 0.3), SPEC), 0.8 - 5.0 * 0.2)
    assert math.isclose(objective_value(metrics(0.8, 1.0), SPEC), 0.8 - 5.0 * 0.9)


def test_objective_falls_strictly_with_reid_above_the_ceiling_and_rises_with_agreement():
    values = [objective_value(metrics(0.8, r), SPEC) for r in (0.1, 0.2, 0.4, 0.7, 1.0)]
    assert all(a > b for a, b in zip(values, values[1:], strict=False))
    assert objective_value(metrics(0.9, 0.5), SPEC) > objective_value(metrics(0.8, 0.5), SPEC)
    # Over the ceiling, a utility gain wins only when it outweighs penalty x the extra re-ID.
    assert objective_value(metrics(1.0, 0.12), SPEC) > objective_value(metrics(0.8, 0.1), SPEC)
    assert objective_value(metrics(1.0, 0.2), SPEC) < objective_value(metrics(0.8, 0.1), SPEC)


def test_zero_penalty_ignores_reid():
    spec = Objective(maximize="gender_agreement", reid="reid_native@judge", ceiling=0.0, penalty=0.0)
    assert objective_value(metrics(0.7, 1.0), spec) == 0.7


def test_missing_or_empty_metrics_are_named():
    with pytest.raises(KeyError, match="'reid_top1@other' is not in the evaluation summary.*detection"):
        objective_value(metrics(0.8, 0.0), Objective(maximize="gender_agreement", reid="reid_top1@other"))
    with pytest.raises(ValueError, match="'gender_agreement' has no finite value"):
        objective_value(metrics(None, 0.0), SPEC)
    with pytest.raises(ValueError, match="'reid_native@judge' has no finite value"):
        objective_value(metrics(0.8, math.nan), SPEC)


def test_config_block_is_checked():
    spec = from_config({"maximize": "m", "reid": "r", "ceiling": 0.2, "penalty": 1.0, "evaluate": ["logger=none"]})
    assert spec.evaluate == ("logger=none",) and spec.ceiling == 0.2
    with pytest.raises(ValueError, match="ceiling is a re-ID rate in"):
        from_config({"ceiling": 1.5})
    with pytest.raises(ValueError, match="penalty must be >= 0"):
        from_config({"penalty": -1.0})
    with pytest.raises(ValueError, match=r"unknown objective keys \['celing'\]"):
        from_config({"celing": 0.1})
