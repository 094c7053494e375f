"""bench/answers.py: which "unanswerable" questions a whole docs tree answers, and the
source-checked re-scoring of `run_eval` results."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def answers() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_answers", ROOT / "bench" / "answers.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_answers"] = module
    spec.loader.exec_module(module)
    return module


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_a_tree_that_answers_a_question_excludes_it_and_names_the_rendered_page(
    answers: ModuleType, tmp_path: Path
) -> None:
    tree = tmp_path / "html"
    # the answer split by markup, as Sphinx renders it, and once more in the reST source
    _write(
        tree / "library" / "pickle.html",
        "<html><body><p>Currently the <em>default\n protocol</em> is 4, first introduced"
        " in Python 3.4.</p></body></html>",
    )
    _write(tree / "_sources" / "library" / "pickle.rst.txt", "Currently the default protocol is 4.")
    # files `rag ingest` does not read answer nothing
    _write(tree / "searchindex.js", "pathlib.Path.walk() was added in 3.12")
    _write(tree / ".hidden" / "walk.html", "<p>Path.walk() is new in version 3.12.</p>")
    # a page on the topic that does not give the fact
    _write(tree / "library" / "csv.html", "<p>csv.field_size_limit() returns the maximum.</p>")

    found = answers.answered_in_tree(tree, answers.UNANSWERED)

    assert set(found) == {"d22"}
    d22 = found["d22"]
    assert d22.source == "library/pickle.html"
    assert d22.also == 0  # the reST copy is left out, as `rag ingest` leaves it out
    assert "default protocol is 4" in d22.quote


def test_each_pattern_matches_an_answer_but_nothing_in_the_fifty_pages(
    answers: ModuleType,
) -> None:
    from rag.types import Document

    said = {
        "d03": "Path.walk() New in version 3.12.",
        "d08": "statistics.kde(data, h) New in version 3.13.",
        "d12": "The re module caches up to 512 compiled patterns.",
        "d16": "The default limit is 131072.",
        "d22": "The default protocol in the pickle module is now Protocol 4.",
        "d26": "8.6. The match statement New in version 3.10. The match statement is used",
        "d31": "heapq.heapify(x, key=None)",
        "d36": "functools.cache is about 10% faster than lru_cache() with a size limit.",
        "d40": "RotatingFileHandler(filename, mode='a', maxBytes=0, backupCount=0)",
        "d44": "tee() buffers at most 1000 items before raising an error.",
        "d48": "Python 1.0 was released in January 1994.",
        "d52": "Names are made of eight random characters.",
        "d56": "rmtree() retries up to 5 times on Windows.",
        "d60": "two attributes take 48 bytes with __slots__ and 152 bytes without",
    }
    assert set(said) == set(answers.UNANSWERED)
    for qid, text in said.items():
        doc = Document(source=f"/t/{qid}.html", text=text, title="", sha256="")
        assert set(answers.answered_in_tree(Path("/t"), answers.UNANSWERED, [doc])) == {qid}
    # the questions were written as near misses of these pages: none is answered there
    rows = [json.loads(line) for line in (ROOT / "evals" / "pydocs_qa.jsonl").open()]
    assert {r["id"] for r in rows if not r["answerable"]} == set(answers.UNANSWERED)
    assert answers.answered_in_tree(ROOT / "evals" / "corpora" / "pydocs", answers.UNANSWERED) == {}


def _question(**kw: Any) -> dict[str, Any]:
    entry = {"chunk_id": "", "source": "", "relevant": True}
    q = {
        "id": "d01",
        "answerable": True,
        "evidence": ["its smallest element is always the root"],
        "retrieved": [
            {**entry, "chunk_id": "w", "source": "/html/whatsnew/3.2.html"},
            {**entry, "chunk_id": "r", "source": "/html/_sources/library/heapq.rst.txt"},
            {**entry, "chunk_id": "h", "source": "/html/library/heapq.html"},
        ],
        "citations": [
            {"chunk_id": "w", "source": "/html/whatsnew/3.2.html", "supports": True},
            {"chunk_id": "h", "source": "/html/library/heapq.html", "supports": True},
        ],
        "hit": 1.0,
        "rr": 1.0,
        "ndcg": 1.0,
        "evidence_recall": 1.0,
        "citation_precision": 1.0,
        "citation_recall": 1.0,
    }
    q.update(kw)
    return q


def test_evidence_counts_only_from_the_expected_page(answers: ModuleType) -> None:
    quote = "a heap: its smallest element is always the root, heap[0]"
    texts = {"w": quote, "r": quote, "h": quote}
    raw = {"evidence": ["its smallest element is always the root"]}
    q = _question()
    answers.source_checked(q, {**raw, "sources": ["library/heapq.html"]}, texts)
    # the expected page and its reST source count; the same words in another page do not
    assert [r["relevant"] for r in q["retrieved"]] == [False, True, True]
    assert q["hit"] == 1.0 and q["rr"] == 0.5
    assert [c["supports"] for c in q["citations"]] == [False, True]
    assert q["citation_precision"] == 0.5
    assert q["ndcg"] is None and q["citation_recall"] is None

    assert answers.rest_source("library/heapq.html") == "_sources/library/heapq.rst.txt"

    # a miss when no chunk of the page (or of its source) holds it
    q = _question()
    answers.source_checked(
        q, {**raw, "sources": ["library/heapq.html"]}, {**texts, "h": "x", "r": "x"}
    )
    assert q["hit"] == 0.0 and q["rr"] == 0.0 and q["citation_precision"] == 0.0

    # a passage judged to answer it counts, from its own page
    q = _question()
    judged = [{"source": "whatsnew/3.2.html", "quote": "always the root"}]
    answers.source_checked(
        q,
        {**raw, "sources": ["library/heapq.html"], "judged": judged},
        {**texts, "h": "x", "r": "x"},
    )
    assert q["rr"] == 1.0 and q["citation_precision"] == 0.5

    # unanswerable questions are left as run_eval scored them
    q = _question(answerable=False, evidence=[])
    answers.source_checked(q, {}, texts)
    assert q["hit"] == 1.0 and q["retrieved"][0]["relevant"] is True


def test_the_table_counts_refusals_of_each_kind(answers: ModuleType) -> None:
    def scored(answerable: bool, refused: bool, ms: float) -> dict[str, Any]:
        return {
            "answerable": answerable,
            "refused": refused,
            "hit": 1.0 if answerable else None,
            "rr": 0.5 if answerable else None,
            "ndcg": None,
            "evidence_recall": None,
            "context_chars": 100,
            "key_match": (not refused) if answerable else None,
            "token_f1": None,
            "citation_precision": None if refused or not answerable else 1.0,
            "citation_recall": None,
            "timings_ms": {"total": ms, "retrieve": ms / 2, "answer": ms / 2},
        }

    questions = [
        scored(True, False, 100),
        scored(True, True, 200),
        scored(True, False, 300),
        scored(False, True, 400),
        scored(False, False, 500),
    ]
    row = answers.table_row("set", questions)
    assert row["questions"] == "3 + 2"
    assert row["refused (unans.)"] == "1/2"
    assert row["false refusals"] == "1/3"
    assert row["key-fact acc"] == pytest.approx(2 / 3)
    assert row["hit@5"] == 1.0 and row["MRR@10"] == 0.5
    assert row["p50 ms"] == 300
