"""Nothing downloads at run time: ingest, search, ask and status with no network at all.

Run under `unshare -n` (a network namespace with no interfaces) when the kernel allows
it, and always under a socket guard that fails any connection to a non-loopback address
and records it, so a library that swallows the error still fails the test.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import ROOT, SEEDS

GUARD = """
import socket, os
_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex
_LOG = os.environ["RAG_TEST_NET_LOG"]

def _check(self, address):
    host = address[0] if isinstance(address, tuple) else str(address)
    local = host in ("127.0.0.1", "::1", "localhost") or host.startswith("127.")
    if self.family == socket.AF_UNIX or local:
        return
    with open(_LOG, "a") as f:
        f.write(f"{host}\\n")
    raise OSError(101, f"network is unreachable (test guard): {host}")

def connect(self, address):
    _check(self, address)
    return _real_connect(self, address)

def connect_ex(self, address):
    _check(self, address)
    return _real_connect_ex(self, address)

socket.socket.connect = connect
socket.socket.connect_ex = connect_ex
_real_gai = socket.getaddrinfo
def getaddrinfo(host, *a, **k):
    if host not in (None, "localhost") and not str(host).startswith(("127.", "::1")):
        with open(_LOG, "a") as f:
            f.write(f"dns:{host}\\n")
        raise socket.gaierror(-3, f"no DNS in this test: {host}")
    return _real_gai(host, *a, **k)
socket.getaddrinfo = getaddrinfo
"""


def _unshare_works() -> bool:
    if not shutil.which("unshare"):
        return False
    p = subprocess.run(["unshare", "-n", "true"], capture_output=True)
    return p.returncode == 0


def _run(args: list[str], tmp_path: Path, use_unshare: bool) -> subprocess.CompletedProcess[str]:
    guard_dir = tmp_path / "guard"
    guard_dir.mkdir(exist_ok=True)
    (guard_dir / "sitecustomize.py").write_text(GUARD)
    # a clean environment: no offline switches from the caller, rag must set its own
    dropped = ("RAG_", "HF_", "TRANSFORMERS_", "ANONYMIZED", "GRADIO")
    env = {k: v for k, v in os.environ.items() if not k.startswith(dropped)}
    env["PYTHONPATH"] = str(guard_dir)
    env["RAG_TEST_NET_LOG"] = str(tmp_path / "net.log")
    env["HOME"] = str(tmp_path / "home")  # no model caches from earlier runs to fall back on
    cmd = [sys.executable, "-m", "rag", "--index", str(tmp_path / "idx"), *args]
    if use_unshare:
        cmd = ["unshare", "-n", *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)


@pytest.mark.slow
@pytest.mark.parametrize("use_unshare", [True, False], ids=["unshare-n", "socket-guard"])
def test_ingest_and_ask_with_no_network(tmp_path: Path, use_unshare: bool) -> None:
    if use_unshare and not _unshare_works():
        pytest.skip("unshare -n is not permitted here; the socket-guard variant still runs")
    docs = tmp_path / "docs"
    shutil.copytree(SEEDS, docs)
    (docs / "page.html").write_text(
        "<html><body><main><p>Offline pages load too.</p></main></body></html>"
    )
    r = _run(["ingest", str(docs)], tmp_path, use_unshare)
    assert r.returncode == 0, r.stderr
    r = _run(
        ["ask", "How much did Japan pledge to the United States?", "--json"], tmp_path, use_unshare
    )
    assert r.returncode == 0, r.stderr
    assert "550 billion" in json.loads(r.stdout)["answer"]
    r = _run(["search", "tariff agreement", "--mode", "hybrid", "--json"], tmp_path, use_unshare)
    assert r.returncode == 0 and json.loads(r.stdout)["hits"]
    # the cross-encoder loaded and reranked, from files in site-packages
    assert all(h["rerank"] is not None for h in json.loads(r.stdout)["hits"])
    assert _run(["status"], tmp_path, use_unshare).returncode == 0
    log = tmp_path / "net.log"
    attempts = log.read_text() if log.exists() else ""
    assert attempts == "", f"tried to reach the network: {attempts}"


@pytest.mark.slow
def test_the_long_running_server_makes_no_network_calls(tmp_path: Path) -> None:
    """`rag serve` under strace for half a minute after it listens: onnxruntime's 1DS
    telemetry used to look up mobile.events.data.microsoft.com (~13 DNS queries in 25 s),
    which the socket guard above cannot see (it is native code)."""
    import re
    import time

    from .conftest import missing, pick_free_port, write_small_corpus

    if not shutil.which("strace"):
        missing("strace is not installed (`make test` installs it: apt-get install strace)")
    docs = write_small_corpus(tmp_path / "docs")
    port = pick_free_port()
    trace = tmp_path / "strace.log"
    dropped = ("RAG_", "HF_", "TRANSFORMERS_", "ANONYMIZED", "GRADIO", "ORT_", "DO_NOT_TRACK")
    env = {k: v for k, v in os.environ.items() if not k.startswith(dropped)}
    env["HOME"] = str(tmp_path / "home")
    cmd = ["strace", "-f", "-qq", "-e", "trace=connect,sendto,sendmsg,bind", "-o", str(trace),
           sys.executable, "-m", "rag", "--index", str(tmp_path / "idx"), "serve", "--port",
           str(port), "--docs", str(tmp_path / "uploads"), "--ingest", str(docs)]  # fmt: skip
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         cwd=tmp_path, env=env, start_new_session=True)  # fmt: skip
    try:
        assert p.stdout is not None
        line = p.stdout.readline()  # printed once the app listens and the models are loaded
        assert f"http://127.0.0.1:{port}/" in line, line + (p.stderr.read() if p.stderr else "")
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=30) as r:
            assert r.status == 200
        time.sleep(30)
    finally:
        import signal

        os.killpg(p.pid, signal.SIGTERM)  # strace and the server it traces
        p.wait(timeout=60)
    calls = trace.read_text().splitlines()
    assert any("bind(" in c and f"htons({port})" in c for c in calls), (
        "strace did not see the server bind its port: the trace did not work"
    )
    inet = [c for c in calls if "connect(" in c and ("AF_INET" in c or "AF_INET6" in c)]
    outside = [
        c for c in inet
        if not re.search(r'inet_addr\("127\.|inet_pton\(AF_INET6, "::1"|"::ffff:127\.', c)
    ]  # fmt: skip
    dns = [c for c in calls if "htons(53)" in c]
    assert not outside and not dns, "\n".join((outside + dns)[:10])
