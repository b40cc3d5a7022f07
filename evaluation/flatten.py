"""Turns an evaluation's nested results into the flat schema the tables read.

{"run", "method", "dataset", "params", "metrics": {"<kind>@<judge>": {"value", "judge", "white_box"}}}
"""

from __future__ import annotations

from typing import Any


def _m(value: Any, judge: str | None = None, white_box: bool | None = None) -> dict:
    return {"value": None if value is None else float(value), "judge": judge, "white_box": white_box}


def flatten(results: dict) -> dict[str, dict]:
    metrics: dict[str, dict] = heldout_metrics(results.get("heldout"))
    for j in results["judges"]:
        name, wb = j["judge"], j["white_box"]
        metrics[f"reid_top1@{name}"] = _m(j["identification"]["top1"], name, wb)
        metrics[f"reid_top5@{name}"] = _m(j["identification"]["top5"], name, wb)
        for far, key in (("0.001", "reid_tar_far1e-3"), ("0.01", "reid_tar_far1e-2")):
            if far in j["verification"]["at_far"]:
                metrics[f"{key}@{name}"] = _m(j["verification"]["at_far"][far]["tar"], name, wb)
        native = j["verification"]["native"] or {}
        metrics[f"reid_native@{name}"] = _m(native.get("reid_rate"), name, wb)
        metrics[f"false_match_unrelated@{name}"] = _m(native.get("false_match_rate"), name, wb)
        if "consistency" in j:
            metrics[f"consistency_same_verified@{name}"] = _m(
                j["consistency"]["same_person"]["share_verified_same"], name, wb)
    metrics["detection"] = _m(results["detection"]["rate"])
    metrics["landmark_nme"] = _m(results["landmarks"]["nme_mean"])
    att = results.get("attributes") or {}
    if "gender" in att:
        metrics["gender_agreement"] = _m(att["gender"]["agreement"], att["network"], att["white_box"])
    if "age" in att:
        metrics["age_mae"] = _m(att["age"]["mae"], att["network"], att["white_box"])
    if "classifier" in results:
        metrics.update(_classifier(results["classifier"]))
    for k in ("fid", "kid_mean"):
        if k in results.get("quality", {}):
            metrics[k.replace("_mean", "")] = _m(results["quality"][k])
    if "keyed" in results:
        metrics.update(_keyed(results["keyed"]))
    return metrics


def heldout_metrics(h: dict | None) -> dict[str, dict]:
    """The held-out protocol's headline figures (attacker alignment), all labelled held-out."""
    if not h:
        return {}
    out: dict[str, dict] = {}
    for name, j in h["identity"].items():
        a = j["attacker_alignment"]
        out[f"heldout_reid_top1@{name}"] = _m(a["identification"]["top1"], name, False)
        out[f"heldout_chance_top1@{name}"] = _m(a["identification"]["chance_top1"], name, False)
        if "top1_p_above_chance" in a["identification"]:  # runs measured before the test existed lack it
            out[f"heldout_reid_top1_p@{name}"] = _m(a["identification"]["top1_p_above_chance"], name, False)
        out[f"heldout_mean_rank@{name}"] = _m(a["identification"]["mean_rank"], name, False)
        out[f"heldout_chance_mean_rank@{name}"] = _m(a["identification"]["chance_mean_rank"], name, False)
        native = a["verification"]["native"] or {}
        out[f"heldout_reid_native@{name}"] = _m(native.get("reid_rate"), name, False)
        out[f"heldout_false_match_unrelated@{name}"] = _m(native.get("false_match_rate"), name, False)
        if "0.01" in a["verification"]["at_far"]:
            out[f"heldout_reid_tar_far1e-2@{name}"] = _m(a["verification"]["at_far"]["0.01"]["tar"], name, False)
        out[f"heldout_diversity_collisions@{name}"] = _m(j["diversity"]["anonymized_same_person_rate"], name, False)
        out[f"heldout_diversity_collisions_originals@{name}"] = _m(
            j["diversity"]["originals_same_person_rate"], name, False)
    for name, a in h.get("attributes", {}).items():
        for key in ("gender_agreement", "age_abs_diff", "expression_agreement"):
            if key in a:
                out[f"heldout_{key}@{name}"] = _m(a[key], name, False)
        if "pose_error_deg" in a:
            out[f"heldout_pose_error_deg@{name}"] = _m(a["pose_error_deg"]["mean"], name, False)
    for name, g in h.get("gender_vs_truth", {}).items():  # against the dataset's true `Male` labels
        out[f"heldout_gender_right@{name}"] = _m(g["anonymized_right"], name, False)
        out[f"heldout_gender_right_originals@{name}"] = _m(g["originals_right"], name, False)
    if "detection" in h:
        out[f"heldout_detection@{h['detection']['detector']}"] = _m(h["detection"]["rate"], h["detection"]["detector"],
                                                                    False)
    return out


def _keyed(r: dict) -> dict[str, dict]:
    """Keyed mode (evaluation/keyed_metrics.py): anonymity without the key, consistency,
    diversity (with a run under another key) per held-out recognizer (`keyed_heldout_*`), then
    for the run's own recognizer, with authentication with the key and with wrong keys."""
    out: dict[str, dict] = {}
    for name, j in ((r.get("heldout") or {}).get("recognizers") or {}).items():
        out.update(_keyed_identity(j, "keyed_heldout", name, False))
    name, wb = r["judge"], r["white_box"]
    auth = r["authentication"]
    out.update(_keyed_identity(r, "keyed", name, wb))
    out[f"keyed_auth_top1_correct_key@{name}"] = _m(auth["correct_key"]["top1"], name, wb)
    out[f"keyed_auth_top1_wrong_keys_mean@{name}"] = _m(auth["wrong_key_top1_mean"], name, wb)
    return out


def _keyed_identity(r: dict, prefix: str, name: str, wb: bool) -> dict[str, dict]:
    """One judge's keyed identity figures (evaluation/keyed_metrics.py identity_figures)."""
    out = {f"{prefix}_false_match_unrelated@{name}": _m(r["unrelated_false_match"]["share"], name, wb),
           f"{prefix}_anonymity_verified_as_original@{name}": _m(r["anonymity"]["verified_as_original"], name, wb),
           f"{prefix}_anonymity_top1@{name}": _m(r["anonymity"]["identification_top1"], name, wb),
           f"{prefix}_consistency_same_verified@{name}": _m(
               r["consistency"]["same_person_verified_same"]["share"], name, wb)}
    if "diversity" in r:
        out[f"{prefix}_diversity_verified_different@{name}"] = _m(
            r["diversity"]["same_person_verified_different"], name, wb)
    return out


def _classifier(c: dict) -> dict[str, dict]:
    """The 40-attribute classifier's figures: agreement with the originals' predictions (mean,
    balanced, per attribute) and, with labels, accuracy of the anonymized and of the originals."""
    name, out = c["network"], {}
    for report, kind in ((c["agreement"], "agreement"), (c.get("accuracy"), "accuracy"),
                         (c.get("accuracy_originals"), "accuracy_originals")):
        if report is None:
            continue
        plain = kind.replace("_originals", "")
        out[f"attr_{kind}_mean@{name}"] = _m(report[f"{plain}_mean"], name, False)
        out[f"attr_balanced_{kind}_mean@{name}"] = _m(report[f"balanced_{plain}_mean"], name, False)
        if kind != "accuracy_originals":
            for attribute, v in report["per_attribute"].items():
                out[f"attr_{kind}.{attribute}@{name}"] = _m(v[plain], name, False)
    return out
