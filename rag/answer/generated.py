"""The LLM answerer: a chat model writes the answer, and every sentence is verified.

The extractive answer is made first. When it refuses (the evidence is weak) the model is not
asked: it would answer from its own memory. Otherwise the model writes from the numbered
passages, each sentence is checked against the passage it cites (see `verify`) before it is
shown, and unsupported sentences are removed (or flagged). When the model fails, is down or
writes nothing the passages support, the extractive answer is shown with a warning.

With a GGUF file instead of an endpoint, this answerer starts llama-server on first use and
stops it in `close()`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Generator, Iterator, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from ..config import AnswerSettings
from ..errors import LLMError, UsageError
from ..types import Answer, Draft, Hit
from .base import Embed, EvidenceJudge, refusal
from .extractive import Extract, ExtractiveAnswerer, excerpts
from .llm import LLM, build_messages, serving
from .verify import REFUSAL, Composer, Verifier, complete_sentences, strip_citations


class LLMAnswerer:
    name = "llm"

    def __init__(
        self,
        settings: AnswerSettings,
        embed: Embed,
        judge: EvidenceJudge | None = None,
        *,
        llm: LLM | None = None,
    ) -> None:
        """`llm`: the model to use; by default the one `settings` names (`llm_url`, or
        `llm_gguf`, for which llama-server is started when first needed)."""
        self.settings = settings
        self.embed = embed
        self.extractive = ExtractiveAnswerer(settings, embed, judge)
        self.relevance = judge  # the cross-encoder: it picks the model's or the quoted answer
        self._llm = llm
        self._serving: Any = None  # the context of a llama-server this answerer started
        self._owns_llm = False  # True when `_llm` talks to that server (reset by close())
        self._problem: str | None = None  # why the model cannot be had, once known
        self._lock = threading.Lock()

    @property
    def llm(self) -> LLM | None:
        """The model; None (and `problem` says why) when its server cannot be started."""
        with self._lock:
            if self._llm is None and self._problem is None:
                try:
                    self._llm = self._connect()
                except (LLMError, UsageError) as e:
                    self._problem = f"{e}; showing the extractive answer"
            return self._llm

    @property
    def problem(self) -> str | None:
        """Why the model could not be had (after `llm` returned None), else None."""
        return self._problem

    def _connect(self) -> LLM | None:
        served = self.settings
        if served.llm_gguf and not served.llm_url:
            self._serving = serving(served)
            served = self._serving.__enter__()  # starts llama-server; close() stops it
            self._owns_llm = True
        return LLM.from_settings(served)

    def close(self) -> None:
        with self._lock:
            if self._serving is not None:
                self._serving.__exit__(None, None, None)
            self._serving = None
            if self._owns_llm:
                self._llm = None  # its server is gone: start another if asked again
            self._owns_llm = False
            self._problem = None  # a start that failed is tried again when next asked

    def stream(self, question: str, hits: Sequence[Hit]) -> Iterator[str | Draft | Answer]:
        llm = self.llm
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        embed = _Memo(self.embed)  # the verifier re-reads the sentences the extractor read
        fallback, ex = self.extractive.answer_and_extract(question, hits, embed=embed)
        timings["answer"] = time.perf_counter() - t0
        if llm is None:
            problem = [self._problem] if self._problem else []
            answer = replace(fallback, warnings=[*fallback.warnings, *problem])
        elif fallback.refused:
            answer = replace(fallback, mode="llm")  # weak evidence: the model is not asked
        else:
            # the model reads each passage's best sentences: a prompt a third as long, and
            # on 2 cores the first token comes that much sooner
            shown = excerpts(hits, ex, self.settings.passage_words)
            draft = drafted(ex, hits) if self.settings.draft else None
            yield Draft(fallback)
            answer = yield from _written(llm, question, hits, shown, draft, fallback, embed,
                                         self.extractive.judge, self.settings,
                                         timings)  # fmt: skip
            answer = _chosen(answer, fallback)
            if self.settings.pick and self.relevance is not None:
                answer = _picked(self.relevance, question, answer, fallback)
            answer.timings = {**timings, **answer.timings}
            yield answer
            return
        answer.timings = timings
        yield answer.answer
        yield answer


def _written(
    llm: LLM,
    question: str,
    hits: Sequence[Hit],
    texts: Sequence[str],
    draft: str | None,
    fallback: Answer,
    embed: Embed,
    judge: EvidenceJudge | None,
    settings: AnswerSettings,
    timings: dict[str, float],
) -> Generator[str, None, Answer]:
    """Stream the LLM's verified sentences; return the Answer (or the fallback)."""
    # with the judge on, the cross-encoder must also find each claim's quotes relevant
    verifier = Verifier(hits, embed, question, judge=judge, min_judge=settings.min_judge)
    verifier.prepare()  # so that sentences are checked as fast as they come
    composer = Composer(hits, settings.unsupported)
    messages = build_messages(question, hits, settings.max_sentences, texts, draft)
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
        return replace(refusal(question, hits, mode="llm"), extractive=fallback)
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
                  warnings=warnings, evidence=fallback.evidence, judged=fallback.judged,
                  extractive=fallback)  # fmt: skip


def drafted(ex: Extract, hits: Sequence[Hit]) -> str:
    """The quoted answer as the model is shown it: each chosen sentence followed by the [n]
    of its passage in the prompt (the quoted answer itself numbers passages by first use)."""
    n = {hit.chunk.id: i for i, hit in enumerate(hits, start=1)}
    return " ".join(f"{c.text} [{n[c.hit.chunk.id]}]" for c in ex.chosen)


def _chosen(written: Answer, quoted: Answer) -> Answer:
    """A refusal by the model gives way to the quoted answer, which is only there when its
    evidence passed the calibrated bar: on the seeds questions the 1.5B model refused 15
    answerable questions that way (key accuracy 0.524 -> 0.833), no unanswerable one."""
    if written.mode == "llm" and written.refused and not quoted.refused:
        note = "the model found no answer in the passages; showing the quoted answer"
        return replace(quoted, warnings=[*quoted.warnings, note])
    return written


def _picked(relevance: EvidenceJudge, question: str, written: Answer, quoted: Answer) -> Answer:
    """The model's answer, unless the relevance model finds the quoted one closer to the
    question: both are verified, and a small model often writes a true sentence that does
    not answer. Off by default (AnswerSettings.pick): docs/evaluation.md#llm."""
    if written.mode != "llm" or written.refused or quoted.refused:
        return written
    w, q = relevance.logits(question, [strip_citations(written.answer),
                                       strip_citations(quoted.answer)])  # fmt: skip
    written.picked = (w, q)
    if w >= q:
        return written
    note = (f"kept the quoted answer: the relevance model found it closer to the question "
            f"than the model's ({q:.1f} vs {w:.1f})")  # fmt: skip
    return replace(quoted, warnings=[*quoted.warnings, note], picked=(w, q))


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

    def __init__(self, embed: Embed) -> None:
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
