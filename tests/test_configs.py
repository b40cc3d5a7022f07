"""Every config option composes; every embedded one instantiates; official ones fail clearly."""

from __future__ import annotations

import pytest
from hydra.utils import instantiate

from falco.backbones.checkpoints import MissingWeights
from tests.conftest import ROOT, compose_train

GROUPS = {g: sorted(p.stem for p in (ROOT / "conf" / g).glob("*.yaml"))
          for g in ("data", "generator", "identity", "attributes", "inversion", "method", "trainer", "logger")}
EXPERIMENTS = sorted(p.stem for p in (ROOT / "experiments").glob("*.yaml"))
OFFICIAL = {"stylegan2_ffhq1024", "stylegan2_ada", "arcface_irse50", "farl", "e4e"}


@pytest.mark.parametrize("group,option", [(g, o) for g, opts in GROUPS.items() for o in opts])
def test_every_option_composes(group, option):
    extra = ["data.root=/tmp"] if group == "data" and option != "synthetic" else []
    cfg = compose_train([f"{group}={option}", *extra])
    assert cfg[group] is not None


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


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_experiment_composes(name):
    cfg = compose_train([f"experiments={name}"])
    assert cfg.method.name


def test_trainers_instantiate():
    for option in ("cpu", "ddp_sim"):
        trainer = instantiate(compose_train([f"trainer={option}"]).trainer, logger=False, callbacks=[])
        assert trainer.predict_loop is not None
