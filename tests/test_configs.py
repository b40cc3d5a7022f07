"""Every config option composes onto its schema (falco/schema.py) to the values it always had; a bad
key, type or choice fails at compose; every embedded option instantiates; official ones fail clearly."""

from __future__ import annotations

import dataclasses
import inspect
import json
import re
import shutil
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest
import pytorch_lightning as pl
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import ConfigCompositionException
from hydra.utils import instantiate
from omegaconf import MISSING, DictConfig, ListConfig, OmegaConf

from falco.backbones.checkpoints import MissingWeights
from falco.config import MethodConfig, validate
from falco.pipeline import StageKnobs
from falco.schema import (
    SCHEMAS,
    AlignmentFailure,
    CelebAHQData,
    CelebASplit,
    DetectorConfig,
    FolderData,
    HeldoutAttribute,
    HeldoutRecognizer,
    IdLoss,
    LFWData,
    SyntheticData,
    TrainConfig,
)
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


def _raw(path: Path) -> dict:
    raw = OmegaConf.to_container(OmegaConf.load(path))
    assert isinstance(raw, dict)
    return raw


def _written(group: str, option: str) -> dict:
    return {k: v for k, v in _raw(ROOT / "conf" / group / f"{option}.yaml").items() if k != "defaults"}


def _schema_name(path: Path) -> str:
    """The schema a config extends: the `*_schema` entry of its defaults list (each lists one, first)."""
    defaults = _raw(path).get("defaults", [])
    [name] = [d.split("@")[0] for d in defaults if isinstance(d, str) and d.split("@")[0].endswith("_schema")]
    assert defaults[0].split("@")[0] == name, f"{path}: the schema comes first, before _self_"
    return name


@pytest.mark.parametrize("group,option", [(g, o) for g, opts in GROUPS.items() for o in opts])
def test_every_option_composes_onto_its_schema(group, option):
    extra = ["data.root=/tmp"] if group == "data" and option != "synthetic" else []
    cfg = compose_train([f"{group}={option}", *extra])
    schema = SCHEMAS[(group, _schema_name(ROOT / "conf" / group / f"{option}.yaml"))]
    assert OmegaConf.get_type(cfg[group]) is schema  # typed: an unknown key or a wrong type fails at compose
    composed = OmegaConf.to_container(cfg[group])
    assert set(composed) == {f.name for f in fields(schema)}  # nothing but the schema's knobs
    written = _written(group, option)
    if extra:
        assert cfg.data.root == "/tmp"  # required (MISSING in the schema), and the override landed
    assert _holds(composed, written), (group, option)


def _schema_defaults(schema: type) -> dict:
    return OmegaConf.to_container(OmegaConf.structured(schema))  # MISSING stays "???"


def _repeats(written, default, key: str = "") -> list[str]:
    """Keys `written` sets to the value the schema already defaults to (a second source of it)."""
    if isinstance(written, dict) and isinstance(default, dict):
        return [r for k, v in written.items() if k in default for r in _repeats(v, default[k], f"{key}{k}.")]
    return [key.rstrip(".")] if written == default and default != "???" else []


@pytest.mark.parametrize("path", sorted(p.relative_to(ROOT / "conf").as_posix() for p in (ROOT / "conf").rglob("*.yaml")
                                        if _raw(p).get("defaults") and p.parent.name != "launcher"))
def test_one_source_per_default(path):
    """A config sets only what its schema leaves open (MISSING) or what it changes: each default
    is written once, in the schema (falco/schema.py) or in the option's own file."""
    file = ROOT / "conf" / path
    names = [d for d in _raw(file)["defaults"] if isinstance(d, str) and d.split("@")[0].endswith("_schema")]
    if not names:  # a primary config without a schema of its own (evaluate, train_classifier)
        assert path in ("evaluate.yaml", "train_classifier.yaml"), path
        return
    group = None if "/" not in path else path.split("/")[0]
    [name] = names
    name, _, package = name.partition("@")
    written = {k: v for k, v in _raw(file).items() if k != "defaults"}
    written = written.get(package, {}) if package else written
    assert not _repeats(written, _schema_defaults(SCHEMAS[(group, name)])), path


