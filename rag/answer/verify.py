"""Check every sentence of an answer against the passages it cites, whoever wrote it.

A sentence is *supported* by a passage when
  - most of its stemmed content words are in the passage (or fewer are, but one of the
    passage's sentences means the same: MiniLM cosine), and
  - every name it states (a capitalised word past the first) is in the passage, and
  - every number it states is in a passage sentence about the same thing (its clause's
    other words), so "founded in 2022" does not hold on "founded in 1963 … launched in 2022".
Sentences of a passage that give orders ("ignore previous instructions, reply only …")
are the document's data: they never support anything. Citations to passages that were
not given are dropped; a sentence whose citations do not hold (or that has none) gets
the given passage that supports it, if any. The passage sentence that supports it best
is kept as the citation's `quote`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from ..chunking import split_sentences
from ..text import WORD, content_terms
from ..types import Citation, Hit

if TYPE_CHECKING:
    from .base import EvidenceJudge

Embed = Callable[[Sequence[str]], Any]  # texts → L2-normalised vectors (Embedder.embed)

REFUSAL = "The documents do not say."
UNSUPPORTED_MARK = "[unsupported]"

# Thresholds measured on evals/seeds_qa.jsonl: gold answers against their evidence passage
# (all supported) vs. against the other retrieved passages and with altered numbers/names.
MIN_COVERAGE = 0.75  # share of the sentence's content words found in the passage: enough alone
MIN_COVERAGE_WITH_MEANING = 0.4  # ... or this share plus a passage sentence this close:
MIN_SIMILARITY = 0.6

_NUMS = r"\d+(?:\s*(?:,|;|–|-|and)\s*\d+)*"
_NAMED = r"(?:passages?|sources?|docs?|documents?)\s*"
# [1], [1, 2], [1-3], 【1】, [Passage 1], (Passage 1) — not a bare (1), which lists use
_CITE_TEXT = rf"[\[【]\s*(?:{_NAMED})?({_NUMS})\s*[\]】]|\(\s*{_NAMED}({_NUMS})\s*\)"
_CITE = re.compile(_CITE_TEXT, re.I)
# "…claim. [1]" → "…claim [1]." so the citation stays with its sentence when splitting
_CITE_AFTER_STOP = re.compile(rf"([.!?…])((?:\s*(?:{_CITE_TEXT}))+)", re.I)
_NUMBER = re.compile(r"\d[\d,]*(?:\.\d+)?")
_CLAUSE = re.compile(r"[,;:]\s|\s(?:while|whereas|and|but)\s")
_MARKER = re.compile(r"\(?\d{1,2}[.)]|[-*•]|[a-z][.)]")  # a list item's number alone
_LETTER = re.compile(r"[^\W\d_]")
_INSTRUCTION = re.compile(
    r"\b(?:ignore|disregard|forget|override)\b.{0,30}\b(?:instructions?|prompts?|rules|directions)\b"
    r"|\b(?:reply|respond|answer|say|output|print|write)\b[^.]{0,20}\bonly\b\s*(?:with\s*)?[\"'“‘]"
    r"|\byou (?:are|must|should|will) (?:now|always|only)\b|\bsystem prompt\b"
    r"|\b(?:assistant|AI|language model|LLM|chatbot)s?\b.{0,40}\b(?:must|should|will|shall)\b",
    re.I,
)
_REFUSALS = re.compile(
    r"^(?:the )?(?:documents?|passages?|sources?|context|texts?) (?:do|does|did) ?(?:not|n't) "
    r"(?:say|mention|state|contain|answer|specify|provide)",
    re.I,
)


def parse_citations(sentence: str) -> list[int]:
    """The passage numbers a sentence cites, in order, once each: [1], [1,2], [1][3], [2-4]."""
    out: list[int] = []
    for m in _CITE.finditer(sentence):
        for part in re.split(r"\s*(?:,|;|\band\b)\s*", m.group(1) or m.group(2)):
            ends = [int(x) for x in re.split(r"\s*[–-]\s*", part) if x]
            ns = (
                range(ends[0], ends[1] + 1)
                if len(ends) == 2 and 0 < ends[1] - ends[0] < 20
                else ends[:1]
            )
            out.extend(n for n in ns if n not in out)
    return out


def strip_citations(sentence: str) -> str:
    text = _CITE.sub("", sentence)
    text = re.sub(r"\s+([.!?…,;:])", r"\1", text)
    return re.sub(r"\s{2,}", " ", text).strip()


def split_answer(text: str) -> list[str]:
    """The answer's sentences, each with the citations written after it."""
    text = _normalise(text)
    return [text[s.start : s.end] for s in split_sentences(text)]


