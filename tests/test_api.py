"""The OpenAI-compatible API of `rag serve`, against the real server (started here on
127.0.0.1, with a key) and the real `openai` client; /v1/search and /v1/documents by curl."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .conftest import ROOT, SEEDS, pick_free_port, run_rag, stop

KEY = "test-key-4f1c"


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """(base URL of /v1, the server's folder)."""
    tmp = tmp_path_factory.mktemp("api")
    port = pick_free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAG_")}
    env["RAG_API_KEY"] = KEY
    log = tmp / "serve.log"
    cmd = [sys.executable, "-m", "rag", "--index", str(tmp / "index"), "serve", "--port",
           str(port), "--docs", str(tmp / "documents"), "--ingest", str(SEEDS)]  # fmt: skip
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=tmp)
    try:
        deadline = time.time() + 180
        while "rag is serving" not in log.read_text():
            assert proc.poll() is None, log.read_text()
            assert time.time() < deadline, log.read_text()
            time.sleep(0.2)
        yield f"http://127.0.0.1:{port}/v1", tmp
    finally:
        stop(proc, 20)


def _client(base: str, key: str = KEY) -> object:
    from openai import OpenAI

    return OpenAI(base_url=base, api_key=key, max_retries=0, timeout=120)


QUESTION = "How much did Japan pledge to the United States?"


def test_the_openai_client_gets_a_cited_answer(api: tuple[str, Path]) -> None:
    base, _ = api
    client = _client(base)
    assert {"rag", "rag:extractive"} <= {m.id for m in client.models.list().data}  # type: ignore[attr-defined]
    r = client.chat.completions.create(  # type: ignore[attr-defined]
        model="rag", messages=[{"role": "user", "content": QUESTION}]
    )
    text = r.choices[0].message.content
    assert "550 billion" in text and "[1]" in text
    extra = r.model_dump()
    assert extra["refused"] is False
    cit = extra["citations"][0]
    fields = {"n", "source", "chunk_id", "page", "start_char", "end_char", "quote", "supported"}
    assert fields <= set(cit)
    source = Path(cit["source"]).read_text()
    assert cit["quote"] in source[cit["start_char"] : cit["end_char"]]


