"""Query → ranked Hits: dense (Chroma), keyword (BM25), or both fused (scores or ranks),
the best fused candidates then reordered by a cross-encoder (rerank.py)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import numpy as np

from .config import MODES, Mode, RetrieveSettings
from .dedup import collapse
from .embeddings import Embedder
from .errors import StoreError, UsageError
from .expand import expanded
from .rerank import Reranker, relevance
from .store import Index
from .types import Chunk, Hit

log = logging.getLogger(__name__)

MAX_RERANK = 200  # candidates the cross-encoder reads at most in one search (~11 s)


def score_fusion(
    dense: list[tuple[str, float]], keyword: list[tuple[str, float]], alpha: float = 0.5
) -> dict[str, float]:
    """alpha × min-max-normalised cosine + (1 − alpha) × min-max-normalised BM25.

    Unlike RRF it keeps how much better the best hit of a list is than the rest, so a chunk
    only one retriever finds is not buried (measured in bench/: MRR 0.85 vs 0.80 on seeds).
    """
    dn, kn = _minmax(dense), _minmax(keyword)
    return {i: alpha * dn.get(i, 0.0) + (1 - alpha) * kn.get(i, 0.0) for i in {*dn, *kn}}


def _minmax(pairs: list[tuple[str, float]]) -> dict[str, float]:
    if not pairs:
        return {}
    values = [v for _, v in pairs]
    lo, hi = min(values), max(values)
    return {i: (v - lo) / (hi - lo) if hi > lo else 1.0 for i, v in pairs}


def with_neighbours(
    scores: dict[str, float], where: dict[str, tuple[str, int]], weight: float
) -> dict[str, float]:
    """Each chunk's score plus `weight` × the mean score of the chunks just before and after
    it in its document (0 for a neighbour that is not a candidate).

    Measured (bench/, docs/benchmarks.md): weight 0.3 raised hybrid MRR@10 on all three
    question sets, by about one question each.
    """
    at = {where[i]: v for i, v in scores.items() if i in where}
    out = {}
    for i, v in scores.items():
        if i in where:
            source, pos = where[i]
            v += weight * (at.get((source, pos - 1), 0.0) + at.get((source, pos + 1), 0.0)) / 2
        out[i] = v
    return out


def rrf(lists: list[list[str]], k: int = 60) -> dict[str, float]:
    """Reciprocal rank fusion: each list adds 1 / (k + rank) to the items it ranks (rank from 1)."""
    scores: dict[str, float] = {}
    for ranking in lists:
        for rank, item in enumerate(ranking, start=1):
            scores[item] = scores.get(item, 0.0) + 1.0 / (k + rank)
    return scores


class Retriever:
    def __init__(
        self,
        index: Index,
        embedder: Embedder,
        settings: RetrieveSettings,
        reranker: Callable[[], Reranker] | None = None,
    ) -> None:
        """`reranker`: returns the cross-encoder, loaded on first use (None: never rerank)."""
        self.index = index
        self.embedder = embedder
        self.settings = settings
        self._reranker = reranker

    def embed_query(self, query: str) -> np.ndarray:
        return self.embedder.embed([self.embedder.query_prefix + query])[0]

    def search(
        self,
        query: str,
        k: int | None = None,
        mode: Mode | None = None,
        rerank: int | None = None,
        sources: Sequence[str] | None = None,
        hypothesis: str | None = None,
    ) -> list[Hit]:
        """The k best chunks for `query`, best first. In hybrid mode the best max(rerank, k)
        fused candidates are reordered by the cross-encoder (`rerank` 0: not at all).
        `sources`: search only these documents (None: all). `hypothesis`: a passage an LLM
        wrote as the answer (expand.py): the embedder and BM25 search for it too."""
        k = k or self.settings.k
        mode = mode or self.settings.mode
        rerank = self.settings.rerank if rerank is None else rerank
        if mode not in MODES:
            raise UsageError(f"unknown mode {mode!r}: use one of {', '.join(MODES)}")
        if k < 1:
            raise UsageError("k must be at least 1")
        if rerank < 0:
            raise UsageError("rerank must be 0 (off) or more")
        if not query.strip():
            raise UsageError("the question is empty: type a question")
        depth = max(self.settings.candidates, k)
        first = expanded(query, hypothesis)  # what the first stage searches for
        dense: list[tuple[str, float]] = []
        keyword: list[tuple[str, float]] = []
        qvec = None
        if mode in ("dense", "hybrid"):
            qvec = self.embed_query(first)
            try:
                dense = self.index.dense(qvec, depth, sources)
            except StoreError as e:
                if mode == "dense":
                    raise
                # unreadable vectors (a full disk, a damaged folder): keywords still answer
                log.warning("vector search failed, answering by keyword only: %s", e)
                dense = []
        if mode in ("keyword", "hybrid"):
            keyword = self.index.keyword(first, depth, sources)
        dense_of = dict(dense)
        keyword_of = dict(keyword)
        fused_of: dict[str, float] = {}
        rerank_of: dict[str, float] = {}
        chunks: dict[str, Chunk] = {}  # read from the catalog once, by the reranker or below
        also: dict[str, list[str]] = {}
        if mode in ("dense", "keyword"):
            ranked = dense if mode == "dense" else keyword
            ranked, also = self._distinct(ranked, 2 * k + 5, chunks)
            ranked = ranked[:k]
        else:
            if self.settings.fusion == "rrf":
                fused = rrf([[i for i, _ in dense], [i for i, _ in keyword]], self.settings.rrf_k)
            else:
                fused = score_fusion(dense, keyword, self.settings.alpha)
            if self.settings.neighbours:
                where = self.index.positions(list(fused))
                fused = with_neighbours(fused, where, self.settings.neighbours)
            fused_of = fused
            ranked = sorted(fused.items(), key=lambda kv: (-kv[1], kv[0]))
            pool = min(max(rerank, k), MAX_RERANK) + max(k, 10)
            ranked, also = self._distinct(ranked, pool, chunks)
            if rerank and ranked and self._reranker is not None:
                # every hit returned is reranked, up to MAX_RERANK (~55 ms each); past that
                # (`search -k 1000`) the rest follow in fused order, with rerank None
                depth = min(max(rerank, k), MAX_RERANK)
                rerank_of = self._rerank(query, [i for i, _ in ranked[:depth]], chunks)
                head = sorted(
                    ((i, relevance(rerank_of[i])) for i in rerank_of),
                    key=lambda kv: (-rerank_of[kv[0]], -fused[kv[0]], kv[0]),
                )
                ranked = head + ranked[depth:]
            ranked = ranked[:k]
        unread = [i for i, _ in ranked if i not in chunks]
        if unread:
            chunks.update(self.index.chunks(unread))
        missing_dense = [i for i, _ in ranked if i not in dense_of and i in chunks]
        if missing_dense:
            # the answerer weighs evidence by similarity: give keyword-only hits theirs too
            qvec = self.embed_query(first) if qvec is None else qvec
            try:
                vecs = self.index.vectors(missing_dense)  # stored at ingest: no re-embedding
            except StoreError as e:
                log.warning("stored vectors unreadable: %s", e)
                vecs = {}
            dense_of.update({i: float(v @ qvec) for i, v in vecs.items()})
        hits = []
        for i, score in ranked:
            if i not in chunks:
                continue
            hits.append(
                Hit(
                    chunk=chunks[i],
                    score=float(score),
                    rank=len(hits) + 1,
                    dense=dense_of.get(i),
                    keyword=keyword_of.get(i),
                    fused=fused_of.get(i),
                    rerank=rerank_of.get(i),
                    also_in=tuple(also.get(i, ())),
                )
            )
        return hits

    def _distinct(
        self, ranked: list[tuple[str, float]], pool: int, chunks: dict[str, Chunk]
    ) -> tuple[list[tuple[str, float]], dict[str, list[str]]]:
        """The best `pool` of `ranked` (read into `chunks`) with near-duplicate passages
        folded into one (dedup.py), then the rest of `ranked` as it was."""
        head = [i for i, _ in ranked[:pool]]
        chunks.update(self.index.chunks(head))
        score = dict(ranked[:pool])
        groups = collapse(head, chunks)
        also = {g.kept: list(g.also_in) for g in groups if g.also_in}
        return [(g.kept, score[g.first]) for g in groups] + ranked[pool:], also

    def _rerank(self, query: str, ids: list[str], chunks: dict[str, Chunk]) -> dict[str, float]:
        """The cross-encoder's logit for each candidate still in the catalog (a chunk
        deleted since the fused lists were read is dropped, as in the fused path)."""
        assert self._reranker is not None
        present = [i for i in ids if i in chunks]
        logits = self._reranker().score(query, [chunks[i] for i in present])
        return {i: float(v) for i, v in zip(present, logits, strict=True)}
