"""Fusion by hand-computed values; retrieval modes on the seeds index."""

from __future__ import annotations

import pytest

from rag.errors import UsageError
from rag.pipeline import Rag
from rag.retrieve import rrf, score_fusion, with_neighbours


def test_rrf_hand_computed() -> None:
    fused = rrf([["a", "b"], ["b", "c"]], k=60)
    assert fused["a"] == pytest.approx(1 / 61)
    assert fused["b"] == pytest.approx(1 / 62 + 1 / 61)
    assert fused["c"] == pytest.approx(1 / 62)


def test_score_fusion_hand_computed() -> None:
    dense = [("a", 0.9), ("b", 0.5), ("c", 0.1)]
    keyword = [("b", 12.0), ("d", 2.0)]
    fused = score_fusion(dense, keyword, alpha=0.5)
    # dense min-max: a 1, b 0.5, c 0; keyword: b 1, d 0
    assert fused == pytest.approx({"a": 0.5, "b": 0.75, "c": 0.0, "d": 0.0})
    assert score_fusion([], [("x", 3.0)]) == {"x": 0.5}  # a single value normalises to 1


def test_neighbours_hand_computed() -> None:
    scores = {"a1": 0.8, "a2": 0.4, "a3": 0.2, "b1": 0.5, "x": 0.1}
    where = {"a1": ("a", 1), "a2": ("a", 2), "a3": ("a", 3), "b1": ("b", 2)}  # x: unknown
    out = with_neighbours(scores, where, weight=0.5)
    assert out == pytest.approx(
        {
            "a1": 0.8 + 0.5 * (0.0 + 0.4) / 2,  # no chunk 0 among the candidates
            "a2": 0.4 + 0.5 * (0.8 + 0.2) / 2,
            "a3": 0.2 + 0.5 * (0.4 + 0.0) / 2,
            "b1": 0.5,  # position 2 of another document: a's chunks are not its neighbours
            "x": 0.1,
        }
    )
    assert with_neighbours(scores, where, 0.0) == scores


def test_hybrid_search_adds_neighbour_evidence(seeds_rag: Rag) -> None:
    q = "What council does Draudt-Véjares want Korea and the U.S. to form?"
    index, s = seeds_rag.index, seeds_rag.settings.retrieve
    assert s.neighbours > 0
    dense = index.dense(seeds_rag.embedder.embed([q])[0], s.candidates)
    fused = score_fusion(dense, index.keyword(q, s.candidates), s.alpha)
    expected = with_neighbours(fused, index.positions(list(fused)), s.neighbours)
    hits = seeds_rag.search(q, k=5, rerank=0)  # the fused order, before the cross-encoder
    assert [h.score for h in hits] == pytest.approx(sorted(expected.values(), reverse=True)[:5])
    assert [h.chunk.id for h in hits] == sorted(expected, key=lambda i: (-expected[i], i))[:5]


def test_a_hit_only_one_list_finds_is_not_buried() -> None:
    """RRF ranks a both-lists item above a clear dense winner; score fusion does not."""
    dense = [("win", 0.95)] + [(f"d{i}", 0.30 - i * 0.01) for i in range(10)] + [("both", 0.2)]
    keyword = [(f"k{i}", 5.0 - i * 0.1) for i in range(5)] + [("both", 4.0)]
    by_rrf = rrf([[i for i, _ in dense], [i for i, _ in keyword]])
    by_score = score_fusion(dense, keyword)
    assert by_score["win"] > by_score["both"]
    assert by_rrf["both"] > by_rrf["win"]


@pytest.mark.parametrize("mode", ["dense", "keyword", "hybrid"])
def test_modes_rank_and_score(seeds_rag: Rag, mode: str) -> None:
    hits = seeds_rag.search("Mutual Defense Treaty 1953", k=4, mode=mode)  # type: ignore[arg-type]
    assert [h.rank for h in hits] == [1, 2, 3, 4]
    assert "1953 Mutual Defense Treaty" in hits[0].chunk.text
    scores = [h.score for h in hits]
    assert scores == sorted(scores, reverse=True)
    # every hit carries its cosine similarity, keyword-only ones too (from stored vectors)
    assert all(h.dense is not None and -1 <= h.dense <= 1 for h in hits)


def test_hybrid_keeps_a_passage_only_dense_finds(seeds_rag: Rag) -> None:
    """ "Tokyo promise Washington" shares no word with "Japan pledged … the United States":
    BM25 misses it, dense ranks it first, and hybrid must not bury it (RRF put it 9th)."""
    q = "How much money did Tokyo promise Washington?"
    assert "Japan pledged" in seeds_rag.search(q, k=1, mode="dense")[0].chunk.text
    # 3rd by fused scores, 4th once neighbours count (chunks beside the others match too)
    assert any("Japan pledged" in h.chunk.text for h in seeds_rag.search(q, k=5, rerank=0))


def test_bad_arguments(seeds_rag: Rag) -> None:
    with pytest.raises(UsageError, match="unknown mode"):
        seeds_rag.search("x", mode="fuzzy")  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="empty"):
        seeds_rag.search("   ")