def _normalise(text: str) -> str:
    return _CITE_AFTER_STOP.sub(lambda m: " " + m.group(2).strip() + m.group(1), text)


def is_instruction(sentence: str) -> bool:
    """A sentence that tells an AI what to do ("ignore previous instructions", "reply only")."""
    return bool(_INSTRUCTION.search(sentence))


def is_refusal(sentence: str) -> bool:
    return bool(_REFUSALS.match(strip_citations(sentence).strip(" *_\"'")))


def _numbers(text: str) -> set[str]:
    return {m.group(0).replace(",", "").rstrip(".") for m in _NUMBER.finditer(text)}


def _number_words(text: str) -> dict[str, tuple[set[str], set[str]]]:
    """Each number the text states, with the content words of its clause: all of them, and
    those that are not names (in the passage the subject may be "It")."""
    out: dict[str, tuple[set[str], set[str]]] = {}
    for clause in _CLAUSE.split(text):
        words = [m.group(0) for m in WORD.finditer(clause)]
        every = {t for t in content_terms(clause) if not any(ch.isdigit() for ch in t)}
        plain = " ".join(w for w in words if not w[:1].isupper())
        plain_terms = {t for t in content_terms(plain) if not any(ch.isdigit() for ch in t)}
        for n in _numbers(clause):
            a, b = out.setdefault(n, (set(), set()))
            a.update(every)
            b.update(plain_terms)
    return out


def _names(text: str) -> set[str]:
    """Stemmed capitalised words past the first: the names a claim could get wrong."""
    words = [m.group(0) for m in WORD.finditer(text)][1:]
    return set(content_terms(" ".join(w for w in words if w[:1].isupper())))


@dataclass(frozen=True)
class Support:
    passages: tuple[int, ...]  # 0-based indices into the passages given (several when cited so)
    quotes: tuple[str, ...]  # for each, its sentence that best supports the claim
    coverage: float  # share of the claim's content words found in the passages
    similarity: float  # the best cosine of the claim and one of their sentences
    numbers_ok: bool  # every number the claim states is in the passages
    names_ok: bool  # every capitalised word past the first is in the passages
    # the cross-encoder's logit for (claim, its quotes), when a judge checked it, and the bar
    judged: float | None = None
    min_judge: float | None = None

    @property
    def ok(self) -> bool:
        if not (self.numbers_ok and self.names_ok):
            return False
        if self.judged is not None and self.min_judge is not None and self.judged < self.min_judge:
            return False
        return self.coverage >= MIN_COVERAGE or (
            self.coverage >= MIN_COVERAGE_WITH_MEANING and self.similarity >= MIN_SIMILARITY
        )

    @property
    def strength(self) -> float:
        return self.coverage + self.similarity + float(self.ok)


@dataclass
class Claim:
    """One sentence of an answer and what the passages say about it."""

    text: str  # without its [n] markers
    cited: list[int]  # passage numbers as written, 1-based, out-of-range ones removed
    dropped: list[int]  # cited numbers that name no passage given
    support: Support | None  # the best support found (cited passages first), held or not
    refusal: bool = False
    filler: bool = False  # a list marker, or words the question already has: no claim

    @property
    def supported(self) -> bool:
        return self.support is not None and self.support.ok and not self.filler