def test_streamed_answers_and_refusals(api: tuple[str, Path]) -> None:
    base, _ = api
    client = _client(base)
    stream = client.chat.completions.create(  # type: ignore[attr-defined]
        model="rag:extractive", stream=True, messages=[{"role": "user", "content": QUESTION}]
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert "550 billion" in text and chunks[-1].choices[0].finish_reason == "stop"
    assert chunks[-1].model_dump()["citations"], "the last chunk carries the citations"

    r = client.chat.completions.create(  # type: ignore[attr-defined]
        model="rag", messages=[{"role": "user", "content": "Who won the 2022 FIFA World Cup?"}]
    )
    assert r.model_dump()["refused"] is True
    assert r.choices[0].message.content.startswith("The documents do not say")

    # a follow-up is condensed from the earlier turns, as `rag chat` does
    r = client.chat.completions.create(  # type: ignore[attr-defined]
        model="rag",
        messages=[
            {"role": "user", "content": QUESTION},
            {"role": "assistant", "content": "Japan pledged $550 billion. [1]"},
            {"role": "user", "content": "And what did Trump say the U.S. gets from Korea?"},
        ],
    )
    assert "350 billion" in r.choices[0].message.content


def test_a_wrong_key_is_401_and_errors_are_openai_shaped(api: tuple[str, Path]) -> None:
    import openai

    base, _ = api
    with pytest.raises(openai.AuthenticationError) as e:
        _client(base, "wrong").models.list()  # type: ignore[attr-defined]
    assert "Authorization: Bearer" in str(e.value)
    with pytest.raises(openai.NotFoundError, match="no model 'gpt-4'"):
        _client(base).chat.completions.create(  # type: ignore[attr-defined]
            model="gpt-4", messages=[{"role": "user", "content": "hi"}]
        )
    # health is public (for load balancers); the app's page asks for the key
    with urllib.request.urlopen(base.replace("/v1", "/healthz")) as r:
        assert json.loads(r.read())["ok"] is True
    root = base.replace("/v1", "")
    with pytest.raises(urllib.error.HTTPError) as denied:
        urllib.request.urlopen(f"{root}/config")
    assert denied.value.code == 401 and "protected by a key" in denied.value.read().decode()
    login = urllib.parse.urlencode({"username": "me", "password": KEY}).encode()
    with urllib.request.urlopen(f"{root}/login", data=login) as r:
        assert r.status == 200


def _curl(*args: str) -> dict:
    p = subprocess.run(["curl", "-s", "-H", f"Authorization: Bearer {KEY}", *args],
                       capture_output=True, text=True, timeout=300, check=True)  # fmt: skip
    return json.loads(p.stdout)


@pytest.mark.skipif(not shutil.which("curl"), reason="curl is not installed")
def test_search_and_documents_from_curl(api: tuple[str, Path], tmp_path: Path) -> None:
    base, _ = api
    query = {"query": "Mutual Defense Treaty", "k": 3, "mode": "hybrid"}
    out = _curl("-X", "POST", f"{base}/search", "-H", "Content-Type: application/json",
                "-d", json.dumps(query))  # fmt: skip
    assert out["query"] == "Mutual Defense Treaty" and len(out["hits"]) == 3
    assert {"rank", "chunk_id", "source", "text", "score"} <= set(out["hits"][0])

    note = tmp_path / "kestrel.md"
    note.write_text("# Kestrel\n\nThe Kestrel Observatory reported 212 aurora nights in 2024.\n")
    up = _curl("-X", "POST", f"{base}/documents", "-F", f"files=@{note}")
    assert up["saved"] == ["kestrel.md"] and up["report"]["added"]
    listed = _curl(f"{base}/documents")["data"]
    mine = [d for d in listed if d["source"].endswith("kestrel.md")]
    assert mine and mine[0]["status"] == "indexed"
    r = _client(base).chat.completions.create(  # type: ignore[attr-defined]
        model="rag",
        messages=[
            {
                "role": "user",
                "content": "How many aurora nights did the Kestrel Observatory report in 2024?",
            }
        ],
    )
    assert "212" in r.choices[0].message.content
    gone = _curl("-X", "DELETE", "-G", f"{base}/documents", "--data-urlencode",
                 f"source={mine[0]['source']}")  # fmt: skip
    assert gone["deleted"] == mine[0]["source"]
    assert _curl("-X", "DELETE", "-G", f"{base}/documents", "--data-urlencode",
                 "source=/nope")["error"]["code"] == 404  # fmt: skip
    status = _curl(f"{base}/status")
    assert status["documents"] == 2 and status["health"]["ok"]


def test_an_open_host_without_a_key_is_refused(tmp_path: Path) -> None:
    r = run_rag("serve", "--host", "0.0.0.0", index=tmp_path / "idx", cwd=ROOT)
    assert r.code == 2 and "--api-key" in r.err and r.err.count("\n") == 1


def test_a_full_queue_is_503_with_retry_after(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fastapi.testclient import TestClient

    from rag import api as api_module
    from rag.ui.engine import Engine, LLMChoice

    from .conftest import settings_for

    monkeypatch.setattr(api_module, "MAX_QUEUE", 0)
    engine = Engine(settings_for(tmp_path / "idx"), tmp_path / "docs")
    try:
        app = api_module.build_api(engine, api_key=None, configured=LLMChoice(), local={})
        r = TestClient(app).post("/v1/search", json={"query": "x"})
        assert r.status_code == 503 and r.headers["retry-after"] == "2"
        assert r.json()["error"]["type"] == "server_busy"
    finally:
        engine.close()


def test_an_upload_over_the_size_limit_is_413(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from rag import api as api_module
    from rag.ui.engine import Engine, LLMChoice

    from .conftest import settings_for

    settings = settings_for(tmp_path / "idx", load={"max_file_mb": 0.001})  # ~1 KB
    engine = Engine(settings, tmp_path / "docs")
    try:
        app = api_module.build_api(engine, api_key=None, configured=LLMChoice(), local={})
        r = TestClient(app).post("/v1/documents", files={"files": ("big.txt", b"x" * 5000)})
        assert r.status_code == 413 and "--max-file-mb" in r.json()["error"]["message"]
        assert not (tmp_path / "docs").exists() or not list((tmp_path / "docs").iterdir())
    finally:
        engine.close()


def test_every_admitted_request_is_released(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Plain, streamed and failing requests each give their place back: with room for one,
    one after another all get in."""
    from fastapi.testclient import TestClient

    from rag import api as api_module
    from rag.ui.engine import Engine, LLMChoice

    from .conftest import settings_for

    monkeypatch.setattr(api_module, "MAX_QUEUE", 1)
    engine = Engine(settings_for(tmp_path / "idx"), tmp_path / "docs")  # no index: errors
    try:
        app = api_module.build_api(engine, api_key=None, configured=LLMChoice(), local={})
        client = TestClient(app)
        body = {"model": "rag", "messages": [{"role": "user", "content": "Who?"}]}
        for _ in range(3):
            r = client.post("/v1/chat/completions", json=body)
            assert r.status_code == 409 and "rag --index" in r.json()["error"]["message"]
            assert app.state.in_flight == 0
            r = client.post("/v1/chat/completions", json={**body, "stream": True})
            assert r.status_code == 200 and '"error"' in r.text and "[DONE]" in r.text
            assert app.state.in_flight == 0  # released once: by the stream, not again after
    finally:
        engine.close()


def test_only_an_endpoint_or_a_model_file_writes_the_answer() -> None:
    """What decides whether `expand` can be had: a model name alone answers by quoting."""
    from rag.ui.engine import LLMChoice

    assert LLMChoice(url="http://127.0.0.1:9/v1").writes
    assert LLMChoice(gguf="model.gguf").writes
    assert not LLMChoice(model="llama3.2").writes and not LLMChoice().writes


def test_expand_searches_for_the_models_guess_and_needs_a_model_that_writes(
    seeds_index: Path, tmp_path: Path
) -> None:
    """`"expand": true` in a chat request does what `--expand` does; with the quoting
    answerer (no model to write the guess) it is a 400 that names the model to use."""
    from fastapi.testclient import TestClient

    from rag import api as api_module
    from rag.expand import PROMPT
    from rag.ui.engine import Engine, LLMChoice

    from .conftest import settings_for
    from .fake_llm import FakeLLM, Reply

    guess = "Tokyo promised Washington 550 billion dollars of investment."
    asks_guess = PROMPT.split("{")[0][:40]

    def script(req: dict) -> Reply:  # type: ignore[type-arg]
        user = req["messages"][-1]["content"]
        return Reply(guess if asks_guess in user else "Japan pledged $550 billion [1].")

    def guesses(llm: FakeLLM) -> int:
        return sum(asks_guess in m["content"] for b in llm.requests for m in b["messages"])

    with FakeLLM(script) as llm:
        # RAG_EXPAND=1 on the server: a request's "expand" overrides it
        engine = Engine(settings_for(seeds_index, retrieve={"expand": True}), tmp_path / "docs")
        try:
            app = api_module.build_api(engine, api_key=None, configured=LLMChoice(url=llm.url),
                                       local={})  # fmt: skip
            client = TestClient(app)
            q = [{"role": "user", "content": "How much money did Tokyo promise Washington?"}]

            def chat(**body: object) -> Any:
                return client.post("/v1/chat/completions", json={"messages": q, **body})

            r = chat(model="rag:extractive", expand=True)
            assert r.status_code == 400, r.text
            assert "searched for): use one of rag," in r.json()["error"]["message"]
            assert not llm.requests
            # the quoting model writes no guess: RAG_EXPAND leaves it alone, without a 400
            r = chat(model="rag:extractive")
            assert r.status_code == 200 and "hypothesis" not in r.json() and not llm.requests

            r = chat(model="rag", expand=False)
            assert r.status_code == 200 and "hypothesis" not in r.json()
            assert r.json()["rag_mode"] == "llm" and guesses(llm) == 0

            r = chat(model="rag")  # the server's RAG_EXPAND
            assert r.status_code == 200, r.text
            assert r.json()["hypothesis"] == guess and guesses(llm) == 1
            assert r.json()["rag_mode"] == "llm"  # the model's answer, not the quote

            r = chat(model="rag", expand=True, stream=True)
            assert r.status_code == 200
            events = [json.loads(line[6:]) for line in r.text.splitlines()
                      if line.startswith("data: {")]  # fmt: skip
            assert events[-1]["hypothesis"] == guess and events[-1]["citations"]
        finally:
            engine.close()


# --- /v1/embeddings: our embedder as a remote one ----------------------------------------


def test_embeddings_endpoint_gives_the_bundled_models_vectors(api: tuple[str, Path]) -> None:
    """The real `openai` client (which asks for base64 by default) and plain JSON floats get
    exactly what the bundled embedder computes here."""
    import numpy as np

    from rag.config import EmbedSettings
    from rag.embeddings import BUNDLED, make_embedder

    base, _ = api
    texts = ["Japan pledged $550 billion.", "A second, longer text about tariffs and trade."]
    local = make_embedder(EmbedSettings()).embed(texts)
    r = _client(base).embeddings.create(model=BUNDLED, input=texts)  # type: ignore[attr-defined]
    assert [d.index for d in r.data] == [0, 1] and r.model == BUNDLED
    assert np.allclose(np.array([d.embedding for d in r.data]), local, atol=1e-5)
    assert r.usage.prompt_tokens > 10
    status, body = _post(base, "/embeddings", {"input": texts[0], "encoding_format": "float"})
    assert status == 200 and np.allclose(body["data"][0]["embedding"], local[0], atol=1e-5)
    assert BUNDLED in {m.id for m in _client(base).models.list().data}  # type: ignore[attr-defined]

    status, body = _post(base, "/embeddings", {"input": "x", "model": "text-embedding-3-small"})
    assert status == 404 and "this server embeds with 'minilm-int8'" in body["error"]["message"]
    status, body = _post(base, "/embeddings", {"input": []})
    assert status == 400 and "none of them empty" in body["error"]["message"]
    status, body = _post(base, "/embeddings", {"input": ["x"] * 2049})
    assert status == 400 and "send them in batches" in body["error"]["message"]
    status, body = _post(base, "/embeddings", {"input": "x", "dimensions": 10})
    assert status == 400 and "send 384 or leave `dimensions` out" in body["error"]["message"]


@pytest.mark.slow
def test_ingest_with_embed_url_against_our_server(api: tuple[str, Path], tmp_path: Path) -> None:
    """`rag ingest --embed-url` against a real server (ours, on 127.0.0.1): the manifest
    names the remote model, the index answers like a local one, and opening it without
    the endpoint is refused with the command that fixes it."""
    base, _ = api
    index = tmp_path / "remote"
    env = {"OPENAI_API_KEY": KEY}
    r = run_rag("--embed-url", base, "ingest", str(SEEDS), index=index, env=env)
    assert r.code == 0, r.err
    manifest = json.loads((index / "manifest.json").read_text())
    assert manifest["embedding"]["model"] == f"openai:minilm-int8@{base}"
    assert manifest["embedding"]["dim"] == 384

    remote = run_rag("--embed-url", base, "search", "--json", "-k", "3", QUESTION,
                     index=index, env=env)  # fmt: skip
    local = run_rag("search", "--json", "-k", "3", QUESTION, index=_local_seeds(tmp_path))
    assert remote.code == 0 and local.code == 0, remote.err + local.err

    def ids(out: str) -> list[str]:
        return [h["chunk_id"] for h in json.loads(out)["hits"]]

    assert ids(remote.out) == ids(local.out)  # the same vectors, so the same ranking
    r = run_rag("ask", QUESTION, index=index)
    assert r.code != 0
    assert "embedding model openai:minilm-int8@" in r.err and "ingest --rebuild" in r.err
    assert f"or run it as `rag --index {index} --embed-url {base} COMMAND …`" in r.err
    r = run_rag("--embed-url", base, "search", "-k", "1", QUESTION, index=index,
                env={"OPENAI_API_KEY": ""})  # no key  # fmt: skip
    assert r.code != 0 and "refused the key (HTTP 401): set OPENAI_API_KEY" in r.err


def _local_seeds(tmp_path: Path) -> Path:
    index = tmp_path / "local"
    r = run_rag("ingest", str(SEEDS), index=index)
    assert r.code == 0, r.err
    return index


def _post(base: str, path: str, body: dict[str, object]) -> tuple[int, dict[str, object]]:
    req = urllib.request.Request(
        base + path, data=json.dumps(body).encode(), method="POST",
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {KEY}"},
    )  # fmt: skip
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_an_unusable_index_is_409_with_its_fix_and_healthz_says_so(
    seeds_index: Path, tmp_path: Path
) -> None:
    """A damaged manifest used to give 500 on /v1 and {"ok": true} on /healthz."""
    import shutil

    from fastapi.testclient import TestClient

    from rag import api as api_module
    from rag.ui.engine import Engine, LLMChoice

    from .conftest import settings_for

    index = tmp_path / "idx"
    shutil.copytree(seeds_index, index)
    (index / "manifest.json").write_text("{not json")
    engine = Engine(settings_for(index), tmp_path / "docs")
    try:
        app = api_module.build_api(engine, api_key=None, configured=LLMChoice(), local={})
        client = TestClient(app)
        r = client.get("/healthz")
        assert r.status_code == 503 and not r.json()["ok"]
        assert "index_unusable" in r.json()["error"] and "/tmp" not in r.text  # no paths
        r = client.get("/v1/status")
        assert r.status_code == 409 and r.json()["error"]["type"] == "index_unusable"
        assert "manifest.json" in r.json()["error"]["message"]
    finally:
        engine.close()


def test_sources_and_mode_are_checked_before_anything_runs(api: tuple[str, Path]) -> None:
    """An unknown source used to search nothing and answer "The documents do not say.",
    and a bad mode failed only after the LLM calls (mid-stream, as an SSE error)."""
    base, _ = api
    listed = _curl(f"{base}/documents")["data"]
    essay = next(d["source"] for d in listed if d["status"] == "indexed")
    ask = {"model": "rag", "messages": [{"role": "user", "content": QUESTION}]}
    for path in ("/search", "/chat/completions"):
        body = {"query": QUESTION} if path == "/search" else dict(ask)
        code, out = _post(base, path, {**body, "sources": ["/no/such/file.txt"]})
        assert code == 400 and out["error"]["type"] == "unknown_source"
        assert "/no/such/file.txt" in out["error"]["message"]
        assert "GET /v1/documents" in out["error"]["message"]
        code, out = _post(base, path, {**body, "sources": []})
        assert code == 400 and "leave it out" in out["error"]["message"]
        code, out = _post(base, path, {**body, "mode": "semantic", "stream": True})
        assert code == 400 and "'semantic' is not one of dense, keyword, hybrid" in str(out)
        code, out = _post(base, path, {**body, "sources": [essay]})
        assert code == 200, out
    code, out = _post(base, "/search", {"query": QUESTION, "sources": [essay]})
    assert out["hits"] and {h["source"] for h in out["hits"]} == {essay}


def test_an_unexpected_error_is_openai_shaped_json_and_odd_upload_names_are_safe(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fastapi.testclient import TestClient

    from rag import api as api_module
    from rag.ui.engine import Engine, LLMChoice

    from .conftest import settings_for

    engine = Engine(settings_for(tmp_path / "idx"), tmp_path / "docs")
    try:
        app = api_module.build_api(engine, api_key=None, configured=LLMChoice(), local={})
        client = TestClient(app, raise_server_exceptions=False)
        for name in ("..", ".", "../../x.txt"):
            r = client.post("/v1/documents", files={"files": (name, b"plain words here")})
            assert r.status_code == 200, r.text  # was IsADirectoryError: a bare 500 page
        assert not (tmp_path / "x.txt").exists() and not (tmp_path.parent / "x.txt").exists()

        def broken() -> dict[str, object]:
            raise RuntimeError("the catalog fell over")

        monkeypatch.setattr(engine, "status", broken)
        r = client.get("/v1/status")
        assert r.status_code == 500
        err = r.json()["error"]
        assert err["type"] == "internal_error" and "the catalog fell over" in err["message"]
    finally:
        engine.close()