def test_train_yaml_leaves_the_blocks_to_their_schemas():
    written = _raw(ROOT / "conf" / "train.yaml")
    assert not {"stages", "heldout", "detector"} & set(written)  # their defaults: StagesConfig, ...
    assert "heldout" not in _raw(ROOT / "conf" / "evaluate.yaml")  # evaluate.yaml shares HeldoutConfig
    groups = {g for d in written["defaults"] if isinstance(d, dict) for g in d}
    for f in fields(TrainConfig):  # the run's own scalars: their defaults are train.yaml's
        if f.default is MISSING and f.name not in groups:
            assert f.name in written, f.name


# What a default run (and a few others) composes to: the values of the configs before the schemas
# took the defaults over (same numbers, same choices), checked knob by knob.
DEFAULT_RUN = {
    "cache_dir": ".cache/falco", "batch_size": 16, "max_in_flight": None, "num_workers": 0, "summary": True,
    "progress_every_s": 30, "device": "auto", "shard": None, "stages_only": False, "release_tar": False,
    "objective": None,
    "method": {"name": "falco", "steps": 50, "lr": 0.01, "milestones": [0.75, 0.9], "gamma": 0.8, "id_weight": 10.0,
               "attr_weight": 3.0, "margin": 0.75, "id_loss": "two_sided", "init": "fake", "virtual_weight": 0.0,
               "faithful_quirks": False, "batch_invariant": False,
               "views": {"views": 4, "shift": 0.04, "zoom": 0.06, "rotate_deg": 6.0, "blur_sigma": 0.8, "color": 0.12}},
    "stages": {"pool_size": 1024, "pool_seed": 0, "pairing_unique": None, "pairing_detectable_only": True,
               "pairing_views": 0, "frame_samples": 64, "batch": 32, "alignment_failure": "skip"},
    "heldout": {"enabled": True, "recognizers": ["sface", "lightcnn_v4", "faceplugin_mfn"], "detector": True,
                "attributes": ["adience", "faceapi", "mini_xception", "faceplugin", "faceres"]},  # faceres: 2026-12-03
    "detector": {"min_prob": 0.9},
    "data": {"_target_": "falco.data.sources.synthetic", "identities": 16, "views": 1, "seed": 0, "check_faces": True,
             "check_min_prob": 0.95, "photo_size": 128, "augment": False, "rotate_deg": 10.0, "scale_jitter": 0.12,
             "shift_jitter": 0.06, "color_jitter": 0.15, "jpeg_quality": [60, 95]},
    "generator": {"net": {"_target_": "falco.backbones.dcgan.load_dcgan", "path": None}, "alignment": "template"},
    "identity": {"net": {"_target_": "falco.backbones.dlib_resnet.load_dlib_recognizer", "path": None},
                 "margin": 0.75, "margin_range": [0.6, 1.0], "margin_grid": "0.6,0.7,0.75,0.8,0.9"},
    "attributes": {"net": {"_target_": "falco.backbones.age_gender.load_age_gender"}, "attr_weight": 3.0, "views": 4,
                   "pairing_unique": True},
    "inversion": {"net": None},
    "trainer": {"_target_": "pytorch_lightning.Trainer", "accelerator": "cpu", "devices": 1, "precision": "auto",
                "inference_mode": False, "enable_checkpointing": False, "enable_progress_bar": True},
    "logger": {"_target_": "pytorch_lightning.loggers.CSVLogger", "name": "logs"},
}
KEYED = {"name": "keyed", "key_file": None, "key_env": "FALCO_KEY", "steps": 50, "lr": 0.03, "milestones": [0.75, 0.9],
         "gamma": 0.8, "id_weight": 10.0, "attr_weight": 3.0, "margin": 0.75, "id_loss": "hinge", "init": "virtual",
         "virtual_weight": 10.0, "grouping": "auto", "cluster_threshold": None, "cluster_linkage": "complete",
         "candidates": 16, "attribute_keep": 4, "distinctiveness": 2.0, "reject_original": None,
         "min_separation": None, "max_draws": 256, "center_samples": 256, "faithful_quirks": False,
         "batch_invariant": False, "views": {"views": 0}}  # keyed mode: no attribute views unless asked
PHOTOS = {"root": "/tmp", "limit": None, "max_pixels": 150_000_000, "min_side": 16}
DATA = {"folder": {"_target_": "falco.data.sources.folder", **PHOTOS, "labels": None},  # labels: added 2026-12-03
        "lfw": {"_target_": "falco.data.sources.lfw", **PHOTOS, "pairs_file": "pairs.txt"},
        "celebahq": {"_target_": "falco.data.sources.celebahq", **PHOTOS, "split": "all", "require_identity": False,
                     "partition_file": None, "identity_file": None}}
