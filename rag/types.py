"""The plain data that flows between pipeline stages."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class Document:
    """One loaded file: its text plus where its pages and headings start in that text."""

    source: str  # path as given/resolved; the key of everything indexed from this file
    text: str
    title: str
    sha256: str  # of the file's bytes and the loader version (loaders.fingerprint)
    pages: tuple[tuple[int, int], ...] = ()  # (start_char, page number) for PDFs
    headings: tuple[tuple[int, str], ...] = ()  # (start_char, heading text), in order


@dataclass(frozen=True)
class Chunk:
    id: str
    source: str
    text: str
    start_char: int  # offsets of `text` in the Document's text: text == doc.text[start:end]
    end_char: int
    title: str = ""
    heading: str = ""
    page: int | None = None
    position: int = 0  # order of this chunk within its document

    def context(self) -> str:
        """Title and heading, prefixed to the text that is embedded and keyword-indexed."""
        parts = [p for p in (self.title, self.heading) if p]
        if len(parts) == 2 and parts[1].casefold() == parts[0].casefold():
            parts = parts[:1]
        return " — ".join(parts)

    def embedding_text(self) -> str:
        """What is embedded for this chunk: its context line, then its text."""
        ctx = self.context()
        return f"{ctx}\n{self.text}" if ctx else self.text


@dataclass(frozen=True)
class Hit:
    chunk: Chunk
    # the score that ranked it: cosine for dense, BM25 for keyword; for hybrid the fused
    # score, or the reranker's 0–1 relevance when the cross-encoder reordered the list
    score: float
    rank: int
    dense: float | None = None  # cosine similarity of query and chunk, when known
    keyword: float | None = None  # BM25 score, when the chunk was in the keyword list
    fused: float | None = None  # hybrid: the fused dense + keyword score (before reranking)
    rerank: float | None = None  # the cross-encoder's logit for its best window, if reranked
    also_in: tuple[str, ...] = ()  # sources of near-duplicate passages folded into this one

    def to_json(self) -> dict[str, Any]:
        c = self.chunk
        return {
            "rank": self.rank,
            "chunk_id": c.id,
            "source": c.source,
            "text": c.text,
            "score": round(float(self.score), 6),
            "page": c.page,
            "start_char": c.start_char,
            "end_char": c.end_char,
            "title": c.title,
            "heading": c.heading,
            "dense": None if self.dense is None else round(float(self.dense), 6),
            "keyword": None if self.keyword is None else round(float(self.keyword), 6),
            "fused": None if self.fused is None else round(float(self.fused), 6),
            "rerank": None if self.rerank is None else round(float(self.rerank), 4),
            "also_in": list(self.also_in),
        }


@dataclass
class Citation:
    n: int  # the [n] used in the answer, 1-based, in order of first use
    hit: Hit
    quote: str = ""  # the span of the passage that supports the cited sentence(s)
    supported: bool = True

    def to_json(self) -> dict[str, Any]:
        c = self.hit.chunk
        return {
            "n": self.n,
            "chunk_id": c.id,
            "source": c.source,
            "text": c.text,
            "score": round(float(self.hit.score), 6),
            "page": c.page,
            "start_char": c.start_char,
            "end_char": c.end_char,
            "supported": self.supported,
            "quote": self.quote,
        }


@dataclass
class Answer:
    question: str
    answer: str
    refused: bool
    citations: list[Citation]
    mode: str  # "extractive" | "llm"
    hits: list[Hit] = field(default_factory=list)  # the passages the answer was drawn from
    warnings: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    standalone_question: str | None = None  # set when a follow-up was rewritten
    searched: list[str] | None = None  # answered only from these documents (None: all)
    # how strongly the chosen sentences answer: similarity and word overlap (extractive.py),
    # and the cross-encoder's logit when it judged them; None: nothing was chosen / judged
    evidence: float | None = None
    judged: float | None = None
    # an LLM's answer: the extractive answer that was shown first (and that a fallback shows)
    extractive: Answer | None = None
    # with an LLM: the relevance model's logits for (the model's answer, the quoted answer)
    picked: tuple[float, float] | None = None
    # the LLM's hypothetical answer the passages were also searched for (expand.py)
    hypothesis: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "question": self.question,
            "answer": self.answer,
            "refused": self.refused,
            "citations": [c.to_json() for c in self.citations],
            "mode": self.mode,
            "warnings": list(self.warnings),
            "timings": {k: round(v, 4) for k, v in self.timings.items()},
        }
        if self.refused:
            out["closest"] = [h.to_json() for h in self.hits[:3]]
        if self.standalone_question:
            out["standalone_question"] = self.standalone_question
        if self.searched is not None:
            out["searched"] = list(self.searched)
        if self.evidence is not None:
            out["evidence"] = round(self.evidence, 3)
        if self.judged is not None:
            out["judged"] = round(self.judged, 3)
        if self.picked is not None:
            w, q = self.picked
            out["picked"] = {"written": round(w, 3), "quoted": round(q, 3)}
        if self.hypothesis:
            out["hypothesis"] = self.hypothesis
        if self.extractive is not None:
            x = self.extractive
            out["extractive"] = {"answer": x.answer, "refused": x.refused,
                                 "citations": [c.to_json() for c in x.citations]}  # fmt: skip
        return out


@dataclass(frozen=True)
class Draft:
    """The quick extractive answer, streamed before an LLM's: shown while the model writes,
    replaced by its (verified) answer. The stream still ends with the final Answer."""

    answer: Answer


@dataclass(frozen=True)
class Skipped:
    source: str
    reason: str


@dataclass
class IngestReport:
    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    unsupported: list[str] = field(default_factory=list)
    skipped_before: list[str] = field(default_factory=list)  # of `skipped`: unchanged since
    excluded: list[str] = field(default_factory=list)  # deleted by the user, left out
    # Sphinx `_sources/` copies of pages indexed as HTML, left out (LoadSettings.source_copies)
    copies: list[str] = field(default_factory=list)
    chunks_added: int = 0  # embedded by this ingest
    chunks_reused: int = 0  # written with vectors the index already held for the same text
    chunks_repaired: int = 0  # re-embedded from the catalog: their vectors had gone missing
    chunks_recovered: int = 0  # catalog rows rebuilt from Chroma: the catalog had gone missing
    chunks_removed: int = 0
    chunks_total: int = 0
    documents_total: int = 0
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)
