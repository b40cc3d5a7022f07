"""`trainer.precision: auto`: bf16 only where the hardware computes it natively (falco/precision.py)."""

from __future__ import annotations

import json
import warnings

import pytest
import torch
import yaml

from falco import precision as P
from falco.precision import resolve_precision


@pytest.fixture
def cpu_bf16(monkeypatch):
    """cpu_bf16('native' | 'emulated'): the FALCO_CPU_BF16 override, whatever this CPU is."""
    return lambda kind: monkeypatch.setenv(P.ENV, kind)


@pytest.fixture
def cuda(monkeypatch):
    """cuda(bf16): a CUDA GPU is present, computing bf16 natively or not."""

    def make(bf16: bool) -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: bf16)

    return make


@pytest.mark.parametrize(("kind", "expected", "words"), [
    ("native", "bf16-mixed", "bf16 is native"), ("emulated", "32-true", "would be emulated (~50x slower)")])
def test_auto_on_cpu_follows_native_bf16(cpu_bf16, kind, expected, words):
    cpu_bf16(kind)
    for accelerator in ("cpu", "auto"):  # 'auto' without a GPU is the CPU
        choice = resolve_precision("auto", accelerator)
        assert (choice.precision, choice.accelerator, choice.requested) == (expected, "cpu", "auto")
        assert choice.reason.startswith(f"auto -> {expected}: ") and words in choice.reason


@pytest.mark.parametrize(("bf16", "cpu", "expected", "words"), [
    (True, "emulated", "bf16-mixed", "computes bf16 natively"), (False, "native", "16-mixed", "with a GradScaler")])
def test_auto_on_gpu_follows_native_bf16(cuda, cpu_bf16, bf16, cpu, expected, words):
    cuda(bf16)
    cpu_bf16(cpu)  # the CPU's bf16 does not matter on a GPU
    for accelerator in ("gpu", "cuda", "auto"):
        choice = resolve_precision("auto", accelerator)
        assert (choice.precision, choice.accelerator) == (expected, "cuda") and words in choice.reason


def test_gpu_bf16_emulation_does_not_count(monkeypatch):
    asked = {}

    def is_bf16_supported(including_emulation=True):
        asked["including_emulation"] = including_emulation
        return including_emulation  # a pre-Ampere GPU: bf16 only through emulation

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", is_bf16_supported)
    assert resolve_precision("auto", "gpu").precision == "16-mixed" and asked == {"including_emulation": False}


def test_other_accelerators_get_full_precision(cpu_bf16):
    cpu_bf16("native")
    choice = resolve_precision("auto", "mps")
    assert choice.precision == "32-true" and "'mps'" in choice.reason


def test_explicit_precision_is_kept(cpu_bf16, cuda):
    cpu_bf16("native")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # native bf16: no warning
        assert resolve_precision("bf16-mixed", "cpu").precision == "bf16-mixed"
        assert resolve_precision(32, "cpu").precision == "32"
    cpu_bf16("emulated")
    assert resolve_precision("32-true", "cpu").reason == "32-true as configured"
    cuda(False)
    assert resolve_precision("16-mixed", "gpu").precision == "16-mixed"


@pytest.mark.parametrize("requested", ["bf16-mixed", "bf16-true"])
def test_explicit_bf16_on_an_emulating_cpu_is_kept_with_the_measured_slowdown(cpu_bf16, monkeypatch, requested):
    cpu_bf16("emulated")
    monkeypatch.setattr(P, "bf16_slowdown", lambda: 47.0)
    with pytest.warns(UserWarning, match=f"precision={requested} on a CPU without AVX512-BF16/AMX") as record:
        choice = resolve_precision(requested, "cpu")
    assert choice.precision == requested
    message = str(record[0].message)
    assert "took 47x as long in bf16 as in fp32" in message and "trainer.precision=auto or 32-true" in message
    assert choice.reason == message


def test_slowdown_is_measured_and_failures_fall_back_to_the_typical_figure(monkeypatch):
    ratio = P.bf16_slowdown(size=64, repeats=1)
    assert ratio > 0 and ratio != 1.0  # two real timings, not a constant

    def broken():
        raise RuntimeError("no bf16 matmul in this build")

    monkeypatch.setattr(P, "bf16_slowdown", broken)
    assert "typically ~50x slower than fp32 (measuring failed: no bf16 matmul" in P.emulated_bf16_warning("bf16")


@pytest.mark.parametrize(("text", "native"), [
    ("flags\t\t: fpu sse avx2 avx512f avx512_bf16\n", True), ("flags\t\t: fpu avx2 amx_tile amx_bf16\n", True),
    ("flags\t\t: fpu sse avx2 avx512f\n", False), ("processor\t: 0\nFeatures\t: fp asimd bf16\n", False)])
def test_cpu_detection_reads_the_cpuinfo_flags(monkeypatch, tmp_path, text, native):
    monkeypatch.delenv(P.ENV, raising=False)
    (tmp_path / "cpuinfo").write_text("processor\t: 0\n" + text)
    monkeypatch.setattr(P, "CPUINFO", tmp_path / "cpuinfo")
    assert P.cpu_bf16_native() is native
    assert resolve_precision("auto", "cpu").precision == ("bf16-mixed" if native else "32-true")


@pytest.mark.parametrize("probe", [True, False])
def test_without_cpuinfo_pytorch_probes_decide(monkeypatch, tmp_path, probe):
    monkeypatch.delenv(P.ENV, raising=False)
    monkeypatch.setattr(P, "CPUINFO", tmp_path / "absent")
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: probe)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    assert P.cpu_flags() is None and P.cpu_bf16_native() is probe


def test_a_wrong_override_is_refused(cpu_bf16):
    cpu_bf16("fast")
    with pytest.raises(ValueError, match="FALCO_CPU_BF16='fast': use 'native' or 'emulated'"):
        resolve_precision("auto", "cpu")


def test_the_trainer_configs_ask_for_auto():
    from tests.conftest import ROOT, compose_train

    for path in sorted((ROOT / "conf" / "trainer").glob("*.yaml")):
        assert "precision" not in yaml.safe_load(path.read_text()), path.name  # the schema's default rules
        assert compose_train([f"trainer={path.stem}"]).trainer.precision == "auto", path.name


def test_resolving_a_config_twice_keeps_what_was_asked(cpu_bf16, fast_cfg):
    from train import resolve_trainer_precision

    cpu_bf16("native")
    cfg = fast_cfg()
    assert resolve_trainer_precision(cfg).precision == "bf16-mixed"
    cpu_bf16("emulated")  # the same cfg run again elsewhere: 'auto' is resolved again, not frozen
    again = resolve_trainer_precision(cfg)
    assert (again.requested, again.precision, cfg.trainer.precision) == ("auto", "32-true", "32-true")
    assert cfg.precision_choice.requested == "auto"


def test_a_run_records_the_resolved_precision(cpu_bf16, fast_cfg, tmp_path, capsys):
    from train import run

    cpu_bf16("emulated")
    out = tmp_path / "run"
    result = run(fast_cfg("data.identities=2", "method.steps=1", "summary=false"), str(out))
    assert result.processed == 2
    reason = "auto -> 32-true: this CPU has no AVX512-BF16/AMX, bf16 would be emulated (~50x slower)"
    assert reason in capsys.readouterr().out
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["trainer"]["precision"] == "32-true"
    assert config["precision_choice"] == {"requested": "auto", "precision": "32-true", "accelerator": "cpu",
                                          "reason": reason}
    recorded = json.loads((out / "versions.json").read_text())
    assert recorded["precision"] == config["precision_choice"] and "torch" in recorded