TRAINERS = {"gpu": {"accelerator": "gpu", "devices": 1, "precision": "auto", "enable_progress_bar": True},
            "ddp": {"accelerator": "gpu", "devices": -1, "num_nodes": 1, "strategy": "ddp", "precision": "auto",
                    "inference_mode": False, "enable_checkpointing": False},
            "ddp_sim": {"accelerator": "cpu", "devices": 2, "strategy": "ddp_spawn", "precision": "auto",
                        "inference_mode": False, "enable_progress_bar": False}}


def _job(overrides: list[str]) -> dict:
    return _resolved_job(compose_train(overrides))


def test_default_run_composes_to_the_values_it_always_had():
    job = _job([])
    assert _holds(job, DEFAULT_RUN)
    assert job["run_dir"].startswith("outputs/")
    # The schema's additions are Lightning's own defaults, so the Trainer is built as before.
    lightning = inspect.signature(pl.Trainer).parameters
    for extra in set(job["trainer"]) - set(DEFAULT_RUN["trainer"]) - {"_target_"}:
        assert job["trainer"][extra] == lightning[extra].default, extra
    assert set(job["inversion"]) - set(DEFAULT_RUN["inversion"]) == {"needs_generator"}
    assert job["inversion"]["needs_generator"] is False


def test_other_runs_compose_to_the_values_they_always_had():
    assert _holds(_job(["method=keyed"])["method"], KEYED)
    official = _job(["method=keyed", "identity=arcface_irse50", "attributes=farl", "generator=stylegan2_ffhq1024",
                     "inversion=e4e", "trainer=ddp", "logger=wandb"])
    assert _holds(official, {
        "method": {"margin": 0.0, "attr_weight": 0.1, "views": {"views": 0}},
        "identity": {"checkpoint": None, "margin": 0.0, "margin_range": [-0.25, 0.25],
                     "net": {"_target_": "falco.backbones.arcface.load_arcface_irse50", "path": None}},
        "attributes": {"checkpoint": None, "attr_weight": 0.1, "views": 0, "pairing_unique": False,
                       "net": {"_target_": "falco.backbones.farl.load_farl", "path": None, "normalize": True}},
        "generator": {"alignment": "ffhq", "net": {"path": None, "truncation_psi": 0.7}},
        "inversion": {"net": {"_target_": "falco.backbones.e4e.load_e4e", "path": None}, "needs_generator": False},
        "trainer": TRAINERS["ddp"],
        "logger": {"_target_": "pytorch_lightning.loggers.WandbLogger", "project": "falco", "offline": True,
                   "log_model": False}})
    farl = _job(["attributes=farl", "generator=stylegan2_ada", "generator.checkpoint=/g.pkl", "inversion=projection"])
    assert _holds(farl, {"method": {"attr_weight": 0.1, "views": {"views": 0}},
                         "generator": {"net": {"path": "/g.pkl", "truncation_psi": 0.7}, "alignment": "ffhq"},
                         "inversion": {"net": {"steps": 200, "lr": 0.05}, "needs_generator": True}})
    assert OmegaConf.is_missing(compose_train(["generator=stylegan2_ada"]).generator, "checkpoint")  # required
    assert _holds(_job(["attributes=ensemble"]), {"attributes": {"attr_weight": 1.0, "views": 4,
                                                                 "net": {"optional": [1], "_recursive_": False}}})
    assert _job(["logger=none"])["logger"] == {"_target_": None}
    for option, values in TRAINERS.items():
        assert _holds(_job([f"trainer={option}"])["trainer"], values), option
    for option, values in DATA.items():
        data = _job([f"data={option}", "data.root=/tmp"])["data"]
        assert data == values, option
    assert _job(["data=celebahq", "data.root=/tmp", "data.split=test"])["data"]["split"] == "test"


