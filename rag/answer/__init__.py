"""Hits → an Answer whose every sentence cites its passage, or a plain refusal.

With no LLM configured the answer is extractive (see `extractive`). The result always
carries its citations with the supporting span (`quote`) and the passages it came from.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from ..config import Mode
from ..types import Answer, Citation, Hit
from .extractive import Candidate, extract

if TYPE_CHECKING:
    from ..pipeline import Rag

REFUSAL = "The documents do not say."

__all__ = ["REFUSAL", "answer_question", "answer_stream", "compose", "refusal"]


def answer_question(
    rag: Rag, question: str, *, k: int | None = None, mode: Mode | None = None
) -> Answer:
    """Answer `question` from the index. Never raises for a question the documents miss."""
    answer: Answer | None = None
    for piece in answer_stream(rag, question, k=k, mode=mode):
        if isinstance(piece, Answer):
            answer = piece
    assert answer is not None
    return answer


def answer_stream(
    rag: Rag, question: str, *, k: int | None = None, mode: Mode | None = None
) -> Iterator[str | Answer]:
    """Yield the answer's text as it is produced, then the whole Answer last."""
    settings = rag.settings.answer
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    hits = rag.search(question, k=max(k or rag.settings.retrieve.k, 1), mode=mode)
    timings["retrieve"] = time.perf_counter() - t0
    t1 = time.perf_counter()
    answer = extractive_answer(question, hits, rag.embedder.embed, settings.min_evidence,
                               settings.max_sentences)  # fmt: skip
    timings["answer"] = time.perf_counter() - t1
    answer.timings = timings
    yield answer.answer
    yield answer


def extractive_answer(
    question: str,
    hits: Sequence[Hit],
    embed: Any,
    min_evidence: float,
    max_sentences: int = 3,
) -> Answer:
    """The extractive answer, or a refusal when the evidence is below `min_evidence`."""
    ex = extract(question, hits, embed, max_sentences=max_sentences)
    if not ex.chosen or ex.evidence < min_evidence:
        return refusal(question, hits, mode="extractive")
    text, citations = compose(ex.chosen)
    return Answer(question, text, False, citations, "extractive", hits=list(hits))


def compose(chosen: Sequence[Candidate]) -> tuple[str, list[Citation]]:
    """Quote each sentence followed by its [n]; n numbers passages in order of first use."""
    citations: dict[str, Citation] = {}
    parts: list[str] = []
    for c in chosen:
        cid = c.hit.chunk.id
        if cid not in citations:
            citations[cid] = Citation(n=len(citations) + 1, hit=c.hit, quote=c.text)
        else:
            citations[cid].quote += " … " + c.text
        parts.append(f"{c.text} [{citations[cid].n}]")
    return " ".join(parts), list(citations.values())


def refusal(question: str, hits: Sequence[Hit], mode: str = "extractive") -> Answer:
    return Answer(question, REFUSAL, True, [], mode, hits=list(hits))
