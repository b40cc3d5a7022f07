"""Privacy-utility plot: re-identification rate vs attribute agreement across a sweep.

One point per evaluated run (summaries as in evaluation/tables.py). Runs of one method on one
dataset form a line ordered by the swept parameter (e.g. FALCO's margin m), each point labelled
with its value; runs without that parameter (baselines such as blur) are single labelled
markers. Down-left is private, up is useful: the best trade-off sits top-left.
Rendered with matplotlib's Agg canvas (no display, no global pyplot state).
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path


def privacy_utility_points(summaries: Sequence[dict], *, reid_metric: str, utility_metric: str,
                           param: str = "margin") -> list[dict]:
    """[{"series", "run", "param" (value or None), "reid", "utility"}] from run summaries.

    reid_metric / utility_metric: metric names as in the summaries, e.g.
    "reid_top1@facenet_vggface2" and "attr_agreement_mean@celeba_resnet18". Runs missing
    either metric (or with NaN) are left out.
    """
    points = []
    for s in summaries:
        m = s["metrics"]
        if reid_metric not in m or utility_metric not in m:
            continue
        reid, util = m[reid_metric]["value"], m[utility_metric]["value"]
        if reid is None or util is None or math.isnan(reid) or math.isnan(util):
            continue
        points.append({"series": f"{s['dataset']}: {s['method']}", "run": s["run"],
                       "param": (s.get("params") or {}).get(param), "reid": reid, "utility": util})
    return points


def plot_privacy_utility(points: Sequence[dict], out_path: str | os.PathLike, *, param: str = "margin",
                         x_label: str = "re-identification rate (%)",
                         y_label: str = "attribute agreement (%)", title: str | None = None) -> Path:
    """Write the PNG (rates given as fractions are drawn in %); returns its path."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not points:
        raise ValueError("no points to plot: do the summaries carry both metrics?")
    fig = Figure(figsize=(6, 4.5), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for i, series in enumerate(sorted({p["series"] for p in points})):
        color = f"C{i % 10}"  # one colour per series, shared by its line and its markers
        mine = [p for p in points if p["series"] == series]
        swept = sorted((p for p in mine if p["param"] is not None), key=lambda p: p["param"])
        single = [p for p in mine if p["param"] is None]
        if swept:
            ax.plot([100 * p["reid"] for p in swept], [100 * p["utility"] for p in swept],
                    marker="o", color=color, label=f"{series} ({param})")
            for p in swept:
                ax.annotate(f"{param}={p['param']:g}" if isinstance(p["param"], (int, float))
                            else f"{param}={p['param']}", (100 * p["reid"], 100 * p["utility"]),
                            textcoords="offset points", xytext=(4, 4), fontsize=7)
        for p in single:
            ax.scatter([100 * p["reid"]], [100 * p["utility"]], marker="s", color=color,
                       label=f"{series} ({p['run']})")
    ax.set_xlabel(x_label)
    ax.set_ylabel(y_label)
    ax.set_title(title or f"Privacy-utility trade-off over {param}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, suffix=".png")
    os.close(fd)
    fig.savefig(tmp, format="png")
    os.replace(tmp, out)
    return out


def plot_sweep(summaries: Sequence[dict], out_path: str | os.PathLike, *, reid_metric: str,
               utility_metric: str, param: str = "margin") -> Path:
    """Summaries -> privacy-utility PNG, axes named after the two metrics."""
    points = privacy_utility_points(summaries, reid_metric=reid_metric, utility_metric=utility_metric,
                                    param=param)
    return plot_privacy_utility(points, out_path, param=param, x_label=f"{reid_metric} (%)",
                                y_label=f"{utility_metric} (%)")
