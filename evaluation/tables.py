"""Paper-style tables from evaluated runs, with published numbers beside ours.

Input: one summary per evaluated run (what evaluate.py writes), a plain dict:

    {"run": "falco_m0",                      # run name (directory name)
     "method": "falco",                      # falco | keyed | blur | pixelate | black_box | ...
     "dataset": "celebahq",                  # celebahq | lfw | ... (as in conf/data)
     "params": {"margin": 0.0, "lambda_id": 10.0},   # swept knobs, numbers or strings
     "metrics": {                            # name -> entry
         "reid_top1@facenet_vggface2": {"value": 0.012, "judge": "facenet_vggface2",
                                         "white_box": False},
         "detection@mtcnn": {"value": 0.99, "judge": "mtcnn", "white_box": None},
         "fid": {"value": 41.3, "judge": None, "white_box": None}}}

Metric names are "<kind>" or "<kind>@<judge>" (unique per run); the entry's "judge" and
"white_box" fields are what the tables read. Rates are fractions in [0, 1] (shown as %).
Kinds the layouts know:
    reid_top1, reid_top5            closed-set identification (falco/reid.py)
    reid_tar_far1e-3, reid_tar_far1e-2, reid_native   verification TAR; at the judge's rule
    detection                       detection rate, judge = detector
    fid, kid                        image quality (metrics/quality.py)
    attr_agreement_mean, attr_balanced_agreement_mean, attr_accuracy_mean,
    attr_balanced_accuracy_mean, attr_accuracy_originals_mean, attr_balanced_accuracy_originals_mean,
    attr_agreement.<Attribute>, attr_accuracy.<Attribute>, age_mae, gender_agreement
Any other "reid_*" kind also lands in the re-ID columns; other kinds only in all_metrics.csv.
Every re-ID column says whether its judge is white-box (used by the loss) or held-out.

Layouts: main (re-ID per judge, detection, FID/KID per method and dataset), attributes
(attribute preservation, one column per run), margin (runs sorted by params["margin"]).
Published values (paper_numbers.yaml) appear as extra rows/columns labelled with their source;
unknown values are empty cells. `write_tables` writes Markdown, LaTeX and CSV for each.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

PAPER_NUMBERS = Path(__file__).with_name("paper_numbers.yaml")
KIND_LABELS = {
    "reid_top1": "Re-ID top-1", "reid_top5": "Re-ID top-5", "reid_tar_far1e-3": "TAR@FAR1e-3",
    "reid_tar_far1e-2": "TAR@FAR1e-2", "reid_native": "Re-ID judge rule",
    "reid_nullface": "Re-ID NullFace protocol", "reid_paper": "Re-ID FALCO protocol",
    "detection": "Detection", "fid": "FID", "kid": "KID", "age_mae": "Age MAE (years)",
    "attr_agreement_mean": "Attribute agreement", "attr_balanced_agreement_mean": "Balanced agreement",
    "attr_accuracy_mean": "Attribute accuracy", "attr_balanced_accuracy_mean": "Balanced accuracy",
    "attr_accuracy_originals_mean": "Attribute accuracy of the originals",
    "attr_balanced_accuracy_originals_mean": "Balanced accuracy of the originals",
    "gender_agreement": "Gender agreement",
}
PERCENT = ("reid", "detection", "attr_", "gender_agreement")  # kinds shown as percentages
ORDER = ("reid_top1", "reid_top5", "reid_tar_far1e-3", "reid_tar_far1e-2", "reid_native")  # ours first
MAIN = ("reid", "detection", "fid", "kid")
ATTRIBUTES = ("attr_", "age_mae", "gender_agreement")
MARGIN = ("reid", "attr_agreement_mean", "attr_balanced_agreement_mean", "gender_agreement", "fid")
NOTE = ("Lower is better for re-ID, FID, KID and age MAE; higher for detection and attributes. "
        "white-box = the judge the anonymization loss used (optimistic); held-out = independent.")


@dataclass(frozen=True, order=True)
class Column:
    kind: str
    judge: str = ""
    box: str = ""  # "white-box" | "held-out" | "unlabelled" for re-ID kinds, else ""

    def label(self) -> str:
        unit = " %" if self.kind.startswith(PERCENT) else ""
        tags = ", ".join(t for t in (self.judge, self.box) if t)
        name = KIND_LABELS.get(self.kind, self.kind)
        if "." in self.kind:  # per-attribute kind, e.g. attr_agreement.Smiling
            base, attribute = self.kind.split(".", 1)
            name = f"{attribute} ({base.removeprefix('attr_').replace('_', ' ')})"
        return f"{name}{unit}" + (f" [{tags}]" if tags else "")


@dataclass
class Table:
    title: str
    header: list[str]
    rows: list[list]
    notes: list[str] = field(default_factory=list)
    text_columns: int = 1  # leading label columns (left-aligned in LaTeX)


def _column(kind: str, judge: str | None, white_box: bool | None) -> Column:
    box = ""
    if kind.startswith("reid"):
        box = {True: "white-box", False: "held-out"}.get(white_box, "unlabelled")
    return Column(kind, judge or "", box)


def ours(summary: dict, prefixes: Sequence[str]) -> dict[Column, float | None]:
    """{column: value} of one run's metrics whose kind starts with one of `prefixes`."""
    for key in ("run", "method", "dataset", "metrics"):
        if key not in summary:
            raise ValueError(f"summary without {key!r}: {sorted(summary)}")
    out = {}
    for name, m in summary["metrics"].items():
        kind = name.split("@")[0]
        if kind.startswith(tuple(prefixes)):
            out[_column(kind, m.get("judge"), m.get("white_box"))] = m.get("value")
    return out


