"""Tests of ``far fetch`` against a local HTTP server on 127.0.0.1 (no internet needed).

The server imitates the failure modes that matter: a good file, a transfer cut
short (Content-Length larger than the body), Drive's "download anyway" page,
Drive refusing with an HTML page, a stalled server, a server trickling bytes,
a stream far longer than the registry's size, a redirect to another host, and
no server at all.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest
import yaml

from far import fetch
from far.fetch import (
    AllSourcesFailed,
    RegistryError,
    VerificationError,
    fetch_checkpoint,
    load_registry,
    sniff_format,
)

REPO = Path(__file__).resolve().parents[1]

# A fake torch.save file: the zip magic, then bytes that do not compress away.
GOOD = b"PK\x03\x04" + hashlib.sha256(b"seed").digest() * 8192  # ~256 KiB
GOOD_SHA = hashlib.sha256(GOOD).hexdigest()
OTHER = b"\x80\x04" + b"x" * (len(GOOD) - 2)  # a valid-looking pickle, same size, another hash

CONFIRM_PAGE = """<!DOCTYPE html><html><head><title>Google Drive - Virus scan warning</title></head>
<body><p>Google Drive can't scan this file for viruses.</p>
<form id="download-form" action="{action}" method="get">
<input type="submit" id="uc-download-link" value="Download anyway"/>
<input type="hidden" name="id" value="{id}">
<input type="hidden" name="export" value="download">
<input type="hidden" name="confirm" value="t">
<input type="hidden" name="uuid" value="0f1e2d3c-aaaa-bbbb">
</form></body></html>"""

HUGE = 400 << 20  # what the endless-stream routes would send in all
KNOWN_SIZE = 5524  # what the registry says those files have

QUOTA_PAGE = """<html><head><title>Google Drive - Quota exceeded</title></head>
<body>Too many users have viewed or downloaded this file recently.</body></html>"""


class _Handler(BaseHTTPRequestHandler):
    """Routes: /gd/download?id=ID... (Drive-like) and /hf/<repo>/resolve/main/<file>."""

    hits: dict[str, int] = {}
    sent: dict[str, int] = {}  # bytes the streaming routes managed to send
    done: dict[str, threading.Event] = {}

    def _send_stream(self, key: str, total: int, block: bytes, pause: float = 0.0) -> None:
        """Send ``total`` bytes in ``block``-sized writes until the client hangs up."""
        self.sent[key] = 0
        try:
            while self.sent[key] < total:
                self.wfile.write(block)
                self.sent[key] += len(block)
                time.sleep(pause)
        except (BrokenPipeError, ConnectionResetError):
            pass
        finally:
            self.done.setdefault(key, threading.Event()).set()

    def log_message(self, *args: object) -> None:  # keep pytest output clean
        pass

    def _send(self, body: bytes, ctype: str = "application/octet-stream", length: int | None = None) -> None:
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body) if length is None else length))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802 - http.server API
        url = urlparse(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        key = query.get("id") or url.path
        type(self).hits[key] = type(self).hits.get(key, 0) + 1
        if url.path == "/hf/MCG-NJU/videomae-base/resolve/main/pytorch_model.bin":
            return self._send(GOOD)
        if url.path != "/gd/download":
            self.send_error(404)
            return
        fid = query.get("id")
        if fid in ("good_file_id_0", "wrong_hash_id_0"):
            return self._send(GOOD)
        if fid == "broken_file_id":
            # Promise more bytes than are sent, then drop the connection.
            self._send(GOOD[: len(GOOD) // 2], length=len(GOOD))
            self.wfile.flush()
            self.close_connection = True
            return
        if fid == "confirm_page_id":
            if "uuid" not in query:  # first hop: the interstitial page
                page = CONFIRM_PAGE.format(action="/gd/download", id=fid)
                return self._send(page.encode(), ctype="text/html; charset=utf-8")
            return self._send(GOOD)
        if fid == "quota_page_id":
            return self._send(QUOTA_PAGE.encode(), ctype="text/html; charset=utf-8")
        if fid == "html_as_binary":  # HTML with a misleading Content-Type
            return self._send(QUOTA_PAGE.encode())
        if fid in ("huge_stream_id", "huge_announced_id"):  # far more than the registry's size
            self.send_response(200)
            if fid == "huge_announced_id":
                self.send_header("Content-Length", str(HUGE))
            self.end_headers()
            return self._send_stream(fid, HUGE, b"PK\x03\x04" + b"\x00" * ((64 << 10) - 4))
        if fid == "trickle_file_id":  # a byte every 50 ms for 5 s, then the connection drops
            self.send_response(200)
            self.send_header("Content-Length", str(len(GOOD)))
            self.end_headers()
            return self._send_stream(fid, 100, b"P", pause=0.05)
        if fid == "redirect_id":  # to the same server under another host name
            self.send_response(302)
            self.send_header("Location", f"http://localhost:{self.server.server_address[1]}/gd/download?id=good_file_id_0")
            self.end_headers()
            return
        if fid == "stalled_file_id":
            self.send_response(200)
            self.send_header("Content-Length", str(len(GOOD)))
            self.end_headers()
            self.wfile.write(GOOD[:1000])
            self.wfile.flush()
            time.sleep(2)
            return
        self.send_error(404)


@pytest.fixture(scope="module")
def server() -> str:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def bases(server: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """Point both hosts at the local server through the documented environment variables."""
    monkeypatch.setenv("FAR_GDRIVE_URL", f"{server}/gd")
    monkeypatch.setenv("FAR_HF_URL", f"{server}/hf")
    _Handler.hits.clear()
    return server


def _entry(name: str, sources: list[dict], **kw: object) -> dict:
    fmt = "hf_videomae" if sources and sources[0].get("kind") == "huggingface" else "videomae_pretrain"
    entry = {
        "name": name, "method": "videomae", "backbone": "vit_s", "pretrain_dataset": "k400",
        "format": fmt, "filename": f"{name}.pth", "sources": sources, "sha256": None, "size": None,
    }
    entry.update(kw)
    return entry


def _gd(fid: str | None) -> dict:
    return {"kind": "gdrive", "id": fid}


@pytest.fixture
def registry(tmp_path: Path) -> Path:
    entries = [
        _entry("good", [_gd("good_file_id_0")]),
        _entry("broken", [_gd("broken_file_id")]),
        _entry("wrong_hash", [_gd("wrong_hash_id_0")], sha256="0" * 64),
        _entry("confirm", [_gd("confirm_page_id")]),
        _entry("quota", [_gd("quota_page_id")]),
        _entry("html_binary", [_gd("html_as_binary")]),
        _entry("stalled", [_gd("stalled_file_id")]),
        _entry("fallback", [_gd("quota_page_id"), _gd("broken_file_id"), _gd("good_file_id_0")]),
        _entry("hf", [{"kind": "huggingface", "repo": "MCG-NJU/videomae-base", "file": "pytorch_model.bin"}]),
        _entry("known", [_gd("good_file_id_0")], sha256=GOOD_SHA, size=len(GOOD)),
        _entry("no_id", [_gd(None)]),
        _entry("huge", [_gd("huge_stream_id")], size=KNOWN_SIZE),
        _entry("huge_announced", [_gd("huge_announced_id")], size=KNOWN_SIZE),
        _entry("trickle", [_gd("trickle_file_id")]),
        _entry("redirect", [_gd("redirect_id")]),
        _entry("redirect_known", [_gd("redirect_id")], sha256=GOOD_SHA, size=len(GOOD)),
    ]
    # Outside the destination folders the tests use (tmp_path itself), so leftovers stay countable.
    (tmp_path / "reg").mkdir()
    path = tmp_path / "reg" / "checkpoints.yaml"
    path.write_text(yaml.safe_dump({"version": 1, "checkpoints": entries}, sort_keys=False))
    return path


def _leftovers(dest: Path) -> list[str]:
    """Files in dest other than the lock file and its flock sidecar."""
    if not dest.exists():
        return []
    return sorted(p.name for p in dest.iterdir()
                  if p.is_file() and not p.name.startswith(f".{fetch.LOCK_FILENAME}") and p.name != fetch.LOCK_FILENAME)


def _fetch(name: str, registry: Path, dest: Path, **kw: object) -> Path:
    kw.setdefault("timeout", 3)
    return fetch_checkpoint(name, registry, dest, progress=False, log=lambda _m: None, **kw)


# ------------------------------------------------------------------------ downloads


def test_good_download_records_hash_and_is_idempotent(bases: str, registry: Path, tmp_path: Path) -> None:
    dest = tmp_path / "ckpt"
    path = _fetch("good", registry, dest)
    assert path == dest / "good.pth"
    assert path.read_bytes() == GOOD
    lock = json.loads((dest / "checkpoints.lock.json").read_text())
    rec = lock["checkpoints"]["good"]
    assert rec["sha256"] == GOOD_SHA and rec["size"] == len(GOOD) and rec["first_seen_unverified"] is True
    assert _leftovers(dest) == ["good.pth"]

    hits = _Handler.hits["good_file_id_0"]
    assert _fetch("good", registry, dest) == path
    assert _Handler.hits["good_file_id_0"] == hits  # second call: no download


def test_registry_hash_verified(bases: str, registry: Path, tmp_path: Path) -> None:
    assert _fetch("known", registry, tmp_path).read_bytes() == GOOD


def test_truncated_transfer_leaves_nothing(bases: str, registry: Path, tmp_path: Path) -> None:
    with pytest.raises(AllSourcesFailed) as err:
        _fetch("broken", registry, tmp_path)
    assert "gdrive id=broken_file_id" in str(err.value)
    assert _leftovers(tmp_path) == []  # neither broken.pth nor .broken.pth.part-PID
    assert "broken" not in fetch.read_lock(tmp_path)


def test_cut_transfer_reports_the_bytes_read(bases: str, registry: Path, tmp_path: Path) -> None:
    with pytest.raises(AllSourcesFailed) as err:
        _fetch("broken", registry, tmp_path)
    assert f"after {len(GOOD) // 2} bytes" in str(err.value), str(err.value)


@pytest.mark.parametrize(("name", "fid", "says"), [
    ("huge", "huge_stream_id", f"sent more than the {KNOWN_SIZE} bytes"),  # no Content-Length
    ("huge_announced", "huge_announced_id", f"announces {HUGE} bytes but the file has {KNOWN_SIZE}"),
])
def test_stream_longer_than_the_known_size_is_cut_off(bases: str, registry: Path, tmp_path: Path,
                                                       name: str, fid: str, says: str) -> None:
    done = _Handler.done[fid] = threading.Event()  # before the request: the handler sets this one
    with pytest.raises(AllSourcesFailed) as err:
        _fetch(name, registry, tmp_path)
    assert says in str(err.value), str(err.value)
    assert _leftovers(tmp_path) == []
    assert done.wait(10), "the server is still sending"
    assert _Handler.sent[fid] < HUGE // 8  # stopped at the size, not after the whole stream (socket buffers aside)


def test_trickle_cannot_outlive_the_timeout(bases: str, registry: Path, tmp_path: Path) -> None:
    start = time.monotonic()
    with pytest.raises(AllSourcesFailed) as err:
        _fetch("trickle", registry, tmp_path, timeout=1)
    assert time.monotonic() - start < 2.5
    assert "not complete within --timeout 1 s" in str(err.value), str(err.value)
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("name", ["redirect", "redirect_known"])
def test_redirect_to_another_host_is_logged(bases: str, registry: Path, tmp_path: Path, name: str) -> None:
    msgs: list[str] = []
    assert fetch_checkpoint(name, registry, tmp_path, progress=False, log=msgs.append).read_bytes() == GOOD
    port = bases.rsplit(":", 1)[1]
    assert any(f"from http://localhost:{port}/gd/download?id=good_file_id_0" in m for m in msgs), msgs
    warned = [m for m in msgs if "WARNING" in m and "another host" in m]
    assert len(warned) == (1 if name == "redirect" else 0), msgs


def test_wrong_hash_refused_and_removed(bases: str, registry: Path, tmp_path: Path) -> None:
    with pytest.raises(AllSourcesFailed) as err:
        _fetch("wrong_hash", registry, tmp_path)
    assert "SHA-256" in str(err.value) and GOOD_SHA in str(err.value)
    assert _leftovers(tmp_path) == []


def test_drive_confirm_page_then_file(bases: str, registry: Path, tmp_path: Path) -> None:
    path = _fetch("confirm", registry, tmp_path)
    assert path.read_bytes() == GOOD
    assert _Handler.hits["confirm_page_id"] == 2  # the page, then the file via the form


@pytest.mark.parametrize("name", ["quota", "html_binary"])
def test_drive_html_page_never_saved(bases: str, registry: Path, tmp_path: Path, name: str) -> None:
    with pytest.raises(AllSourcesFailed) as err:
        _fetch(name, registry, tmp_path)
    assert "HTML" in str(err.value)
    assert _leftovers(tmp_path) == []


def test_stalled_server_times_out(bases: str, registry: Path, tmp_path: Path) -> None:
    start = time.monotonic()
    with pytest.raises(AllSourcesFailed):
        _fetch("stalled", registry, tmp_path, timeout=0.3)
    assert time.monotonic() - start < 2
    assert _leftovers(tmp_path) == []


def test_sources_tried_in_order(bases: str, registry: Path, tmp_path: Path) -> None:
    assert _fetch("fallback", registry, tmp_path).read_bytes() == GOOD
    assert _Handler.hits["quota_page_id"] == 1 and _Handler.hits["broken_file_id"] == 1


def test_huggingface_source(bases: str, registry: Path, tmp_path: Path) -> None:
    assert _fetch("hf", registry, tmp_path).read_bytes() == GOOD


def test_base_url_parameter_overrides_env(server: str, registry: Path, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAR_GDRIVE_URL", "http://127.0.0.1:9/nowhere")
    assert _fetch("good", registry, tmp_path, gdrive_base=f"{server}/gd").read_bytes() == GOOD


# --------------------------------------------------------------- no network: exit 2


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_no_network_cli_message_and_exit_2(registry: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    port = _closed_port()
    monkeypatch.setenv("FAR_GDRIVE_URL", f"http://127.0.0.1:{port}")
    dest = tmp_path / "ckpt"
    rc = fetch.main(["good", "--registry", str(registry), "--dest", str(dest), "--timeout", "2", "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "could not download checkpoint 'good'" in err
    assert "gdrive id=good_file_id_0" in err and "ConnectionError" in err
    assert "https://drive.google.com/file/d/good_file_id_0/view" in err
    assert str(dest / "good.pth") in err
    assert "far fetch good" in err
    assert _leftovers(dest) == []


def test_unknown_drive_id_is_reported(registry: Path, tmp_path: Path) -> None:
    with pytest.raises(AllSourcesFailed) as err:
        _fetch("no_id", registry, tmp_path)
    assert "MODEL_ZOO.md" in str(err.value)


# ----------------------------------------------------------------- placed by hand


def test_hand_placed_file_recorded_then_verified(registry: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAR_GDRIVE_URL", f"http://127.0.0.1:{_closed_port()}")  # must not be contacted
    (tmp_path / "good.pth").write_bytes(GOOD)
    msgs: list[str] = []
    fetch_checkpoint("good", registry, tmp_path, progress=False, log=msgs.append)
    assert any("unverified-first-seen" in m for m in msgs)
    assert fetch.read_lock(tmp_path)["good"]["sha256"] == GOOD_SHA

    # Replaced by different bytes: the lock file's hash now refuses it, and it is left in place.
    placed = tmp_path / "good.pth"
    mtime = placed.stat().st_mtime_ns
    placed.write_bytes(OTHER)
    # Same size: make sure the mtime moves too (coarse clocks), or the unchanged-file shortcut applies.
    os.utime(placed, ns=(mtime + 10**9, mtime + 10**9))
    with pytest.raises(VerificationError, match="SHA-256"):
        _fetch("good", registry, tmp_path)
    assert (tmp_path / "good.pth").read_bytes() == OTHER


def test_hand_placed_file_checked_against_registry(registry: Path, tmp_path: Path) -> None:
    (tmp_path / "known.pth").write_bytes(GOOD)
    assert _fetch("known", registry, tmp_path).exists()
    (tmp_path / "wrong_hash.pth").write_bytes(GOOD)
    with pytest.raises(VerificationError, match="fails verification"):
        _fetch("wrong_hash", registry, tmp_path)


@pytest.mark.parametrize("content", [b"", QUOTA_PAGE.encode(), b"just some text"])
def test_hand_placed_non_checkpoint_refused(registry: Path, tmp_path: Path, content: bytes,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "good.pth").write_bytes(content)
    rc = fetch.main(["good", "--registry", str(registry), "--dest", str(tmp_path), "--no-progress"])
    assert rc == 1
    assert "fails verification" in capsys.readouterr().err
    assert "good" not in fetch.read_lock(tmp_path)


def test_sniff_format() -> None:
    assert sniff_format(GOOD[:16], len(GOOD)) == "zip"
    assert sniff_format(OTHER[:16], len(OTHER)) == "pickle"
    header = b'{"__metadata__":{}}'
    st = len(header).to_bytes(8, "little") + header
    assert sniff_format(st[:16], len(st)) == "safetensors"
    with pytest.raises(VerificationError, match="HTML"):
        sniff_format(b"  <!DOCTYPE html>", 100)


def test_stale_part_files_removed(bases: str, registry: Path, tmp_path: Path) -> None:
    stale = tmp_path / ".good.pth.part-999999999"  # no such pid
    tmp_path.mkdir(exist_ok=True)
    stale.write_bytes(b"half")
    _fetch("good", registry, tmp_path)
    assert not stale.exists()


# ----------------------------------------------------------------------- registry


def test_project_registry_is_valid() -> None:
    reg = load_registry(REPO / "params" / "checkpoints.yaml")
    for name in ("videomae_vit_s_k400", "videomae_vit_s_ssv2", "videomae_vit_b_k400", "videomae_vit_b_ssv2",
                 "mvd_vit_s_k400", "mvd_vit_b_k400"):
        assert name in reg
    assert not any(s.pretrain_dataset == "ssv2" for s in reg.values() if s.method == "mvd")
    for spec in reg.values():
        assert spec.sha256 is None or len(spec.sha256) == 64
        for src in spec.sources:
            assert src.kind == "huggingface" or src.id, f"{spec.name}: Drive id missing"


@pytest.mark.parametrize(
    ("mutate", "needle"),
    [
        (lambda e: e.update(method="mae"), "checkpoints[0].method: 'mae' is not one of videomae, mvd"),
        (lambda e: e.update(sha256="abc"), "checkpoints[0].sha256: must be null or 64"),
        (lambda e: e.update(size=-1), "checkpoints[0].size: must be null or a positive integer"),
        (lambda e: e.update(size=True), "checkpoints[0].size: expected an integer"),
        (lambda e: e.pop("sha256"), "checkpoints[0].sha256: required"),
        (lambda e: e.update(filename="../x.pth"), "checkpoints[0].filename: must be a plain file name"),
        (lambda e: e.update(sources=[{"kind": "s3", "id": "q"}]), "checkpoints[0].sources[0].kind: 's3' is not one of"),
        (lambda e: e.update(sources=[{"kind": "gdrive", "repo": "a/b"}]), "sources[0].repo: not a field of a gdrive"),
        (lambda e: e.update(sources=[{"kind": "huggingface", "repo": "a/b", "file": "m.bin"}]),
         "checkpoints[0].sources[0]: a huggingface source cannot deliver format 'videomae_pretrain'"),
        (lambda e: e.update(sources=[]), "checkpoints[0].sources: expected a non-empty list"),
        (lambda e: e.update(colour="red"), "checkpoints[0].colour: unknown key"),
        (lambda e: e.update(alternatives=["nope"]), "checkpoints[0].alternatives: unknown checkpoint 'nope'"),
    ],
)
def test_registry_errors_name_file_and_field(tmp_path: Path, mutate, needle: str) -> None:
    entry = _entry("x", [_gd("good_file_id_0")])
    mutate(entry)
    path = tmp_path / "reg.yaml"
    path.write_text(yaml.safe_dump({"version": 1, "checkpoints": [entry]}))
    with pytest.raises(RegistryError) as err:
        load_registry(path)
    assert str(path) in str(err.value) and needle in str(err.value)


def test_list_table(registry: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert fetch.main(["--list", "--registry", str(REPO / "params" / "checkpoints.yaml"), "--dest", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "mvd_vit_b_k400" in out and "videomae_vit_s_ssv2" in out and "filename" in out.splitlines()[0]


def test_unknown_name(registry: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert fetch.main(["nope", "--registry", str(registry), "--dest", str(tmp_path)]) == 1
    assert "unknown checkpoint 'nope'" in capsys.readouterr().err
