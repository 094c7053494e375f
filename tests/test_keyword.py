"""The keyword index: our BM25 build scores exactly as bm25s's own, and the catalog's term
cache means an ingest tokenizes only the chunks it added."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import bm25s
import numpy as np
import pytest

from rag import keyword
from rag.pipeline import Rag
from rag.store import CATALOG
from rag.text import stemmer

from .conftest import SEEDS, settings_for


def _passages() -> list[str]:
    text = "\n\n".join(p.read_text() for p in sorted(SEEDS.iterdir()) if p.is_file())
    return [p for p in text.split("\n\n") if p.strip()]


def test_build_scores_exactly_as_bm25s() -> None:
    corpus = [*_passages(), "", "the and of"]  # an empty one and one of stop words only
    theirs = bm25s.BM25()
    theirs.index(
        bm25s.tokenize(corpus, stopwords="en", stemmer=stemmer(), show_progress=False),
        show_progress=False,
    )
    ours = keyword.build(keyword.terms(corpus))
    assert ours.scores["num_docs"] == theirs.scores["num_docs"] == len(corpus)
    for part in ("data", "indices", "indptr"):
        assert ours.scores[part].dtype == theirs.scores[part].dtype, part
    assert set(ours.vocab_dict) == set(theirs.vocab_dict)
    for term in sorted(theirs.vocab_dict)[1::7]:  # every 7th term's scores over all passages
        if term:
            np.testing.assert_array_equal(
                ours.get_scores_from_ids([ours.vocab_dict[term]]),
                theirs.get_scores_from_ids([theirs.vocab_dict[term]]),
            )
    for q in ("tariffs on Korean cars", "semiconductor exports", "Japan pledged billion"):
        qt = [[t for t in keyword.query_terms(q) if t in ours.vocab_dict]]
        a_docs, a_scores = ours.retrieve(qt, k=10, show_progress=False, n_threads=1)
        b_docs, b_scores = theirs.retrieve(qt, k=10, show_progress=False, n_threads=1)
        assert a_scores[0][0] > 0
        np.testing.assert_array_equal(a_docs, b_docs)
        np.testing.assert_array_equal(a_scores, b_scores)  # bit for bit


def test_build_survives_save_and_load(tmp_path: Path) -> None:
    corpus = _passages()
    ours = keyword.build(keyword.terms(corpus))
    ours.save(str(tmp_path / "bm25"))
    loaded = bm25s.BM25.load(str(tmp_path / "bm25"), mmap=False)
    qt = [[t for t in keyword.query_terms("Korean car tariffs") if t in ours.vocab_dict]]
    a = ours.retrieve(qt, k=5, show_progress=False, n_threads=1)
    b = loaded.retrieve(qt, k=5, show_progress=False, n_threads=1)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])


def _ids(rag: Rag, name: str) -> list[str]:
    q = "SELECT id FROM chunks WHERE source LIKE ? ORDER BY position"
    return [r[0] for r in rag.index._db.execute(q, (f"%{name}",))]


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many texts each call of `keyword.terms` tokenized."""
    calls: list[int] = []
    real = keyword.terms

    def counting(texts: list[str]) -> list[str]:
        calls.append(len(texts))
        return real(texts)

    monkeypatch.setattr(keyword, "terms", counting)
    return calls


def test_an_ingest_tokenizes_only_new_chunks(
    tmp_path: Path, corpus: Path, counted: list[int]
) -> None:
    rag = Rag(settings_for(tmp_path / "idx"))
    rag.ingest([corpus])
    first = rag.index.count_chunks()
    assert sum(counted) == first > 0
    before = rag.index.keyword("bicycle stations Ghent", 5)
    (corpus / "gamma.txt").write_text("Gamma is a ferry line on the Douro with 4 boats.\n")
    counted.clear()
    rag.ingest([corpus])
    assert sum(counted) == rag.index.count_chunks() - first == 1  # only gamma's chunk
    assert rag.index.keyword("ferry Douro boats", 5)[0][0] in _ids(rag, "gamma.txt")
    # the cached terms give what tokenizing everything again gives
    fresh = Rag(settings_for(tmp_path / "idx"))
    fresh.index._db.execute("DELETE FROM meta WHERE key = 'keyword_format'")  # cache unused
    counted.clear()
    fresh.index.rebuild_keyword_index(save=False)
    assert sum(counted) == fresh.index.count_chunks()
    for q in ("bicycle stations Ghent", "ferry Douro boats", "solar water pumps"):
        assert fresh.index.keyword(q, 5) == rag.index.keyword(q, 5)
    assert [i for i, _ in before] == [i for i, _ in rag.index.keyword("bicycle stations Ghent", 5)]