def load_paper_numbers(path: str | os.PathLike | None = None) -> list[dict]:
    """Entries of paper_numbers.yaml (see its header for the fields)."""
    with open(path or PAPER_NUMBERS) as f:
        return list(yaml.safe_load(f)["entries"])


def published(entries: Sequence[dict], table: str) -> dict[tuple, dict[Column, float | None]]:
    """{(dataset, method, cite, margin): {column: value}} of one layout's published entries."""
    out: dict[tuple, dict] = {}
    for e in entries:
        if e.get("table") != table:
            continue
        key = (e["dataset"], e["method"], e["cite"], (e.get("params") or {}).get("margin"))
        out.setdefault(key, {})[_column(e["metric"], e.get("judge"), e.get("white_box"))] = e.get("value")
    return out


def _ordered(columns: set[Column], prefixes: Sequence[str]) -> list[Column]:
    """Columns grouped in the order of `prefixes` (re-ID first), then by kind and judge."""
    def rank(c: Column) -> tuple[int, int]:
        group = next((i for i, p in enumerate(prefixes) if c.kind.startswith(p)), len(prefixes))
        return group, ORDER.index(c.kind) if c.kind in ORDER else len(ORDER)
    return sorted(columns, key=lambda c: (rank(c), c))


def _scale(col: Column, value):
    """Display units: rates in %, others as given; None/NaN -> None (empty cell)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return 100.0 * value if col.kind.startswith(PERCENT) else float(value)


def _sources(entries: Sequence[dict], table: str) -> list[str]:
    seen = dict.fromkeys(f"{e['cite']}: {e['source']}" for e in entries if e.get("table") == table)
    return ["Published values. " + s for s in seen]


def main_table(summaries: Sequence[dict], paper: Sequence[dict] = ()) -> Table:
    """Rows: runs and published results per dataset; columns: re-ID per judge, detection, FID."""
    mine = [(s, ours(s, MAIN)) for s in summaries]
    pub = published(paper, "main")
    cols = _ordered({c for _, v in mine for c in v} | {c for v in pub.values() for c in v}, MAIN)
    rows = []
    for ds in sorted({s["dataset"] for s, _ in mine} | {k[0] for k in pub}):
        rows += [[ds, s["method"], s["run"], *(_scale(c, v.get(c)) for c in cols)]
                 for s, v in mine if s["dataset"] == ds]
        rows += [[ds, k[1], f"published: {k[2]}", *(_scale(c, v.get(c)) for c in cols)]
                 for k, v in pub.items() if k[0] == ds]
    return Table("Main comparison", ["Dataset", "Method", "Run", *(c.label() for c in cols)], rows,
                 [NOTE, *_sources(paper, "main")], text_columns=3)


def attribute_table(summaries: Sequence[dict], paper: Sequence[dict] = ()) -> Table:
    """Rows: attribute metrics (means first); columns: runs, then published results."""
    mine = {f"{s['dataset']}: {s['method']} ({s['run']})": ours(s, ATTRIBUTES) for s in summaries}
    mine |= {f"{k[0]}: {k[1]} ({k[2]})": v for k, v in published(paper, "attributes").items()}
    metrics = sorted({c for v in mine.values() for c in v},
                     key=lambda c: ("." in c.kind, not c.kind.startswith("attr_"), c))
    rows = [[c.label(), *(_scale(c, v.get(c)) for v in mine.values())] for c in metrics]
    return Table("Attribute preservation", ["Metric", *mine], rows, [NOTE, *_sources(paper, "attributes")])


def margin_table(summaries: Sequence[dict], paper: Sequence[dict] = (), param: str = "margin") -> Table:
    """Rows: runs that set params[param], sorted by it; columns: re-ID, attributes, FID."""
    runs = [s for s in summaries if param in (s.get("params") or {})]
    runs.sort(key=lambda s: (s["dataset"], s["method"], s["params"][param]))
    mine = [(s, ours(s, MARGIN)) for s in runs]
    pub = published(paper, "margin") if param == "margin" else {}
    cols = _ordered({c for _, v in mine for c in v} | {c for v in pub.values() for c in v}, MARGIN)
    rows = [[s["dataset"], s["method"], s["params"][param], s["run"], *(_scale(c, v.get(c)) for c in cols)]
            for s, v in mine]
    rows += [[k[0], k[1], k[3], f"published: {k[2]}", *(_scale(c, v.get(c)) for c in cols)]
             for k, v in pub.items()]
    return Table(f"Ablation over {param}", ["Dataset", "Method", param, "Run", *(c.label() for c in cols)],
                 rows, [NOTE, *_sources(paper, "margin")], text_columns=4)


def _cell(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.3f}" if abs(v) < 1 else f"{v:.2f}"
    return str(v)


def to_markdown(t: Table) -> str:
    lines = [f"### {t.title}", "", "| " + " | ".join(t.header) + " |",
             "|" + "|".join("---" for _ in t.header) + "|"]
    lines += ["| " + " | ".join(_cell(v) for v in r) + " |" for r in t.rows]
    return "\n".join(lines + [""] + [f"- {n}" for n in t.notes]) + "\n"


def _tex(s: str) -> str:
    for a, b in (("\\", r"\textbackslash{}"), ("_", r"\_"), ("%", r"\%"), ("&", r"\&"), ("#", r"\#")):
        s = s.replace(a, b)
    return s


def to_latex(t: Table) -> str:
    spec = "l" * t.text_columns + "r" * max(len(t.header) - t.text_columns, 0)
    lines = [f"% {_tex(n)}" for n in t.notes]
    lines += [f"\\begin{{tabular}}{{{spec}}}", "\\toprule",
              " & ".join(_tex(h) for h in t.header) + r" \\", "\\midrule"]
    lines += [" & ".join(_tex(_cell(v)) for v in r) + r" \\" for r in t.rows]
    return "\n".join(lines + ["\\bottomrule", "\\end{tabular}"]) + "\n"


def to_csv(t: Table) -> str:
    """Full-precision values in the displayed units (rates in %), empty where unknown."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(t.header)
    w.writerows([["" if v is None else v for v in r] for r in t.rows])
    return buf.getvalue()


