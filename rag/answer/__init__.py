"""Hits → an Answer whose every sentence cites its passage, or a plain refusal.

With no LLM configured the answer is extractive (see `extractive`). With one (an
OpenAI-compatible `llm_url`, or a GGUF file that llama-server is started for), the LLM
writes the answer from the numbered passages, and every sentence it writes is checked
against them (see `verify`) before it is shown; unsupported sentences are removed (or
flagged). When the evidence is weak the LLM is not asked at all; when it fails or writes
nothing the passages support, the extractive answer is shown with a warning. A follow-up
question is first made standalone (see `conversation`). The result always carries its
citations with the supporting span (`quote`) and the passages it came from.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Generator, Iterable, Iterator, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np

from ..config import AnswerSettings, Mode
from ..errors import LLMError, UsageError
from ..types import Answer, Citation, Hit
from .conversation import condense
from .extractive import Candidate, extract
from .verify import REFUSAL, Composer, Verifier, complete_sentences

if TYPE_CHECKING:
    from ..pipeline import Rag
    from .llm import LLM

__all__ = [
    "REFUSAL",
    "answer_question",
    "answer_stream",
    "compose",
    "condense",
    "extractive_answer",
    "refusal",
]

Turns = Sequence[tuple[str, str]] | Sequence[dict[str, str]]  # (q, a) pairs or chat messages


def answer_question(
    rag: Rag,
    question: str,
    *,
    k: int | None = None,
    mode: Mode | None = None,
    history: Turns | None = None,
    llm: LLM | None = None,
) -> Answer:
    """Answer `question` from the index. Never raises for a question the documents miss,
    nor for an LLM that fails (the extractive answer is given, with a warning)."""
    answer: Answer | None = None
    for piece in answer_stream(rag, question, k=k, mode=mode, history=history, llm=llm):
        if isinstance(piece, Answer):
            answer = piece
    assert answer is not None
    return answer


def answer_stream(
    rag: Rag,
    question: str,
    *,
    k: int | None = None,
    mode: Mode | None = None,
    history: Turns | None = None,
    llm: LLM | None = None,
) -> Iterator[str | Answer]:
    """Yield the answer's text as it is produced (verified sentences), then the whole Answer.

    `history` holds the earlier turns, oldest first, as (question, answer) pairs or as chat
    messages ({"role", "content"}); `llm` overrides the LLM the settings configure.
    """
    settings = rag.settings.answer
    timings: dict[str, float] = {}
    with _llm_for(settings, llm) as (client, warnings):
        standalone = question
        turns = _pairs(history or [])
        if turns:
            t = time.perf_counter()
            standalone = condense(turns, question, client)
            timings["condense"] = time.perf_counter() - t
        t0 = time.perf_counter()
        k = max(k or rag.settings.retrieve.k, 1)
        hits = rag.search(standalone, k=k, mode=mode, rerank=settings.rerank)
        timings["retrieve"] = time.perf_counter() - t0
        t1 = time.perf_counter()
        embed = _Memo(rag.embedder.embed)  # the verifier re-reads the sentences extract() read
        fallback = extractive_answer(standalone, hits, embed, settings.min_evidence,
                                     settings.max_sentences)  # fmt: skip
        timings["answer"] = time.perf_counter() - t1
        # weak evidence: refuse without asking the LLM (it would answer from its own memory)
        if client is None or fallback.refused:
            answer = fallback
            if client is not None:
                answer.mode = "llm"
            yield answer.answer
        else:
            answer = yield from _llm_answer(client, standalone, hits, fallback, embed, settings,
                                            timings)  # fmt: skip
    answer.question = question
    answer.standalone_question = standalone if standalone != question else None
    answer.warnings[:0] = warnings
    answer.timings = {**timings, **answer.timings}
    yield answer


def _llm_answer(
    llm: LLM,
    question: str,
    hits: Sequence[Hit],
    fallback: Answer,
    embed: Any,
    settings: AnswerSettings,
    timings: dict[str, float],
) -> Generator[str, None, Answer]:
    """Stream the LLM's verified sentences; return the Answer (or the fallback)."""
    from .llm import build_messages

    verifier = Verifier(hits, embed, question)
    verifier.prepare()  # so that sentences are checked as fast as they come
    composer = Composer(hits, settings.unsupported)
    messages = build_messages(question, hits, settings.max_sentences)
    warnings: list[str] = []
    shown = False
    t0 = time.perf_counter()
    tokens = _Timed(llm.stream(messages, max_tokens=100 * settings.max_sentences + 100), t0)
    sentences = complete_sentences(tokens)
    try:
        for sentence in sentences:
            piece = composer.add(verifier.check(sentence))
            if piece:
                shown = True
                yield piece
            if _enough(composer, settings.max_sentences):
                break
    except LLMError as e:
        if not shown:
            timings["llm"] = time.perf_counter() - t0
            return (yield from _fallen_back(fallback, f"{e}; showing the extractive answer"))
        warnings.append(f"{e} mid-answer; the answer may be incomplete")
    finally:
        sentences.close()
        tokens.close()
    timings["llm"] = time.perf_counter() - t0
    if tokens.first is not None:
        timings["llm_first_token"] = tokens.first
    result = composer.finish()
    if result.refused:
        yield REFUSAL
        return refusal(question, hits, mode="llm")
    if not result.supported:
        return (yield from _fallen_back(
            fallback, "the LLM's answer had no sentence the passages support; "
            "showing the extractive answer",
        ))  # fmt: skip
    if result.removed:
        warnings.append(f"removed {_sentences(result.removed)} that the passages do not support")
    if result.flagged:
        warnings.append(f"{_sentences(result.flagged)} not supported by the passages "
                        "(marked [unsupported] or cited as not supported)")  # fmt: skip
    if result.dropped_citations:
        warnings.append(f"dropped {result.dropped_citations} citation(s) to passages that "
                        "were not given")  # fmt: skip
    return Answer(question, result.text, False, result.citations, "llm", hits=list(hits),
                  warnings=warnings)  # fmt: skip