def test_the_cache_follows_the_catalog(tmp_path: Path, corpus: Path, counted: list[int]) -> None:
    rag = Rag(settings_for(tmp_path / "idx"))
    rag.ingest([corpus])
    db = sqlite3.connect(tmp_path / "idx" / CATALOG)
    n = db.execute("SELECT COUNT(*) FROM keyword_terms").fetchone()[0]
    assert n == rag.index.count_chunks()
    # a chunk whose text changed under the same id (by hand, a new loader) is tokenized again
    cid = _ids(rag, "beta.txt")[0]
    db.execute("UPDATE chunks SET text = 'Beta now runs trams in Ghent.' WHERE id = ?", (cid,))
    db.commit()
    counted.clear()
    rag.index.rebuild_keyword_index()
    assert counted == [1]
    assert rag.index.keyword("trams", 5)[0][0] == cid
    # and so is one replaced by INSERT OR REPLACE (the delete trigger fires for it too)
    row = rag.index._db.execute("SELECT * FROM chunks WHERE id = ?", (cid,)).fetchone()
    row = (*row[:3], "Beta now runs ferries in Ghent.", *row[4:])
    rag.index._db.execute("INSERT OR REPLACE INTO chunks VALUES (?,?,?,?,?,?,?,?,?)", row)
    counted.clear()
    rag.index.rebuild_keyword_index()
    assert counted == [1]
    assert rag.index.keyword("ferries", 5)[0][0] == cid
    # deleted chunks take their cached terms with them
    rag.delete([s for s in rag.files() if s.endswith("beta.txt")])
    ids = {r[0] for r in db.execute("SELECT id FROM keyword_terms")}
    assert cid not in ids and len(ids) == rag.index.count_chunks()
    # the vocabulary ids stay dense and unique, as build_from_ids needs
    vocab = db.execute("SELECT COUNT(*), MIN(id), MAX(id) FROM keyword_vocab").fetchone()
    assert vocab[0] > 10 and vocab[1:] == (0, vocab[0] - 1)


def test_a_cache_of_another_tokenizer_or_damaged_is_made_again(
    tmp_path: Path, corpus: Path, counted: list[int], caplog: pytest.LogCaptureFixture
) -> None:
    rag = Rag(settings_for(tmp_path / "idx"))
    rag.ingest([corpus])
    n = rag.index.count_chunks()
    want = rag.index.keyword("bicycle stations Ghent", 5)
    db = rag.index._db
    # made by another bm25s or PyStemmer (they may stem otherwise): every chunk again
    db.execute(
        "UPDATE meta SET value = '1; bm25s 0.3.0; PyStemmer 2.2' WHERE key = 'keyword_format'"
    )
    counted.clear()
    rag.index.rebuild_keyword_index()
    assert sum(counted) == n
    assert db.execute("SELECT value FROM meta WHERE key = 'keyword_format'").fetchone()[0] == (
        keyword.fingerprint()
    )
    assert db.execute("SELECT COUNT(*) FROM keyword_terms").fetchone()[0] == n
    counted.clear()
    rag.index.rebuild_keyword_index()
    assert counted in ([], [0])  # and then it is used
    # a damaged entry (not whole ids; an id past the vocabulary): found, made again
    for bad in (b"\x01\x02\x03", np.array([10**6], "<i4").tobytes()):
        db.execute("UPDATE keyword_terms SET terms = ? WHERE rowid = 1", (bad,))
        counted.clear()
        caplog.clear()
        rag.index.rebuild_keyword_index()
        assert sum(counted) == n and "keyword term cache is inconsistent" in caplog.text
        assert rag.index.keyword("bicycle stations Ghent", 5) == want
