"""`./run weights`: downloads against a loopback HTTP server serving fixture files.

The server honours Range requests, can cut a response short once, answers 404 for unknown
paths, and logs every request so the tests can see resumes and mirror order.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from hydra.utils import instantiate

from falco.backbones.checkpoints import MissingWeights, user_checkpoint
from falco.download import fetch
from falco.weights import HASHES, MANIFEST, Weight, WeightUnavailable, ensure, main
from tests.conftest import ROOT, compose_train

FIXTURES = ROOT / "tests" / "fixtures"
FILES = {  # served path -> a small fixture file
    "/files/a.pt": FIXTURES / "arcface_ir_se50" / "expected.pt",
    "/files/b.pt": FIXTURES / "sg2ada_generator_small64" / "inputs.pt",
}


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - http.server's name
        self.server.log.append((self.path, self.headers.get("Range")))
        if self.path == "/page.html":
            return self._send(200, b"<html>sign in</html>", {"Content-Type": "text/html; charset=utf-8"})
        if self.path not in FILES:
            return self._send(404, b"not found", {})
        body = FILES[self.path].read_bytes()
        start = _range_start(self.headers.get("Range"))
        if start >= len(body):
            return self._send(416, b"", {"Content-Range": f"bytes */{len(body)}"})
        headers = {"Content-Range": f"bytes {start}-{len(body) - 1}/{len(body)}"} if start else {}
        status = 206 if start else 200
        cut = self.server.cut.pop(self.path, None)  # serve only this many bytes, once
        self._send(status, body[start:], {"Content-Type": "application/octet-stream", **headers}, cut=cut)

    def _send(self, status: int, body: bytes, headers: dict, cut: int | None = None):
        self.send_response(status)
        for k, v in {"Content-Length": str(len(body)), **headers}.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body if cut is None else body[:cut])
        self.wfile.flush()
        self.close_connection = cut is not None

    def log_message(self, *args):  # keep pytest output clean
        pass


def _range_start(header: str | None) -> int:
    m = re.fullmatch(r"bytes=(\d+)-", header or "")
    return int(m.group(1)) if m else 0


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.log, httpd.cut = [], {}
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def weight(url: str | None = None, filename: str = "a.pt", **kw) -> Weight:
    return Weight("a", filename, "test file A", "identity.checkpoint", "the test server's /files/",
                  urls=(url,) if url else (), **kw)


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_download_records_hash_then_checks_it(server, tmp_path):
    report = ensure(weight(server.url + "/files/a.pt"), tmp_path)
    source = FILES["/files/a.pt"]
    assert (tmp_path / "a.pt").read_bytes() == source.read_bytes()
    assert not (tmp_path / "a.pt.part").exists()
    recorded = json.loads((tmp_path / HASHES).read_text())["a.pt"]
    assert recorded["sha256"] == sha(source) == report.split("sha256 ")[1].split()[0]
    assert recorded["size"] == source.stat().st_size
    assert "sha256 matches" in ensure(weight(server.url + "/files/a.pt"), tmp_path)
    with open(tmp_path / "a.pt", "ab") as f:  # a copy changed after the fact is caught
        f.write(b"x")
    with pytest.raises(WeightUnavailable, match="does not match"):
        ensure(weight(server.url + "/files/a.pt"), tmp_path)


def test_published_checksum_is_checked_and_nothing_recorded(server, tmp_path):
    source = FILES["/files/b.pt"]
    w = weight(server.url + "/files/b.pt", "b.pt", sha256=sha(source), size=source.stat().st_size)
    assert "published" in ensure(w, tmp_path)
    assert (tmp_path / "b.pt").read_bytes() == source.read_bytes()
    assert not (tmp_path / HASHES).exists()


def test_wrong_checksum_fails_and_leaves_nothing(server, tmp_path):
    w = weight(server.url + "/files/a.pt", sha256="0" * 64)
    with pytest.raises(WeightUnavailable) as err:
        ensure(w, tmp_path)
    assert "a.pt" in str(err.value) and "sha256" in str(err.value) and "deleted" in str(err.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_recorded_checksum_rejects_a_different_download(server, tmp_path):
    ensure(weight(server.url + "/files/a.pt"), tmp_path)
    (tmp_path / "a.pt").unlink()  # the recorded hash stays; the server now serves another file
    with pytest.raises(WeightUnavailable, match=r"wrong file \(size .*recorded"):
        ensure(weight(server.url + "/files/b.pt"), tmp_path)
    assert not (tmp_path / "a.pt").exists() and not (tmp_path / "a.pt.part").exists()


def test_truncated_transfer_keeps_part_and_resumes_with_range(server, tmp_path):
    server.cut["/files/a.pt"] = 5000
    w = weight(server.url + "/files/a.pt")
    with pytest.raises(WeightUnavailable) as err:
        ensure(w, tmp_path)
    part = tmp_path / "a.pt.part"
    assert part.stat().st_size == 5000 and "kept" in str(err.value) and not (tmp_path / "a.pt").exists()
    ensure(w, tmp_path)
    assert server.log == [("/files/a.pt", None), ("/files/a.pt", "bytes=5000-")]
    assert (tmp_path / "a.pt").read_bytes() == FILES["/files/a.pt"].read_bytes() and not part.exists()


def test_complete_part_is_finished_without_refetching(server, tmp_path):
    (tmp_path / "a.pt.part").write_bytes(FILES["/files/a.pt"].read_bytes())  # died before the move
    ensure(weight(server.url + "/files/a.pt"), tmp_path)
    assert server.log[-1][1] == f"bytes={FILES['/files/a.pt'].stat().st_size}-"  # answered 416
    assert sha(tmp_path / "a.pt") == sha(FILES["/files/a.pt"])


def test_404_names_the_file_where_to_put_it_and_where_it_is_published(server, tmp_path):
    with pytest.raises(WeightUnavailable) as err:
        ensure(weight(server.url + "/files/gone.pt", "gone.pt"), tmp_path)
    message = str(err.value)
    assert "gone.pt" in message and "HTTP 404" in message
    assert f"Put the file by hand at {tmp_path / 'gone.pt'}" in message
    assert "the test server's /files/" in message and "--mirror" in message


def test_connection_refused_and_no_direct_link(tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(WeightUnavailable, match="cannot connect"):
        ensure(weight(f"http://127.0.0.1:{port}/a.pt"), tmp_path)
    with pytest.raises(WeightUnavailable, match="no direct download is published"):
        ensure(weight(None), tmp_path)


def test_mirrors_tried_in_order_before_the_direct_link(server, tmp_path):
    w = weight(server.url + "/files/gone.pt")
    report = ensure(w, tmp_path, [server.url + "/missing", server.url + "/files/"])
    assert [p for p, _ in server.log] == ["/missing/a.pt", "/files/a.pt"]
    assert "downloaded from " + server.url + "/files/a.pt" in report
    assert sha(tmp_path / "a.pt") == sha(FILES["/files/a.pt"])


def test_html_page_is_not_taken_for_the_file(server, tmp_path):
    with pytest.raises(WeightUnavailable, match="HTML page"):
        ensure(weight(server.url + "/page.html"), tmp_path)
    assert not (tmp_path / HASHES).exists() and not (tmp_path / "a.pt").exists()


def test_progress_lines_in_a_log(server, tmp_path):
    log = io.StringIO()
    size = fetch(server.url + "/files/a.pt", tmp_path / "a.pt.part", label="a.pt", stream=log, log_every=0)
    assert size == FILES["/files/a.pt"].stat().st_size
    last = log.getvalue().splitlines()[-1]
    assert last.startswith("[progress] a.pt: ") and "MB/s" in last and "(100%)" in last and last.endswith("done")


def test_cli_downloads_lists_and_fails_with_exit_code(server, tmp_path, capsys):
    manifest = (weight(None), Weight("b", "b.pt", "test file B", "attributes.checkpoint", "page B"))
    args = ["--dir", str(tmp_path), "--mirror", server.url + "/files/"]
    assert main([*args, "--only", "a"], manifest) == 0
    assert main(["--dir", str(tmp_path), "--list"], manifest) == 0
    out = capsys.readouterr().out
    assert re.search(r"a\.pt +present +checksum: recorded", out) and re.search(r"b\.pt +missing", out)
    assert main(["--dir", str(tmp_path), "--only", "b"], manifest) == 1
    err = capsys.readouterr().err
    assert "b.pt (test file B) could not be downloaded" in err and "page B" in err
    with pytest.raises(SystemExit, match="unknown weight name"):
        main(["--only", "nope"], manifest)


def test_manifest_covers_the_official_path():
    names = {w.name for w in MANIFEST}
    assert names == {"stylegan2_ffhq1024", "e4e", "arcface_irse50", "farl", "facenet_vggface2", "facenet_casia"}
    for w in MANIFEST:
        assert all(u.startswith("https://") for u in w.urls) and w.published


OFFICIAL = [("generator", "stylegan2_ffhq1024"), ("inversion", "e4e"), ("identity", "arcface_irse50"),
            ("attributes", "farl")]


@pytest.mark.parametrize("group,option", OFFICIAL)
def test_unset_checkpoint_is_found_in_the_weights_folder(group, option, tmp_path, monkeypatch):
    monkeypatch.setenv("FALCO_WEIGHTS", str(tmp_path))
    cfg = compose_train([f"{group}={option}"])
    assert cfg[group].checkpoint is None
    with pytest.raises(Exception, match=r"\./run weights") as err:  # nothing there yet
        instantiate(cfg[group].net)
    assert isinstance(err.value.__cause__ or err.value, MissingWeights)
    filename = next(w.filename for w in MANIFEST if w.name == option)
    (tmp_path / filename).write_bytes(b"not a checkpoint")
    with pytest.raises(Exception) as err:  # found: the loader reads it (and rejects the junk)
        instantiate(cfg[group].net)
    assert not isinstance(err.value.__cause__ or err.value, MissingWeights)
    assert str(tmp_path / filename) in str(err.value)


def test_locator_prefers_a_configured_path(tmp_path, monkeypatch):
    monkeypatch.setenv("FALCO_WEIGHTS", str(tmp_path))
    (tmp_path / "f.pth").write_bytes(b"x")
    other = tmp_path / "elsewhere.pth"
    other.write_bytes(b"y")
    kw = dict(what="W", filename="f.pth", source="S", config_key="k.checkpoint")
    assert user_checkpoint(None, **kw) == user_checkpoint("???", **kw) == tmp_path / "f.pth"
    assert user_checkpoint(other, **kw) == other
    with pytest.raises(MissingWeights, match=r"\./run weights"):
        user_checkpoint(tmp_path / "absent.pth", **kw)