def _fallen_back(fallback: Answer, warning: str) -> Generator[str, None, Answer]:
    """Show the extractive answer instead, saying why."""
    yield fallback.answer
    return replace(fallback, warnings=[*fallback.warnings, warning])


def _enough(composer: Composer, max_sentences: int) -> bool:
    """Stop reading once the answer is full, or the writer keeps writing what is not there."""
    supported = sum(c.supported for c in composer.claims)
    return supported >= max_sentences or len(composer.claims) >= 3 * max_sentences


def _sentences(n: int) -> str:
    return f"{n} sentence{'s' if n != 1 else ''}"


class _Memo:
    """An embed function that embeds each distinct text once."""

    def __init__(self, embed: Any) -> None:
        self._embed = embed
        self._vectors: dict[str, np.ndarray] = {}

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        new = [t for t in dict.fromkeys(texts) if t not in self._vectors]
        if new:
            self._vectors.update(zip(new, np.asarray(self._embed(new)), strict=True))
        if not texts:
            return np.asarray(self._embed([]))
        return np.stack([self._vectors[t] for t in texts])


class _Timed:
    """Passes the LLM's pieces through, noting when the first one came."""

    def __init__(self, pieces: Iterator[str], t0: float) -> None:
        self._pieces, self._t0 = pieces, t0
        self.first: float | None = None

    def __iter__(self) -> Iterator[str]:
        for piece in self._pieces:
            if self.first is None:
                self.first = time.perf_counter() - self._t0
            yield piece

    def close(self) -> None:
        close = getattr(self._pieces, "close", None)
        if close is not None:
            close()


@contextlib.contextmanager
def _llm_for(settings: AnswerSettings, llm: LLM | None) -> Iterator[tuple[LLM | None, list[str]]]:
    """The LLM to answer with (None: extractive) and warnings about getting it."""
    from .llm import LLM, serving

    if llm is not None or not (settings.llm_url or settings.llm_gguf):
        yield llm, []
        return
    with contextlib.ExitStack() as stack:
        try:
            served = stack.enter_context(serving(settings))  # starts llama-server for a GGUF
        except (LLMError, UsageError) as e:
            yield None, [f"{e}; showing the extractive answer"]
            return
        yield LLM.from_settings(served), []


def _pairs(history: Iterable[Any]) -> list[tuple[str, str]]:
    """(question, answer) turns from pairs or from chat messages."""
    turns: list[tuple[str, str]] = []
    for item in history:
        if isinstance(item, dict):
            role, content = item.get("role"), str(item.get("content") or "")
            if role == "user":
                turns.append((content, ""))
            elif role == "assistant" and turns and not turns[-1][1]:
                turns[-1] = (turns[-1][0], content)
        else:
            q, a = item
            turns.append((str(q), str(a)))
    return turns


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
