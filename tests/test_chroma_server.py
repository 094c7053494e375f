"""The index against a real `chroma run` server on 127.0.0.1, started by the test."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import pick_free_port, run_rag


@pytest.fixture(scope="module")
def chroma_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    exe = Path(sys.executable).parent / "chroma"
    if not exe.exists():
        exe = Path(shutil.which("chroma") or "chroma")
    data = tmp_path_factory.mktemp("chroma-data")
    port = pick_free_port()
    log = (data / "server.log").open("w")
    proc = subprocess.Popen(
        [str(exe), "run", "--path", str(data / "db"), "--host", "127.0.0.1", "--port", str(port)],
        stdout=log, stderr=subprocess.STDOUT,
        env={"ANONYMIZED_TELEMETRY": "False", "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    deadline = time.time() + 60
    while time.time() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"chroma run exited: {(data / 'server.log').read_text()[-2000:]}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.2)
    else:
        proc.kill()
        pytest.fail("chroma run did not start within 60 s")
    yield f"http://127.0.0.1:{port}"
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


@pytest.mark.slow
def test_ingest_search_ask_reingest_with_chroma_server(
    chroma_server: str, tmp_path: Path, corpus: Path
) -> None:
    index = tmp_path / "idx"
    r = run_rag("--chroma-url", chroma_server, "ingest", str(corpus), "--json", index=index)
    assert r.code == 0, r.err
    assert json.loads(r.out)["documents_total"] == 2
    assert not (index / "chroma").exists()  # vectors live on the server
    manifest = json.loads((index / "manifest.json").read_text())
    assert manifest["chroma_url"] == chroma_server

    # later commands find the server through the manifest
    r = run_rag(
        "ask", "How much did Alpha receive from the Horizon programme?", "--json", index=index
    )
    assert r.code == 0, r.err
    assert "2.5 million euros" in json.loads(r.out)["answer"]

    (corpus / "beta.txt").write_text("Beta now runs 2,000 bikes in Ghent.\n")
    r = run_rag("ingest", str(corpus), "--json", index=index)
    rep = json.loads(r.out)
    assert [Path(s).name for s in rep["updated"]] == ["beta.txt"]
    r = run_rag("search", "bikes in Ghent", "-k", "1", "--mode", "dense", "--json", index=index)
    assert "2,000 bikes" in json.loads(r.out)["hits"][0]["text"]

    import chromadb

    port = chroma_server.rsplit(":", 1)[1]
    client = chromadb.HttpClient(host="127.0.0.1", port=int(port))
    count = client.get_collection(manifest["collection"]).count()
    status = json.loads(run_rag("status", "--json", index=index).out)
    assert count == status["chunks"]


@pytest.mark.slow
def test_server_down_is_a_one_line_error(tmp_path: Path, corpus: Path) -> None:
    url = f"http://127.0.0.1:{pick_free_port()}"
    r = run_rag("--chroma-url", url, "ingest", str(corpus), index=tmp_path / "idx")
    assert r.code == 1
    assert len(r.err.strip().splitlines()) == 1 and "chroma run" in r.err, r.err