def test_schema_defaults_agree_with_the_builders_they_configure():
    """A data schema's knobs are its builder's parameters, with the same defaults (the builder's
    Python defaults are what a direct call gets; they must not drift from the config's)."""
    from falco.data import sources
    from falco.data.synthetic import SyntheticSource

    for schema in (SyntheticData, FolderData, LFWData, CelebAHQData):
        builder = getattr(sources, schema._target_.rsplit(".", 1)[1])
        params = dict(inspect.signature(builder).parameters)
        if schema is SyntheticData:  # synthetic(**knobs) passes the rest to SyntheticSource
            params |= inspect.signature(SyntheticSource).parameters
        for f in fields(schema):
            if f.name == "_target_":
                continue
            assert f.name in params, (schema.__name__, f.name)
            default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
            expected = params[f.name].default
            if expected is inspect.Parameter.empty:
                assert default is MISSING, (schema.__name__, f.name)
            else:
                expected = list(expected) if isinstance(expected, tuple) else expected
                assert default == expected, (schema.__name__, f.name)
    from falco.detect import FaceDetector

    assert inspect.signature(FaceDetector).parameters["min_prob"].default == DetectorConfig().min_prob


def test_choices_are_the_codes_choices():
    from falco.data.celebahq import SPLITS
    from falco.heldout import ATTRIBUTES, RECOGNIZERS
    from falco.stages.prepare import ALIGNMENT_FAILURE

    assert tuple(HeldoutRecognizer) == RECOGNIZERS and tuple(HeldoutAttribute) == ATTRIBUTES
    assert tuple(AlignmentFailure) == ALIGNMENT_FAILURE
    assert set(CelebASplit) == {"all", *SPLITS}
    job = _job([])  # a composed choice is its Enum member, equal to the plain string it always was
    assert job["method"]["id_loss"] == "two_sided" and isinstance(job["method"]["id_loss"], IdLoss)
    assert json.dumps({"a": job["stages"]["alignment_failure"]}) == '{"a": "skip"}'  # stage cache keys unchanged
    assert f"{job['generator']['alignment']}" == "template"


# (override, the key the error names). Hydra raises ConfigCompositionException; OmegaConf's
# message, with the full key, is its cause (printed by `python train.py`).
BAD = [
    (["method.marign=0.5"], "method.marign"),  # unknown key
    (["method.steps=abc"], "method.steps"),  # wrong type
    (["method.id_loss=hing"], "method.id_loss"),  # not a choice
    (["method.init=virtal"], "method.init"),
    (["method=keyed", "method.grouping=people"], "method.grouping"),
    (["method=keyed", "method.cluster_linkage=ward"], "method.cluster_linkage"),
    (["method.views.view=2"], "method.views.view"),
    (["stages.alignment_failure=crop"], "stages.alignment_failure"),
    (["stages.pool_size=many"], "stages.pool_size"),
    (["heldout.recognizers=[sfac]"], "heldout.recognizers"),
    (["heldout.enable=false"], "heldout.enable"),
    (["detector.min_prob=high"], "detector.min_prob"),
    (["batchsize=4"], "batchsize"),
    (["batch_size=four"], "batch_size"),
    (["trainer.acelerator=cpu"], "trainer.acelerator"),
    (["trainer.num_nodes=two"], "trainer.num_nodes"),
    (["logger=wandb", "logger.offline=maybe"], "logger.offline"),
    (["data.identites=3"], "data.identites"),
    (["data=celebahq", "data.root=/x", "data.split=training"], "data.split"),
    (["data=folder", "data.root=/x", "data.pairs_file=p.txt"], "data.pairs_file"),  # an LFW knob on a folder
    (["generator.alignment=celeba"], "generator.alignment"),
    (["generator.checkpoint=/g.pt"], "generator.checkpoint"),  # the DCGAN reads no checkpoint
    (["identity.margin=far"], "identity.margin"),
]


@pytest.mark.parametrize("overrides,key", BAD, ids=[k for _, k in BAD])
def test_bad_override_fails_at_compose_naming_the_key(overrides, key):
    with pytest.raises(ConfigCompositionException) as err:
        compose_train(overrides)
    message = f"{err.value}\n{err.value.__cause__}"
    assert key in message, message
    assert any(why in message for why in ("not in", "Invalid value", "could not be converted", "not a valid")), message


def test_python_built_configs_check_their_choices_too():
    with pytest.raises(ValueError, match=r"method.id_loss must be one of \['two_sided', 'hinge'\], got 'hing'"):
        MethodConfig(margin=0.75, attr_weight=1.0, id_loss="hing")
    assert MethodConfig(id_loss="hinge").id_loss is IdLoss.hinge
    plain = MethodConfig(margin=0.75, attr_weight=1.0)
    plain.init = "fakes"  # set after construction: validate catches it
    with pytest.raises(ValueError, match="method.init must be one of"):
        validate(plain)
    with pytest.raises(ValueError, match="stages.alignment_failure must be one of"):
        StageKnobs(alignment_failure="crop")


