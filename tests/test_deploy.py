"""The team setup (deploy/team.sh) end to end: a real `chroma run`, two `rag serve`
sharing it and one index folder; each instance sees what the other ingested."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .conftest import ROOT, pick_free_port


def _upload(base: str, path: Path) -> dict:
    p = subprocess.run(["curl", "-s", "-F", f"files=@{path}", f"{base}/v1/documents"],
                       capture_output=True, text=True, timeout=300, check=True)  # fmt: skip
    return json.loads(p.stdout)


def _ask(base: str, question: str) -> dict:
    from openai import OpenAI

    client = OpenAI(base_url=f"{base}/v1", api_key="none", max_retries=0, timeout=120)
    r = client.chat.completions.create(
        model="rag", messages=[{"role": "user", "content": question}]
    )
    return r.model_dump()


@pytest.mark.slow
def test_two_instances_over_one_chroma_server_see_each_others_ingests(tmp_path: Path) -> None:
    bin_dir = Path(sys.executable).parent
    ports = [pick_free_port(), pick_free_port()]
    chroma_port = pick_free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAG_")}
    env.update(DATA=str(tmp_path / "team"), CHROMA_PORT=str(chroma_port),
               RAG_PORTS=" ".join(map(str, ports)), RAG=str(bin_dir / "rag"),
               CHROMA=str(bin_dir / "chroma"))  # fmt: skip
    proc = subprocess.Popen(["bash", str(ROOT / "deploy" / "team.sh")], env=env, cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)  # fmt: skip
    try:
        assert proc.stdout is not None
        lines = []
        deadline = time.time() + 240
        while time.time() < deadline:
            line = proc.stdout.readline()
            lines.append(line)
            if "team: ready" in line or not line:
                break
        assert "team: ready" in lines[-1], "".join(lines)
        a, b = (f"http://127.0.0.1:{p}" for p in ports)

        note = tmp_path / "lighthouse.md"
        note.write_text("# Zephyr\n\nThe Zephyr lighthouse was built in 1887 by Ingrid "
                        "Halvorsen.\n")  # fmt: skip
        assert _upload(a, note)["report"]["added"]
        answer = _ask(b, "Who built the Zephyr lighthouse?")  # the other instance
        assert "Ingrid Halvorsen" in answer["choices"][0]["message"]["content"]
        assert answer["citations"][0]["source"].endswith("lighthouse.md")

        other = tmp_path / "quince.md"
        other.write_text("# Orchard\n\nThe quince harvest was 40 tonnes in 2024.\n")
        assert _upload(b, other)["report"]["added"]
        answer = _ask(a, "How many tonnes was the quince harvest in 2024?")
        assert "40 tonnes" in answer["choices"][0]["message"]["content"]
        # the vectors are on the server, not in the index folder
        assert not (tmp_path / "team" / "index" / "chroma").exists()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(60)
    for port in [*ports, chroma_port]:  # everything it started has stopped
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", port)) != 0, f"port {port} still open"
