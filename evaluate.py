"""Evaluate a run directory: privacy (re-ID per judge) and utility (attributes, detection,
landmarks, image quality). Loads, calls evaluation.run_eval, saves; nothing else.

    python evaluate.py run_dir=outputs/RUN
    python evaluate.py run_dir=outputs/RUN baseline=blur          # a baseline on the same originals
    python evaluate.py run_dir=outputs/RUN judges.facenet_vggface2.enabled=true
"""

from __future__ import annotations

import json
from pathlib import Path

import hydra
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from evaluation.run_eval import attribute_metrics, geometry_and_detection, judge_metrics, load_run
from evaluation.summary import flatten
from falco.data.imageio import atomic_write_text


def evaluate(cfg: DictConfig) -> dict:
    run_dir = Path(cfg.run_dir)
    data = load_run(run_dir, cfg.cache_dir, cfg.baseline)
    method = cfg.baseline or data.run_config.method.name
    results: dict = {"judges": []}
    for name, judge_cfg in cfg.judges.items():
        if judge_cfg.enabled:
            results["judges"].append(judge_metrics(name, instantiate(judge_cfg.net), data, tuple(cfg.far)))
    results.update(geometry_and_detection(data, cfg.detection_threshold))
    if cfg.attributes and data.run_config.attributes.get("net") is not None:
        results["attributes"] = attribute_metrics(instantiate(data.run_config.attributes.net), data, True)
    if cfg.inception_weights:
        from evaluation.metrics.quality import image_quality

        results["quality"] = image_quality(data.originals, data.anonymized, weights_path=cfg.inception_weights)
    summary = {"run": str(run_dir), "method": method, "dataset": str(data.run_config.data._target_).split(".")[-1],
               "params": {"margin": data.run_config.method.get("margin"),
                          "id_weight": data.run_config.method.id_weight,
                          "attr_weight": data.run_config.method.attr_weight},
               "metrics": flatten(results), "details": results}
    out = run_dir / "eval" / (cfg.name or method)
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=1))
    _log(cfg, out, summary)
    return summary


def _log(cfg: DictConfig, out: Path, summary: dict) -> None:
    if not cfg.logger.get("_target_"):
        return
    logger = instantiate(cfg.logger, save_dir=str(out))
    logger.log_metrics({f"eval/{k}": v["value"] for k, v in summary["metrics"].items() if v["value"] is not None})
    logger.save()


def report(summary: dict) -> str:
    lines = [f"{summary['method']} on {summary['run']}"]
    for k, v in summary["metrics"].items():
        tag = "" if v["white_box"] is None else (" [WHITE-BOX]" if v["white_box"] else " [held-out]")
        value = "n/a" if v["value"] is None else f"{v['value']:.4f}"
        lines.append(f"  {k:40s} {value}{tag}")
    return "\n".join(lines)


@hydra.main(version_base="1.3", config_path="conf", config_name="evaluate")
def main(cfg: DictConfig) -> None:
    OmegaConf.resolve(cfg)
    print(report(evaluate(cfg)))


if __name__ == "__main__":
    main()