def test_a_typo_in_a_config_file_fails_at_compose(tmp_path):
    shutil.copytree(ROOT / "conf", tmp_path / "conf")
    (tmp_path / "conf" / "identity" / "typo.yaml").write_text(
        (ROOT / "conf" / "identity" / "dlib_resnet.yaml").read_text().replace("margin_grid:", "margin_gird:"))
    (tmp_path / "conf" / "trainer" / "wrong.yaml").write_text(
        "defaults:\n  - trainer_schema\n  - _self_\n\naccelerator: cpu\ninference_mode: sometimes\n")
    with initialize_config_dir(config_dir=str(tmp_path / "conf"), version_base="1.3"):
        for option, key in (("identity=typo", "margin_gird"), ("trainer=wrong", "inference_mode")):
            with pytest.raises(ConfigCompositionException, match=key):
                compose("train", overrides=[option])


def test_schemas_are_registered_wherever_hydra_composes():
    """hydra_plugins/falco_schema registers them: evaluate.py and a plain compose need no call."""
    code = ("from hydra import compose, initialize_config_dir\n"
            f"with initialize_config_dir(config_dir={str(ROOT / 'conf')!r}, version_base='1.3'):\n"
            "    e = compose('evaluate', overrides=['run_dir=/r'])\n"
            "    t = compose('train', overrides=['method=keyed'])\n"
            "from omegaconf import OmegaConf\n"
            "print(*e.heldout.recognizers, t.method.lr, OmegaConf.get_type(t.method).__name__)\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == ["sface", "lightcnn_v4", "faceplugin_mfn", "0.03", "KeyedMethodConfig"]


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


SWEEPS = ("margin_sweep", "optuna_search")  # experiments that sweep the margin


def test_experiments_are_found():
    assert EXPERIMENTS == ["margin_sweep", "optuna_search", "paper"]


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
    schema = SCHEMAS[("data", _schema_name(ROOT / "conf" / "data" / f"{data}.yaml"))]
    assert set(job["data"]) == {f.name for f in fields(schema)}
    lo, hi = job["identity"]["margin_range"]
    assert lo <= job["method"]["margin"] == job["identity"]["margin"] <= hi
    if name not in SWEEPS:
        assert name == "paper" and job["stages"]["pool_size"] == 60000 and job["method"]["views"]["views"] == 0
        return
    sweeper = OmegaConf.to_container(cfg.hydra.sweeper, resolve=True)
    margin = sweeper["params"]["method.margin"]
    [override] = OverridesParser.create().parse_overrides([f"method.margin={margin}"])
    assert override.is_sweep_override()
    # The margins searched are in the recognizer's own score, inside its range.
    values = [float(v) for v in re.findall(r"-?\d+(?:\.\d+)?", margin)]
    assert lo < hi and len(values) >= 2 and all(lo <= v <= hi for v in values), margin
    grid = [float(v) for v in job["identity"]["margin_grid"].split(",")]
    assert values == ([lo, hi] if name == "optuna_search" else grid)


@pytest.mark.parametrize("method", GROUPS["method"])
def test_method_margin_and_attr_weight_are_the_recognizer_and_attribute_configs(method):
    defaults = compose_train([f"method={method}"])
    assert (defaults.method.margin, defaults.method.attr_weight) == (0.75, 3.0)  # dlib distance, age_gender
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


def test_pairing_is_unique_for_the_embedded_default_and_nearest_for_farl():
    import train

    for overrides, unique in (([], True), (["attributes=ensemble"], True), (["attributes=farl"], False),
                              (["attributes=farl", "stages.pairing_unique=true"], True),
                              (["stages.pairing_unique=false"], False)):
        cfg = train.resolve_stage_defaults(compose_train(overrides))
        assert cfg.stages.pairing_unique is unique, overrides  # written into cfg: config.yaml records it
    import pytest

    with pytest.raises(ValueError, match="pairing_distinct=true needs stages.pairing_unique=true"):
        train.resolve_stage_defaults(compose_train(["stages.pairing_distinct=true", "stages.pairing_unique=false"]))
