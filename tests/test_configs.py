"""Every config option composes; every embedded one instantiates; official ones fail clearly."""

from __future__ import annotations

import re

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.utils import instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf

from falco.backbones.checkpoints import MissingWeights
from falco.config import MethodConfig, validate
from tests.conftest import ROOT, compose_train

GROUPS = {g: sorted(p.stem for p in (ROOT / "conf" / g).glob("*.yaml"))
          for g in ("data", "generator", "identity", "attributes", "inversion", "method", "trainer", "logger")}
EXPERIMENTS = sorted(p.stem for p in (ROOT / "experiments").glob("*.yaml"))
OFFICIAL = {"stylegan2_ffhq1024", "stylegan2_ada", "arcface_irse50", "farl", "e4e"}


def _holds(composed, written) -> bool:
    """`composed` has every key of `written` with its value (a schema may add keys of its own)."""
    if isinstance(written, dict):
        return isinstance(composed, dict) and all(k in composed and _holds(composed[k], v) for k, v in written.items())
    return composed == written


def _written(group: str, option: str) -> dict:
    raw = OmegaConf.to_container(OmegaConf.load(ROOT / "conf" / group / f"{option}.yaml"))
    return {k: v for k, v in raw.items() if k != "defaults"}


@pytest.mark.parametrize("group,option", [(g, o) for g, opts in GROUPS.items() for o in opts])
def test_every_option_composes(group, option):
    extra = ["data.root=/tmp"] if group == "data" and option != "synthetic" else []
    cfg = compose_train([f"{group}={option}", *extra])
    written = _written(group, option)
    assert written  # an empty file would make the check below vacuous
    if extra:
        assert written.pop("root") == "???" and cfg.data.root == "/tmp"  # required, and the override landed
    assert _holds(OmegaConf.to_container(cfg[group]), written), (group, option)


@pytest.mark.parametrize("group,option", [("generator", "dcgan"), ("identity", "dlib_resnet"),
                                          ("attributes", "age_gender")])
def test_embedded_backbones_instantiate(group, option):
    net = instantiate(compose_train([f"{group}={option}"])[group].net)
    assert not any(p.requires_grad for p in net.parameters()) and not net.training


@pytest.mark.parametrize("group,option", [(g, o) for g in ("generator", "identity", "attributes", "inversion")
                                          for o in GROUPS[g] if o in OFFICIAL])
def test_official_backbone_without_file_names_file_and_source(group, option, tmp_path):
    cfg = compose_train([f"{group}={option}", f"{group}.checkpoint={tmp_path / 'absent.pth'}"])
    with pytest.raises(Exception, match=f"{group}.checkpoint") as err:  # Hydra wraps it
        instantiate(cfg[group].net)
    assert isinstance(err.value.__cause__ or err.value, MissingWeights)
    assert "absent.pth" in str(err.value) and "published" in str(err.value)


def _resolved_job(cfg: DictConfig) -> dict:
    """The job's config (everything but `hydra`), fully resolved; raises on any bad interpolation."""
    return {k: OmegaConf.to_container(cfg[k], resolve=True) if isinstance(cfg[k], DictConfig | ListConfig)
            else cfg[k] for k in cfg if k != "hydra"}


def test_experiments_are_found():
    assert EXPERIMENTS == ["margin_sweep", "optuna_search"]


