"""One dataset split over array jobs with shard=i/n: disjoint, complete, same results; and the
SLURM launcher configuration composes (a submitit_local multirun runs the shards for real)."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import get_class

from falco.job import in_shard, parse_shard
from tests.conftest import ROOT, compose_train
from tests.scale import (
    BASE,
    assert_each_image_once,
    assert_same_results,
    records,
    reference,
    scale_cache,
    train_cli,
)
from train import run


def test_parse_shard():
    assert parse_shard(None) is None and parse_shard("1/4") == (1, 4) and parse_shard("0/1") == (0, 1)
    for bad in ("4/4", "-1/2", "1", "a/b", "1/0"):
        with pytest.raises(ValueError, match="shard"):
            parse_shard(bad)


def test_shards_partition_any_id_set():
    ids = [f"img_{i:05d}.jpg" for i in range(2000)]
    owners = [[k for k in range(3) if in_shard(x, (k, 3))] for x in ids]
    assert all(len(o) == 1 for o in owners)  # each id in exactly one shard
    sizes = [sum(o == [k] for o in owners) for k in range(3)]
    assert min(sizes) > 600  # and the split is balanced (hash, not position)


def test_two_shards_in_turn_make_the_whole_run(tmp_path, tmp_path_factory):
    ref = reference(tmp_path_factory)
    out = tmp_path / "run"
    base = [*BASE, f"cache_dir={scale_cache(tmp_path_factory)}"]
    first = run(compose_train([*base, "shard=0/2"]), str(out))
    mine = set(records(out))
    assert mine and all(in_shard(i, (0, 2)) for i in mine)  # shard 0 wrote only its own ids
    second = run(compose_train([*base, "shard=1/2"]), str(out))
    assert second.done_before == len(mine)
    assert first.processed + second.processed == sum(r["status"] == "ok" for r in records(ref).values())
    assert_each_image_once(out)
    assert_same_results(out, ref)


def test_stages_only_fills_the_cache_and_writes_no_image(tmp_path, tmp_path_factory):
    ref = next(iter(records(reference(tmp_path_factory)).values()))
    warm = run(compose_train([*BASE, f"cache_dir={tmp_path / 'cache'}", "stages_only=true"]), str(tmp_path / "run"))
    assert warm.processed == 0 and not records(tmp_path / "run")
    assert not any(warm.summary["stages_reused"].values())  # a cold cache: it computed every stage...
    assert warm.summary["stage_keys"] == ref["stage_keys"]  # ...the very ones a full run uses


def test_slurm_launcher_config_composes():
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=["hydra/launcher=slurm", "trainer=ddp", "hydra.launcher.partition=gpu"],
                      return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert get_class(launcher._target_).__name__ == "SlurmLauncher"
    assert launcher.max_num_timeout > 0 and launcher.partition == "gpu"  # requeued jobs resume
    assert cfg.trainer.strategy == "ddp"


def test_submitit_local_array_of_two_shards(tmp_path, tmp_path_factory):
    ref = reference(tmp_path_factory)
    out = tmp_path / "run"
    proc = train_cli("-m", "hydra/launcher=submitit_local", *BASE, f"cache_dir={scale_cache(tmp_path_factory)}",
                     f"run_dir={out}", f"hydra.sweep.dir={tmp_path / 'sweep'}", "shard=0/2,1/2")
    assert proc.returncode in (0, 3), proc.stderr[-3000:]
    assert_each_image_once(out)
    assert_same_results(out, ref)


def test_shard_without_run_dir_is_refused(tmp_path):
    proc = train_cli(*BASE, f"cache_dir={tmp_path / 'cache'}", "shard=0/2")
    assert proc.returncode == 1 and "explicit run_dir" in proc.stderr
