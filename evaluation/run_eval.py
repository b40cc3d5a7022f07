"""Evaluate one run directory (or a baseline on its originals) with several judges.

Originals are the aligned crops the run optimized against (read from the run's `prepare`
stage in the cache), anonymized images are the run's release PNGs. Every re-ID figure is
labelled white-box when the judge is the network the run's loss used, held-out otherwise,
and always comes with the false-match rate of unrelated originals under the same judge.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

from falco.backbones.base import IdentityEncoder
from falco.data.imageio import read_rgb, to_tensor
from falco.stages.prepare import Prepared

from .baselines import BASELINES
from .metrics.consistency import identity_consistency
from .metrics.detection import best_landmarks, detect, detection_rate, mtcnn_detector
from .metrics.geometry import landmark_nme
from .metrics.reid import identification, matrix_from_pair_distance, verification


@dataclass
class EvalData:
    originals: torch.Tensor  # (N,3,S,S) aligned originals in [-1,1]
    anonymized: torch.Tensor  # (N,3,S,S) in [-1,1]
    landmarks: torch.Tensor  # (N,5,2) originals' landmarks in the aligned frame
    ids: list[str]
    identities: list[str]  # dataset identity, or the item id when the dataset has none
    has_identities: bool
    run_config: Any
    loss_judge: str | None  # name of the recognizer the run's loss used


def load_run(run_dir: Path, cache_dir: str | None = None, baseline: str | None = None) -> EvalData:
    cfg = OmegaConf.load(run_dir / "config.yaml")
    records = [json.loads(x) for x in (run_dir / "private" / "records.jsonl").read_text().splitlines()]
    ok = [r for r in records if r["status"] == "ok"]
    if not ok:
        raise RuntimeError(f"{run_dir}: no anonymized image to evaluate ({len(records)} records, none ok)")
    cache = Path(cache_dir or cfg.cache_dir)
    prep_dir = cache / "prepare" / ok[0]["stage_keys"]["prepare"]
    if not (prep_dir / "items.json").is_file():
        raise FileNotFoundError(f"the run's prepare stage is not in the cache at {prep_dir}; pass "
                                "cache_dir=<the run's cache_dir> (originals are read from there)")
    prepared = Prepared(prep_dir)
    by_id = {e["id"]: e for e in prepared.ok}
    orig, lms = zip(*(prepared.get(by_id[r["id"]]) for r in ok), strict=True)
    x, lm = torch.stack(orig), torch.stack(lms)
    if baseline is None:
        y = torch.cat([to_tensor(read_rgb(run_dir / "release" / "images" / f"{r['pseudonym']}.png")) for r in ok])
    else:
        y = apply_baseline(baseline, x, lm)
    ident = [r.get("identity") for r in ok]
    return EvalData(x, y, lm, [r["id"] for r in ok], [i or r["id"] for i, r in zip(ident, ok, strict=True)],
                    all(i is not None for i in ident), cfg, None if baseline else ok[0]["identity_distance"]["judge"])


def face_boxes(landmarks: torch.Tensor, size: int) -> list[tuple[float, float, float, float]]:
    """A face box around the 5 landmarks (widened: landmarks span the inner face only)."""
    lo, hi = landmarks.min(1).values, landmarks.max(1).values
    c, half = (lo + hi) / 2, (hi - lo).max(1).values * 0.9
    return [(max(0.0, float(c[i, 0] - half[i])), max(0.0, float(c[i, 1] - half[i] * 0.9)),
             min(float(size), float(c[i, 0] + half[i])), min(float(size), float(c[i, 1] + half[i] * 1.2)))
            for i in range(len(landmarks))]


def apply_baseline(name: str, x: torch.Tensor, lm: torch.Tensor) -> torch.Tensor:
    """A baseline anonymization of the aligned originals; "original" = no anonymization at all
    (the reference every judge must re-identify at 100%)."""
    if name == "original":
        return x.clone()
    if name not in BASELINES:
        raise ValueError(f"baseline must be 'original' or one of {sorted(BASELINES)}, got {name!r}")
    return BASELINES[name](x, face_boxes(lm, x.shape[-1]))


def judge_metrics(name: str, judge: IdentityEncoder, data: EvalData, fars: tuple[float, ...]) -> dict:
    res = data.originals.shape[-1]
    theta = judge.crop_theta(data.landmarks, (res, res))
    with torch.no_grad():
        e_x = _embed(judge, data.originals, theta)
        e_y = _embed(judge, data.anonymized, theta)
    dist = matrix_from_pair_distance(judge.distance)
    out = {"judge": name, "white_box": name == data.loss_judge, "same_person_below": judge.same_person_below}
    out["identification"] = identification(e_y, data.identities, e_x, data.identities, distance_matrix=dist)
    out["verification"] = verification(e_y, e_x, distance=judge.distance,
                                       labels=data.identities if data.has_identities else None,
                                       fars=fars, same_person_below=judge.same_person_below)
    if data.has_identities and len(set(data.identities)) < len(data.identities):
        out["consistency"] = identity_consistency(e_y, data.identities, distance=judge.distance,
                                                  same_person_below=judge.same_person_below)
    return out


def _embed(judge: IdentityEncoder, images: torch.Tensor, theta: torch.Tensor | None, batch: int = 64) -> torch.Tensor:
    parts = []
    for s in range(0, len(images), batch):
        parts.append(judge.embed(images[s:s + batch], None if theta is None else theta[s:s + batch]).float())
    return torch.cat(parts)


def geometry_and_detection(data: EvalData, threshold: float) -> dict:
    detector = mtcnn_detector()
    dets = detect(data.anonymized, detector)
    rate = detection_rate(None, detections=dets, threshold=threshold)
    nme = landmark_nme(data.landmarks, best_landmarks(dets, threshold))
    return {"detection": rate, "landmarks": nme}


def attribute_metrics(attributes, data: EvalData, white_box: bool) -> dict:
    from .metrics.attributes import age_difference, gender_agreement

    res = data.originals.shape[-1]
    thetas = attributes.crop_thetas(data.landmarks, (res, res))
    with torch.no_grad():
        p_x, p_y = attributes.predict(data.originals, thetas), attributes.predict(data.anonymized, thetas)
    out: dict[str, Any] = {"network": attributes.name, "white_box": white_box}
    if "male" in p_x:
        out["gender"] = gender_agreement(p_x["male"], p_y["male"])
    if "age" in p_x:
        out["age"] = age_difference(p_x["age"], p_y["age"])
    return out
