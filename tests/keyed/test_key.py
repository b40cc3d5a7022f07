"""Key loading: encodings, the 128-bit floor, clear errors, and a key that never shows itself."""

from __future__ import annotations

import base64
import os
import pickle
import stat

import pytest

from falco.keyed.key import KeyLoadError, SecretKey, decode_key, load_key, main, write_new_key

RAW = bytes(range(100, 132))  # 256 bits


def test_hex_file_base64_env_and_raw_file_give_the_same_key(tmp_path, monkeypatch):
    hex_file = tmp_path / "k.hex"
    hex_file.write_text(RAW.hex().upper() + "\n")
    raw_file = tmp_path / "k.bin"
    raw_file.write_bytes(RAW)
    for f in (hex_file, raw_file):
        f.chmod(0o600)
    monkeypatch.setenv("TEST_FALCO_KEY", "base64:" + base64.urlsafe_b64encode(RAW).decode().rstrip("="))
    keys = [load_key(str(hex_file)), load_key(str(raw_file)), load_key(None, "TEST_FALCO_KEY")]
    assert keys[0] == keys[1] == keys[2] and keys[0].bits == 256
    assert keys[0].source == str(hex_file) and keys[2].source == "env:TEST_FALCO_KEY"
    # key_file wins over key_env
    assert load_key(str(hex_file), "NOT_SET_ANYWHERE") == keys[0]


def test_short_keys_passphrases_and_missing_sources_fail_without_showing_the_value(tmp_path, monkeypatch):
    short = bytes(range(15))  # 120 bits
    with pytest.raises(KeyLoadError, match="120 bits; at least 128") as err:
        SecretKey(short)
    assert short.hex() not in str(err.value)
    phrase = tmp_path / "phrase"
    phrase.write_text("correct horse battery staple")
    phrase.chmod(0o600)
    with pytest.raises(KeyLoadError, match="Passphrases are refused") as err:
        load_key(str(phrase))
    assert "horse" not in str(err.value)
    with pytest.raises(KeyLoadError, match="not found"):
        load_key(str(tmp_path / "absent"))
    monkeypatch.delenv("TEST_FALCO_KEY", raising=False)
    with pytest.raises(KeyLoadError, match="TEST_FALCO_KEY is not set"):
        load_key(None, "TEST_FALCO_KEY")
    with pytest.raises(KeyLoadError, match="needs a secret key"):
        load_key(None, None)
    with pytest.raises(KeyLoadError, match="not base64"):
        decode_key(b"base64:@@@@", "test")
    assert decode_key(b"  " + RAW.hex().encode() + b"\n", "t") == RAW  # whitespace ignored


def test_key_is_redacted_everywhere_and_cannot_be_pickled():
    key = SecretKey(RAW, "test")
    forms = [RAW.hex(), RAW.hex().upper(), base64.b64encode(RAW).decode()]
    for shown in (repr(key), str(key), f"{key}", f"{key:>10}", f"{key!s}", str([key]), str({"k": key})):
        assert "redacted" in shown and key.key_id in shown
        assert not any(f in shown for f in forms)
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(key)
    other = SecretKey.generate()
    assert other != key and other.key_id != key.key_id and len(key.key_id) == 16
    assert key.key_id == SecretKey(RAW).key_id  # the check value depends on the key only


def test_hmac_is_deterministic_and_key_dependent():
    a, b = SecretKey(RAW), SecretKey(bytes(reversed(RAW)))
    assert a.hmac("person:x") == SecretKey(RAW).hmac("person:x")
    assert a.hmac("person:x") != a.hmac("person:y") and a.hmac("person:x") != b.hmac("person:x")


def test_new_key_file_is_private_random_and_never_overwritten(tmp_path, capsys):
    path = tmp_path / "new.key"
    assert main(["new", str(path)]) == 0
    out = capsys.readouterr().out
    content = path.read_text().strip()
    assert len(content) == 64 and content not in out  # printed: the id, not the key
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert load_key(str(path)).bits == 256
    with pytest.raises(FileExistsError):
        write_new_key(path)
    assert main(["old"]) == 2


def test_shared_key_file_warns(tmp_path):
    path = tmp_path / "k"
    path.write_text(RAW.hex())
    path.chmod(0o644)
    with pytest.warns(UserWarning, match="readable by other users"):
        load_key(str(path))