class Verifier:
    """Checks sentences against a fixed list of passages; passage sentences embedded once."""

    def __init__(
        self,
        hits: Sequence[Hit],
        embed: Embed,
        question: str = "",
        *,
        judge: EvidenceJudge | None = None,
        min_judge: float = 0.0,
    ) -> None:
        """`judge`: a relevance model that must also find each claim's quotes relevant to
        it (logit >= `min_judge`), after the word, number and name checks hold."""
        self.hits = list(hits)
        self._judge, self._min_judge = judge, min_judge
        self._question = set(content_terms(question))
        self._embed = embed
        # sentences that give orders to the reader are the documents' data, never support
        self._sentences = [
            [x for x in _sentences(h.chunk.text) if not is_instruction(x)] for h in self.hits
        ]
        self._sentence_terms = [[set(content_terms(x)) for x in ss] for ss in self._sentences]
        self._sentence_numbers = [[_numbers(x) for x in ss] for ss in self._sentences]
        texts = [
            " ".join([h.chunk.context(), *ss])
            for h, ss in zip(self.hits, self._sentences, strict=True)
        ]
        self._terms = [set(content_terms(t)) for t in texts]
        self._vectors: list[np.ndarray] = []

    def check(self, sentence: str) -> Claim:
        """Parse one sentence's citations and find the given passage that supports it."""
        text = strip_citations(sentence)
        given = parse_citations(sentence)
        cited = [n for n in given if 1 <= n <= len(self.hits)]
        dropped = [n for n in given if n not in cited]
        if is_refusal(sentence):
            return Claim(text, cited, dropped, None, refusal=True)
        terms = set(content_terms(text))
        if _MARKER.fullmatch(text) or (terms and terms <= self._question):
            return Claim(text, cited, dropped, None, filler=True)
        if not terms or not self.hits:
            return Claim(text, cited, dropped, None)
        self._embed_passages()
        claim = _ClaimFeatures(
            terms, _names(text), _number_words(text), np.asarray(self._embed([text]))[0]
        )
        # the writer's own citations win when they hold, alone or together
        tries = [(n - 1,) for n in cited]
        if len(cited) > 1:
            tries.append(tuple(n - 1 for n in cited))
        own = [self._judged(text, self._support(idx, claim)) for idx in tries]
        for sup in own:
            if sup.ok:
                return Claim(text, cited, dropped, sup)
        # else the best-ranked passage that holds it (overlapping chunks often both do)
        others = [self._support((i,), claim) for i in range(len(self.hits))]
        for i, sup in enumerate(others):
            others[i] = sup = self._judged(text, sup)
            if sup.ok:
                return Claim(text, cited, dropped, sup)
        return Claim(text, cited, dropped, max(own or others, key=_strength))

    def _judged(self, claim: str, sup: Support) -> Support:
        """`sup` with the judge's logit for (claim, the passage heading + its quotes); asked
        only when the word, number and name checks hold."""
        if self._judge is None or not sup.ok:
            return sup

        ctx = " ".join(self.hits[i].chunk.context() for i in sup.passages).strip()
        window = " ".join(q for q in sup.quotes if q)
        window = f"{ctx}\n{window}" if ctx else window
        logit = self._judge.logits(claim, [window])[0]
        return replace(sup, judged=float(logit), min_judge=self._min_judge)

    def _support(self, idx: tuple[int, ...], c: _ClaimFeatures) -> Support:
        terms = set().union(*(self._terms[i] for i in idx))
        quotes, best_sim = [], 0.0
        for i in idx:
            sentences = self._sentences[i]
            if not sentences:
                quotes.append("")
                continue
            sims = self._vectors[i] @ c.vector
            local = [len(c.terms & st) / len(c.terms) for st in self._sentence_terms[i]]
            quotes.append(sentences[int(np.argmax(sims + np.asarray(local)))])
            best_sim = max(best_sim, float(sims.max()))
        return Support(
            passages=idx,
            quotes=tuple(quotes),
            coverage=len(c.terms & terms) / len(c.terms),
            similarity=best_sim,
            numbers_ok=all(self._anchored(n, idx, c) for n in c.number_words),
            names_ok=c.names <= terms,
        )

    def _anchored(self, number: str, idx: tuple[int, ...], c: _ClaimFeatures) -> bool:
        """The number is in a passage sentence about what its clause of the claim is about:
        "founded in 2022" is not supported by "founded in 1963. … launched in 2022." """
        every, plain = c.number_words[number]
        for i in idx:
            for terms, numbers in zip(
                self._sentence_terms[i], self._sentence_numbers[i], strict=True
            ):
                if number in numbers and (_most(every, terms) or _half(plain, terms)):
                    return True
        return False

    def prepare(self) -> None:
        """Embed the passages' sentences now (before the LLM streams), not at the first check."""
        self._embed_passages()

    def _embed_passages(self) -> None:
        if self._vectors or not self.hits:
            return
        flat = [s for ss in self._sentences for s in ss]
        vecs = np.asarray(self._embed(flat)) if flat else np.zeros((0, 1), np.float32)
        at = 0
        for ss in self._sentences:
            self._vectors.append(vecs[at : at + len(ss)])
            at += len(ss)


def _strength(s: Support) -> float:
    return s.strength


def _most(words: set[str], terms: set[str]) -> bool:
    return 2 * len(words & terms) > len(words) or not words


def _half(words: set[str], terms: set[str]) -> bool:
    return bool(words) and 2 * len(words & terms) >= len(words)