def all_metrics_csv(summaries: Sequence[dict]) -> str:
    """Long format, one line per (run, metric), raw values: everything, for other tools."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["run", "method", "dataset", "params", "metric", "judge", "white_box", "value"])
    for s in summaries:
        params = json.dumps(s.get("params") or {}, sort_keys=True)
        for name, m in s["metrics"].items():
            w.writerow([s["run"], s["method"], s["dataset"], params, name, m.get("judge") or "",
                        m.get("white_box"), m.get("value")])
    return buf.getvalue()


def _write(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def write_tables(summaries: Sequence[dict], out_dir: str | os.PathLike,
                 paper_numbers: str | os.PathLike | Sequence[dict] | None = None) -> dict[str, Path]:
    """Write {main, attributes, margin}.{md, tex, csv} and all_metrics.csv; returns their paths.

    paper_numbers: a YAML path, already loaded entries, or None for evaluation/paper_numbers.yaml.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if paper_numbers is None or isinstance(paper_numbers, (str, os.PathLike)):
        paper = load_paper_numbers(paper_numbers)
    else:
        paper = list(paper_numbers)
    tables = {"main": main_table(summaries, paper), "attributes": attribute_table(summaries, paper),
              "margin": margin_table(summaries, paper)}
    paths = {}
    for name, t in tables.items():
        for ext, render in (("md", to_markdown), ("tex", to_latex), ("csv", to_csv)):
            paths[f"{name}.{ext}"] = out / f"{name}.{ext}"
            _write(paths[f"{name}.{ext}"], render(t))
    paths["all_metrics.csv"] = out / "all_metrics.csv"
    _write(paths["all_metrics.csv"], all_metrics_csv(summaries))
    return paths
