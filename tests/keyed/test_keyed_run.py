"""End to end on the embedded default: the key never reaches a file or a log, and the same
key and inputs give the same virtual identities (whether the key comes from a file or a variable)."""

from __future__ import annotations

import base64
import contextlib
import io
import json

import pytest

import falco.keyed
from tests.conftest import FAST, compose_train
from train import run

RAW = bytes.fromhex("8f1e" * 16)  # 256 bits; every encoding of it is searched for below
FORMS = [RAW, RAW.hex().encode(), RAW.hex().upper().encode(), base64.b64encode(RAW),
         base64.urlsafe_b64encode(RAW).rstrip(b"="), base64.b64encode(RAW).rstrip(b"=")]
# No inversion: a keyed run on the DCGAN starts from the virtual faces and never reads it.
SMALL = [*(o for o in FAST if not o.startswith(("inversion", "logger"))),
         "data.identities=6", "data.views=2", "data.augment=true", "data.scale_jitter=0", "inversion=none",
         "method=keyed", "method.steps=4", "method.center_samples=64", "method.candidates=8"]


def _leaks(paths, extra_text: str = "") -> list[str]:
    found = [f"{p}: {f[:6]!r}..." for p in paths if p.is_file() for f in FORMS if f in p.read_bytes()]
    return found + [f"captured output: {f[:6]!r}..." for f in FORMS if f.decode("latin1") in extra_text]


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """The same data and key twice: from a key file, then from an environment variable."""
    root = tmp_path_factory.mktemp("keyed")
    key_file = root / "secret.key"
    key_file.write_text(RAW.hex())
    key_file.chmod(0o600)
    mp = pytest.MonkeyPatch()
    mp.setenv("TEST_KEYED_SECRET", "base64:" + base64.b64encode(RAW).decode())
    placed = []  # (device, network classes) of every on_device the keyed stage asked for
    real_on_device = falco.keyed.on_device

    def recording(device, *nets):
        placed.append((str(device), [type(n).__name__ for n in nets]))
        return real_on_device(device, *nets)

    mp.setattr(falco.keyed, "on_device", recording)
    common = [f"cache_dir={root / 'cache'}", *SMALL]
    printed = io.StringIO()
    try:
        with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(printed):
            first = run(compose_train([*common, "logger=csv", f"method.key_file={key_file}"]), str(root / "run1"))
            second = run(compose_train([*common, "logger=none", "method.key_env=TEST_KEYED_SECRET"]),
                         str(root / "run2"))
    finally:
        mp.undo()
    return root, first, second, printed.getvalue(), placed


def test_key_never_written_or_printed(two_runs, capfd):
    root, first, _, printed, _ = two_runs
    assert "keyed: " in printed and "enrolment in" in printed  # the runs' output was captured
    from hydra import compose, initialize_config_dir

    from evaluation.run_eval import evaluate
    from tests.conftest import ROOT

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("evaluate", overrides=[f"run_dir={root / 'run1'}", "logger=csv",
                                             f"keyed.other_run_dir={root / 'run2'}", "keyed.wrong_keys=2"])
    summary = evaluate(cfg)  # the suite runs the keyed metrics; it reads the key file named in config.yaml
    out = capfd.readouterr()
    metrics = summary["metrics"]
    assert metrics["keyed_auth_top1_correct_key@dlib_resnet"]["white_box"] is True
    assert metrics["keyed_heldout_consistency_same_verified@sface"]["white_box"] is False  # held-out judges too
    assert list(summary["details"]["keyed"])[0] == "heldout"  # and first
    assert {"keyed_consistency_same_verified@dlib_resnet", "keyed_diversity_verified_different@dlib_resnet",
            "keyed_anonymity_verified_as_original@dlib_resnet", "keyed_false_match_unrelated@dlib_resnet",
            "keyed_auth_top1_wrong_keys_mean@dlib_resnet"} <= set(metrics)
    files = [p for d in ("run1", "run2") for p in (root / d).rglob("*")]
    assert (root / "run1" / "keyed_summary.json").is_file() and (root / "run1" / "config.yaml").is_file()
    assert any("keyed_auth_top1" in p.read_text() for p in files if p.name == "metrics.csv")  # logged too
    assert any(p.name == "metrics.csv" for p in files)  # run1's CSV logger wrote in its run directory
    assert not _leaks(files, printed + out.out + out.err)
    config = (root / "run2" / "config.yaml").read_text()
    assert "key_env: TEST_KEYED_SECRET" in config  # the NAME of the variable, not its value
    assert first.summary["done"] >= 6


def test_same_key_same_inputs_same_virtual_identities(two_runs):
    root = two_runs[0]
    for name in ("enrolment.json", "assignment.json"):
        a = json.loads((root / "run1" / "private" / "keyed" / name).read_text())
        b = json.loads((root / "run2" / "private" / "keyed" / name).read_text())
        assert a == b, name
    enrolment = json.loads((root / "run1" / "private" / "keyed" / "enrolment.json").read_text())
    assignment = json.loads((root / "run1" / "private" / "keyed" / "assignment.json").read_text())
    # one virtual identity per dataset identity, and both views of a person share it
    assert {p["label"] for p in enrolment["persons"]} <= {f"identity:syn{i:05d}" for i in range(6)}
    by_person: dict[str, set[str]] = {}
    for item, token in assignment.items():
        by_person.setdefault(item.split("_")[0], set()).add(token)
    assert all(len(tokens) == 1 for tokens in by_person.values())
    summary = json.loads((root / "run1" / "keyed_summary.json").read_text())
    assert summary["authentication"]["key_id"] == enrolment["key_id"]
    assert summary["white_box"] is True and "unrelated_false_match" in summary


def test_resuming_with_another_key_is_refused(two_runs, monkeypatch):
    root = two_runs[0]
    monkeypatch.setenv("TEST_KEYED_OTHER", "ab" * 16)
    cfg = compose_train([f"cache_dir={root / 'cache'}", *SMALL, "logger=none", "method.key_env=TEST_KEYED_OTHER"])
    with pytest.raises(ValueError, match="started with another key"):
        run(cfg, str(root / "run1"))


def test_the_keyed_stage_computes_on_the_run_device(two_runs):
    """Both runs (device: auto -> the CPU trainer's) put the three networks on the run's device
    for the keyed stage (originals' embeddings, population center, candidate draws)."""
    placed = two_runs[4]
    assert placed == [("cpu", ["DCGANGenerator", "DlibRecognizer", "AgeGender"])] * 2
