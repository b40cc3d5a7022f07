"""End-of-run summary, measured with the real networks on the written outputs.

Privacy: identity distance original vs anonymized, and the share still verified as the same
person by the recognizer's own rule, next to the same share for pairs of unrelated originals
(the false-match rate: a re-identification figure means nothing without it). The recognizer
is the one the loss optimized, so these figures are WHITE-BOX; held-out judges live in the
evaluation suite. Utility: attribute predictions (the attribute networks are also the
loss's, so white-box too) of originals vs anonymized vs the paired fakes before optimization,
and the MTCNN detection rate of the outputs.
"""

from __future__ import annotations

import torch

from .data.imageio import read_rgb, to_tensor
from .pipeline import Networks, Prepped
from .rundir import RunDir


def _unrelated_pairs(identities: list[str | None], limit: int = 20000) -> tuple[torch.Tensor, torch.Tensor]:
    """Index pairs (i, j), i < j, of originals known to be different people (or different items)."""
    n = len(identities)
    i, j = torch.triu_indices(n, n, offset=1)
    keep = torch.tensor([identities[a] is None or identities[a] != identities[b]
                         for a, b in zip(i.tolist(), j.tolist(), strict=True)], dtype=torch.bool)
    i, j = i[keep], j[keep]
    if len(i) > limit:
        pick = torch.randperm(len(i), generator=torch.Generator().manual_seed(0))[:limit]
        i, j = i[pick], j[pick]
    return i, j


def _attribute_agreement(pred_a: dict[str, torch.Tensor], pred_b: dict[str, torch.Tensor]) -> dict:
    out = {}
    if "male" in pred_a:
        out["gender_agreement"] = float(((pred_a["male"] > 0.5) == (pred_b["male"] > 0.5)).float().mean())
    if "age" in pred_a:
        out["age_abs_diff"] = float((pred_a["age"] - pred_b["age"]).abs().mean())
    return out


def summarize(run: RunDir, nets: Networks, prepped: Prepped, records: list[dict]) -> dict:
    ok = [r for r in records if r["status"] == "ok"]
    by_id = {e["id"]: e for e in prepped.prepared.ok}
    res = nets.generator.resolution
    orig, lms, anon, fakes = [], [], [], []
    index = {e["id"]: k for k, e in enumerate(prepped.prepared.ok)}
    for r in ok:
        image, lm = prepped.prepared.get(by_id[r["id"]])
        orig.append(image)
        lms.append(lm)
        anon.append(to_tensor(read_rgb(run.image_path(r["pseudonym"])))[0])
        fakes.append(prepped.pool["latents"][prepped.pair_index[index[r["id"]]]])
    summary: dict = {"images": len(records), "done": len(ok),
                     "skipped": len(records) - len(ok),
                     "skip_reasons": _count(r["reason"] for r in records if r["status"] != "ok")}
    if not ok:
        return summary
    x, lm, y = torch.stack(orig), torch.stack(lms), torch.stack(anon)
    with torch.no_grad():
        f = nets.generator.synthesize(torch.stack(fakes)).float()
        theta = nets.identity.crop_theta(lm, (res, res))
        thetas = nets.attributes.crop_thetas(lm, (res, res))
        e_x, e_y = nets.identity.embed(x, theta).float(), nets.identity.embed(y, theta).float()
        d = nets.identity.distance(e_y, e_x)
        i, j = _unrelated_pairs([r.get("identity") for r in ok])
        d_unrelated = nets.identity.distance(e_x[i], e_x[j]) if len(i) else torch.zeros(0)
        p_x, p_y, p_f = (nets.attributes.predict(t, thetas) for t in (x, y, f))
    thr = nets.identity.same_person_below
    judge = {"judge": nets.identity.name, "white_box": True, "same_person_below": thr}
    summary["identity"] = {**judge, "distance_mean": float(d.mean()),
                           "verified_as_original": float((d < thr).float().mean()),
                           "unrelated_false_match": float((d_unrelated < thr).float().mean())
                           if len(d_unrelated) else None,
                           "unrelated_distance_mean": float(d_unrelated.mean()) if len(d_unrelated) else None,
                           "unrelated_pairs": int(len(d_unrelated))}
    summary["attributes"] = {"network": nets.attributes.name, "white_box": True,
                             "anonymized": _attribute_agreement(p_x, p_y),
                             "paired_fake_before": _attribute_agreement(p_x, p_f)}
    found = [det is not None for det in nets.detector.detect_tensor(y)]
    summary["detection_rate"] = sum(found) / len(found)
    return summary


def _count(reasons) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in reasons:
        out[r] = out.get(r, 0) + 1
    return out


def format_summary(s: dict) -> str:
    lines = [f"images: {s['images']}  done: {s['done']}  skipped: {s['skipped']} {s['skip_reasons'] or ''}"]
    if "identity" in s:
        idt, att = s["identity"], s["attributes"]
        fm = idt["unrelated_false_match"]
        lines += [
            f"identity [{idt['judge']}, WHITE-BOX: the loss's own recognizer] distance original->anonymized "
            f"{idt['distance_mean']:.3f} (same person below {idt['same_person_below']})",
            f"  verified as original: {idt['verified_as_original']:.1%}   unrelated faces false-match: "
            + (f"{fm:.1%} over {idt['unrelated_pairs']} pairs" if fm is not None else "n/a"),
            f"attributes [{att['network']}, WHITE-BOX] anonymized: {_fmt(att['anonymized'])}   "
            f"paired fake before optimization: {_fmt(att['paired_fake_before'])}",
            f"detection rate of outputs (MTCNN): {s['detection_rate']:.1%}",
        ]
    return "\n".join(lines)


def _fmt(d: dict) -> str:
    parts = []
    if "gender_agreement" in d:
        parts.append(f"gender agreement {d['gender_agreement']:.1%}")
    if "age_abs_diff" in d:
        parts.append(f"|age diff| {d['age_abs_diff']:.1f} y")
    return ", ".join(parts) or "n/a"