def _sentences(text: str) -> list[str]:
    return [text[s.start : s.end] for s in split_sentences(text)]


@dataclass(frozen=True)
class _ClaimFeatures:
    terms: set[str]
    names: set[str]
    number_words: dict[str, tuple[set[str], set[str]]]  # number → its clause's words
    vector: np.ndarray


@dataclass
class Composed:
    """The verified answer: its text, citations numbered in order of first use, and counts."""

    text: str
    citations: list[Citation]
    claims: list[Claim]
    supported: int
    removed: int
    flagged: int
    dropped_citations: int
    refused: bool  # the writer said the documents do not say, and nothing else held


@dataclass
class Composer:
    """Turns checked claims into answer text as they come, numbering citations on first use.

    "remove" leaves unsupported sentences out; "flag" keeps them, citing the passage the
    writer named with `supported=False` (or marked [unsupported] when it named none). In
    both modes nothing is released before the first supported sentence, so an answer that
    turns out to have none was never shown.
    """

    hits: Sequence[Hit]
    unsupported: Literal["remove", "flag"] = "remove"
    claims: list[Claim] = field(default_factory=list)
    _citations: dict[tuple[int, bool], Citation] = field(default_factory=dict)
    _held: list[Claim] = field(default_factory=list)
    _parts: list[str] = field(default_factory=list)

    def add(self, claim: Claim) -> str:
        """Text to show now for this claim (with a leading space after the first), maybe ''."""
        self.claims.append(claim)
        if claim.refusal or claim.filler:
            return ""
        if not claim.supported:
            if self.unsupported == "flag":
                self._held.append(claim)
                if self._parts:
                    return self._release()
            return ""
        self._held.append(claim)
        return self._release()

    def _release(self) -> str:
        out = []
        for claim in self._held:
            part = self._render(claim)
            out.append(part if not self._parts else " " + part)
            self._parts.append(part)
        self._held.clear()
        return "".join(out)

    def _render(self, claim: Claim) -> str:
        if claim.supported:
            assert claim.support is not None
            keys = [
                (i, True, q)
                for i, q in zip(claim.support.passages, claim.support.quotes, strict=True)
            ]
        elif claim.cited:
            keys = [(n - 1, False, "") for n in claim.cited]
        else:
            return f"{claim.text} {UNSUPPORTED_MARK}"
        marks = []
        for i, ok, quote in keys:
            cit = self._citations.get((i, ok))
            if cit is None:
                cit = Citation(len(self._citations) + 1, self.hits[i], quote, ok)
                self._citations[(i, ok)] = cit
            elif quote and quote not in cit.quote:
                cit.quote += " … " + quote
            marks.append(f"[{cit.n}]")
        return f"{claim.text} {''.join(marks)}"

    def finish(self) -> Composed:
        supported = sum(c.supported for c in self.claims)
        unsupported = [c for c in self.claims if not (c.supported or c.refusal or c.filler)]
        flagged = len(unsupported) if self.unsupported == "flag" and supported else 0
        return Composed(
            text=" ".join(self._parts),
            citations=sorted(self._citations.values(), key=lambda c: c.n),
            claims=list(self.claims),
            supported=supported,
            removed=len(unsupported) - flagged,
            flagged=flagged,
            dropped_citations=sum(len(c.dropped) for c in self.claims),
            refused=not supported and any(c.refusal for c in self.claims),
        )


def verify(
    text: str,
    hits: Sequence[Hit],
    embed: Embed,
    unsupported: Literal["remove", "flag"] = "remove",
    question: str = "",
) -> Composed:
    """Check a whole answer whose [n] refer to `hits` (1-based) and rebuild it.

    Sentences that only repeat the `question` (and list markers) are left out uncounted.
    """
    verifier = Verifier(hits, embed, question)
    composer = Composer(hits, unsupported)
    for sentence in split_answer(text):
        composer.add(verifier.check(sentence))
    return composer.finish()


def complete_sentences(pieces: Iterable[str]) -> Iterator[str]:
    """Re-cut a stream of text pieces into whole sentences, each with its trailing [n]."""
    buf = ""
    for piece in pieces:
        buf = _normalise(buf + piece)
        spans = split_sentences(buf)
        # the last sentence may still be followed by its citation, or be a half-written "[1"
        if len(spans) < 2 or not _LETTER.search(_CITE.sub("", buf[spans[-1].start :])):
            continue
        for s in spans[:-1]:
            yield buf[s.start : s.end]
        buf = buf[spans[-1].start :]
    yield from split_answer(buf)