@pytest.mark.parametrize("name", EXPERIMENTS)
@pytest.mark.parametrize("data", GROUPS["data"])
@pytest.mark.parametrize("identity", GROUPS["identity"])
def test_every_experiment_resolves_with_every_dataset_and_recognizer(name, data, identity):
    root = [] if data == "synthetic" else ["data.root=/tmp"]
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=[f"experiments={name}", f"data={data}", f"identity={identity}", *root],
                      return_hydra_config=True)
    assert "experiments" not in cfg  # `# @package _global_` took effect: its keys are the run's own
    job = _resolved_job(cfg)
    # An experiment adds no data knob the dataset's source does not take (data.identities is synthetic's).
    assert set(job["data"]) == set(_written("data", data))
    sweeper = OmegaConf.to_container(cfg.hydra.sweeper, resolve=True)
    margin = sweeper["params"]["method.margin"]
    [override] = OverridesParser.create().parse_overrides([f"method.margin={margin}"])
    assert override.is_sweep_override()
    # The margins searched are in the recognizer's own score, inside its range.
    lo, hi = job["identity"]["margin_range"]
    values = [float(v) for v in re.findall(r"-?\d+(?:\.\d+)?", margin)]
    assert lo < hi and len(values) >= 2 and all(lo <= v <= hi for v in values), margin
    grid = [float(v) for v in job["identity"]["margin_grid"].split(",")]
    assert values == ([lo, hi] if name == "optuna_search" else grid)
    assert lo <= job["method"]["margin"] == job["identity"]["margin"] <= hi


@pytest.mark.parametrize("method", GROUPS["method"])
def test_method_margin_and_attr_weight_are_the_recognizer_and_attribute_configs(method):
    defaults = compose_train([f"method={method}"])
    assert (defaults.method.margin, defaults.method.attr_weight) == (0.75, 1.0)  # dlib distance, age_gender
    official = _resolved_job(compose_train([f"method={method}", "identity=arcface_irse50", "attributes=farl"]))
    assert (official["method"]["margin"], official["method"]["attr_weight"]) == (0.0, 0.1)  # cosine m = 0, paper
    given = compose_train([f"method={method}", "method.margin=0.5", "method.attr_weight=2"])
    assert (given.method.margin, given.method.attr_weight) == (0.5, 2.0)


def test_validate_refuses_a_start_without_its_network():
    plain = MethodConfig(margin=0.75, attr_weight=1.0)
    validate(plain, has_inversion=False)  # the embedded default: fake start, no inversion needed
    with pytest.raises(ValueError, match="method.init=inversion .* inversion=none"):
        validate(MethodConfig(margin=0.75, attr_weight=1.0, init="inversion"), has_inversion=False)
    validate(MethodConfig(margin=0.75, attr_weight=1.0, init="inversion"), has_inversion=True)
    with pytest.raises(ValueError, match="keeps the inversion's coarse and fine layers"):
        validate(plain, has_inversion=False, layered=True)
    with pytest.raises(ValueError, match="method.margin must be a number"):
        validate(MethodConfig(attr_weight=1.0), has_inversion=False)


def test_keyed_mode_starts_from_the_virtual_face_only():
    keyed = OmegaConf.to_object(compose_train(["method=keyed"]).method)
    assert keyed.init == "virtual"
    validate(keyed, has_inversion=False)
    keyed.init = "fake"  # the keyed mode has no other start: refused, not ignored
    with pytest.raises(ValueError, match="method.init must be one of .'virtual',. with method=keyed"):
        validate(keyed, has_inversion=False)
    with pytest.raises(ValueError, match="must be one of .'fake', 'inversion'. with method=falco"):
        validate(MethodConfig(margin=0.75, attr_weight=1.0, init="virtual"))


def test_logger_none_builds_no_logger(tmp_path):
    from pytorch_lightning.loggers import CSVLogger

    from train import build_trainer

    assert build_trainer(compose_train(["logger=none"]), str(tmp_path)).loggers == []
    [csv] = build_trainer(compose_train(["logger=csv"]), str(tmp_path)).loggers
    assert isinstance(csv, CSVLogger) and csv.save_dir == str(tmp_path)


def test_trainers_instantiate(tmp_path):
    from train import build_trainer

    for option in ("cpu", "ddp_sim"):
        cfg = compose_train([f"trainer={option}", "logger=none"])
        assert cfg.trainer.precision == "auto"  # resolved by build_trainer, not by Lightning
        trainer = build_trainer(cfg, str(tmp_path))
        assert trainer.predict_loop is not None and cfg.trainer.precision in ("bf16-mixed", "32-true")
