"""Evaluate a run directory: privacy (re-ID per judge) and utility (attributes, detection,
landmarks, image quality). Loads, calls evaluation.run_eval, saves; nothing else.

    python evaluate.py run_dir=outputs/RUN
    python evaluate.py run_dir=outputs/RUN baseline=blur          # a baseline on the same originals
    python evaluate.py run_dir=outputs/RUN judges.facenet_vggface2.enabled=true
    python evaluate.py run_dir=outputs/RUN attribute_classifier=weights/celeba_resnet18.pt

Exit code 5 when a weight file a judge needs is missing (one line names it and where it comes from).
"""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig, OmegaConf

from evaluation.run_eval import evaluate
from falco.backbones.checkpoints import EXIT_MISSING_WEIGHTS, missing_weights


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
    try:
        print(report(evaluate(cfg)))
    except Exception as error:  # a missing weight file: its message and exit code 5, not a traceback
        missing = missing_weights(error)
        if missing is None:
            raise
        print(f"[weights] {missing}", flush=True)
        sys.exit(EXIT_MISSING_WEIGHTS)


if __name__ == "__main__":
    main()
