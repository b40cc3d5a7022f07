"""`experiments=paper`: the paper's scale as a preset, and the per-stage time estimate it prints.

The estimator (falco/estimate.py) is run on the embedded default with tiny counts: one line per
stage the run has, each with a positive time per item, and the totals are the counts times the
measured seconds (double the pool: double the pool's estimate, nothing else moves).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

import train
from falco.backbones.checkpoints import EXIT_MISSING_WEIGHTS
from falco.estimate import counts, plan, print_estimate, stages_of
from falco.pipeline import StageKnobs
from tests.conftest import FAST, ROOT, compose_train

# [estimate] <stage>: <count> <unit> x <seconds> s = H:MM:SS on <device> (<precision>)
LINE = re.compile(
    r"^\[estimate\] ([a-z ]+): (\d+) (\w+) x ([0-9.]+) s = (\d+:\d\d:\d\d) on (\S+) \((fp32|bf16|fp16)\)$")
TINY = [*FAST, "data.identities=2", "stages.pool_size=16", "stages.frame_samples=4", "method.steps=3"]


def test_the_preset_composes_at_the_papers_scale_with_celebahq():
    cfg = compose_train(["experiments=paper", "data=celebahq", "data.root=/tmp"])
    job = OmegaConf.to_container(cfg, resolve=True)  # every interpolation resolves
    assert job["data"]["_target_"] == "falco.data.sources.celebahq" and job["data"]["split"] == "all"
    nets = {k: job[k]["net"]["_target_"].rsplit(".", 1)[-1] for k in ("generator", "identity", "attributes",
                                                                       "inversion")}
    assert nets == {"generator": "load_genforce_stylegan2", "identity": "load_arcface_irse50",
                    "attributes": "load_farl", "inversion": "load_e4e"}
    assert job["stages"]["pool_size"] == 60000 and job["estimate"] is True
    assert job["generator"]["net"]["truncation_psi"] == 0.7
    method = {k: job["method"][k] for k in ("name", "steps", "lr", "milestones", "gamma", "id_weight",
                                            "attr_weight", "margin", "id_loss", "init", "faithful_quirks")}
    assert method == {"name": "falco", "steps": 50, "lr": 0.01, "milestones": [0.75, 0.9], "gamma": 0.8,
                      "id_weight": 10.0, "attr_weight": 0.1, "margin": 0.0, "id_loss": "two_sided",
                      "init": "fake", "faithful_quirks": False}
    assert job["method"]["views"]["views"] == 0 and job["stages"]["pairing_views"] == 0
    # CelebA-HQ is the preset's own dataset; a dataset given on the command line still wins
    assert compose_train(["experiments=paper", "data.root=/tmp"]).data._target_.endswith("celebahq")
    assert compose_train(["experiments=paper", "data=folder", "data.root=/tmp"]).data._target_.endswith("folder")
    assert compose_train([]).estimate is False  # off by default
    # the margin stays the recognizer's own: a dlib distance when that recognizer is chosen
    assert compose_train(["experiments=paper", "identity=dlib_resnet", "data.root=/tmp"]).method.margin == 0.75


def test_without_the_official_weights_the_run_stops_naming_the_files_before_any_estimate(tmp_path, capsys):
    # tests/conftest.py points FALCO_WEIGHTS at an empty folder: nothing is found, nothing is fetched
    cfg = compose_train(["experiments=paper", "data=folder", f"data.root={tmp_path}", "logger=none",
                         f"cache_dir={tmp_path / 'cache'}"])
    with pytest.raises(Exception, match="stylegan2_ffhq1024.pth"):
        train.run(cfg, str(tmp_path / "run"))
    assert "[estimate]" not in capsys.readouterr().out


def test_train_py_without_the_weights_prints_one_line_per_missing_file_and_exits_5(tmp_path):
    """Not Hydra's traceback: the message (file, where to put it, `./run weights`) and its own exit code."""
    env = {**os.environ, "FALCO_WEIGHTS": str(tmp_path / "weights")}
    done = subprocess.run([sys.executable, "train.py", "experiments=paper", "data=folder", f"data.root={tmp_path}",
                           "logger=none", f"cache_dir={tmp_path / 'cache'}", f"run_dir={tmp_path / 'run'}"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    out = done.stdout + done.stderr
    assert done.returncode == EXIT_MISSING_WEIGHTS, out[-3000:]
    [line] = [x for x in out.splitlines() if x.startswith("[weights] ")]
    assert "stylegan2_ffhq1024.pth" in line and "./run weights" in line and str(tmp_path / "weights") in line
    assert "Traceback" not in out and "Error executing job" not in out


@pytest.fixture(scope="module")
def embedded():
    """The embedded default's networks, data source, knobs, method and trainer, at tiny counts."""
    cfg = compose_train(TINY)
    nets = train.build_networks(cfg)
    source = instantiate(cfg.data, generator=nets.generator)
    trainer = train.build_trainer(cfg, "unused")
    return nets, source, StageKnobs(**cfg.stages), train.method_config(cfg), trainer


def test_the_estimate_prints_each_stage_and_scales_with_the_counts(embedded, capsys):
    torch.set_num_threads(1)  # timings only: one thread does not spin against a shared machine's neighbours
    nets, source, knobs, method, trainer = embedded
    estimates = print_estimate(nets, source, method, knobs, trainer, "cpu")
    out = capsys.readouterr().out.splitlines()
    lines = [m.groups() for m in map(LINE.match, out) if m]
    stages = ("frame", "prepare", "fake pool", "pairing", "optimization", "summary")  # no inversion configured
    assert tuple(g[0] for g in lines) == stages == stages_of(nets) == tuple(e.stage for e in estimates)
    assert {g[0]: (int(g[1]), g[2]) for g in lines} == {
        "frame": (4, "samples"), "prepare": (2, "photos"), "fake pool": (16, "fakes"), "pairing": (2, "photos"),
        "optimization": (2, "images"), "summary": (2, "images")}
    assert all(float(g[3]) > 0 and g[5] == "cpu" for g in lines)
    precision = {"bf16-mixed": "bf16", "32-true": "fp32"}[str(trainer.precision)]
    # the trainer's precision but for prepare (MTCNN) and the summary, as the run computes them
    assert [g[6] for g in lines] == [precision, "fp32", precision, precision, precision, "fp32"]
    assert any(line.startswith("[estimate] total: ") for line in out)
    # the totals are the counts times the measured seconds per item
    units = {e.stage: e.unit_seconds for e in estimates}
    base = counts(source, knobs)
    once = {e.stage: e.seconds for e in plan(units, base, "cpu", precision)}
    twice = {e.stage: e.seconds for e in plan(units, {**base, "fake pool": 2 * base["fake pool"]}, "cpu", precision)}
    assert once == {e.stage: e.seconds for e in estimates}
    assert twice["fake pool"] == pytest.approx(2 * once["fake pool"]) and once["fake pool"] > 0
    assert {k: v for k, v in twice.items() if k != "fake pool"} == {k: v for k, v in once.items() if k != "fake pool"}


def test_the_optimization_estimate_follows_the_steps_and_is_spread_over_ranks(embedded):
    nets, source, knobs, method, trainer = embedded
    [opt] = plan({"optimization": 2.0}, counts(source, knobs), "cpu", "bf16", ranks=4)
    assert opt.count == 2 and opt.seconds == pytest.approx(2 * 2.0 / 4) and "/ 4 ranks" in opt.line()
    assert stages_of(nets, summary=False) == ("frame", "prepare", "fake pool", "pairing", "optimization")
    assert stages_of(nets, stages_only=True) == ("frame", "prepare", "fake pool", "pairing")
