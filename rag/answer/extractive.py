"""The extractive answerer: 1–3 sentences quoted from the top passages, each with its [n].

Faithful by construction (every word is the documents'), so its work is choosing well:
sentences are scored by embedding similarity to the question, IDF-weighted overlap with
the question's content words, and the rank of their passage. A sentence must contain the
*kind* of fact the question asks for (a number, a date, a day, a percentage, a name) or it
cannot answer it, and a sentence about another subject than the one asked about answers
nothing. A further sentence is added when it covers words of the question the first did
not, or answers a part of a two-part question. Every rule here was measured by turning it
off on question sets it was not written against (docs/evaluation.md#rules); those that
gained nothing there were deleted.
"""

from __future__ import annotations

import itertools
import math
import re
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from ..chunking import split_sentences
from ..config import AnswerSettings
from ..text import QUESTION_WORDS, STOPWORDS, WORD, content_terms
from ..types import Answer, Citation, Hit
from .base import Embed, EvidenceJudge, refusal

_NUMBER = re.compile(
    r"(?<![\w.])(?:[$€£¥]\s?)?\d[\d,.]*(?:\s?(?:%|percent|billion|million|trillion))?"
)
_NUMBER_WORDS = re.compile(
    r"\b(?:one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|twenty|thirty|forty|"
    r"fifty|hundred|dozen|half|double|twice)\b",  # "million" alone is a unit, not a figure
    re.I,
)
_MONTHS = (
    r"(?:January|February|March|April|May|June|July|August|September|October|November|December|"
    r"Jan|Feb|Mar|Apr|Jun|Jul|Aug|Sep|Sept|Oct|Nov|Dec)\.?"
)
_YEAR = re.compile(r"\b(?:1[5-9]\d\d|20\d\d)s?\b")
_DAY = re.compile(rf"\b{_MONTHS}\s\d{{1,2}}\b(?!\d)|\b\d{{1,2}}\s{_MONTHS}\b")
_MONTH = re.compile(rf"\b{_MONTHS}\b")
_PERCENT = re.compile(r"\d\s?(?:%|percent\b|per cent\b)", re.I)
_CAPS = re.compile(r"\b[A-Z][\w’'.-]*(?:\s+(?:of|de|von|van|al|bin|la|the)?\s*[A-Z][\w’'.-]*)*")
# words that make a capitalised phrase an institution, event, law or place, not a person
_NOT_PERSON = frozenset(
    """
    war treaty act agreement university institute foundation council union states
    republic kingdom ministry department center centre bank fund partnership strategy
    regulation dialogue summit organization organisation association committee
    commission house office court party alliance company corporation group school
    college academy program programme system initiative forum north south east west new
    """.split()  # noqa: SIM905
)
_PERSON_NOUNS = (
    r"president|prime minister|minister|ambassador|ceo|chairman|chair|secretary|king|queen|"
    r"author|founder|spokes\w*|official|professor|person|man|woman|leader|governor|mayor|"
    r"director|head|chief|expert|economist|researcher"
)


_AUX_WORDS = frozenset(
    """is are was were do does did has have had will would can could should shall may might
    must need ought""".split()  # noqa: SIM905
)
_AUXILIARY = "(?:" + "|".join(sorted(_AUX_WORDS)) + ")"


@dataclass(frozen=True)
class Expect:
    """What kind of fact the question asks for."""

    kind: str  # "number" | "percent" | "date" | "day" | "person" | "name" | ""

    def satisfied(self, sentence: str, question: str) -> bool:
        if not self.kind:
            return True
        if self.kind == "percent":
            return bool(_new(_PERCENT, sentence, question))
        if self.kind == "number":
            return bool(_amounts(sentence, question) or _new(_NUMBER_WORDS, sentence, question))
        if self.kind == "day":
            return bool(_new(_DAY, sentence, question))
        if self.kind == "date":
            return bool(
                _new(_YEAR, sentence, question)
                or _new(_DAY, sentence, question)
                or _new(_MONTH, sentence, question)
            )
        names = _names(sentence, question)
        if self.kind == "person":
            return any(_person_like(n) for n in names)
        return bool(names)  # "name": any proper name the question does not already have


def expected(question: str) -> Expect:
    q = question.lower()
    if re.search(r"\b(what|which) (?:exact |specific )?(?:day|date)\b|\bexact (?:day|date)\b", q):
        return Expect("day")
    if re.search(
        r"\bwhat (?:[\w-]+ )?(?:percentage|percent|share|proportion|rate)\b|\bhow many percent", q
    ):
        return Expect("percent")
    if re.search(r"\bhow (?:many|much)\b|\bwhat (?:amount|number|sum|figure)\b"
                 r"|\bhow (?:big|large)\b"
                 r"|\bin (?:yen|dollars|won|euros)\b", q):  # fmt: skip
        return Expect("number")
    # "When did/was…" asks for a date; "when check is true", "when does X run" ask a condition
    if re.search(r"^\s*when\b(?!\s+(?:is|are|does|do)\b)|\bwhen (?:did|was|were|will|had|has)\b"
                 r"|\b(?:what|which) (?:years?|month)\b|\bsince when\b", q):  # fmt: skip
        return Expect("date")
    if re.search(  # "which French president…", not "what did President Macron sign…"
        rf"\b(?:which|what)(?: (?!{_AUXILIARY}\b)[\w.-]+)? (?:{_PERSON_NOUNS})\b"
        r"|\bname of\b|\bwho is the\b",
        q,
    ):
        return Expect("person")
    if re.search(r"^\s*(?:who|whom|whose)\b", q) or re.search(
        r"\b(?:which|what) (?:city|cities|country|countries|town|capital|venue|place|location)\b",
        q,
    ):
        return Expect("name")
    return Expect("")


def _new(pattern: re.Pattern[str], sentence: str, question: str) -> list[str]:
    """Matches in the sentence that the question does not already contain."""
    ql = question.lower()
    return [m.group(0) for m in pattern.finditer(sentence) if m.group(0).lower().strip() not in ql]


def _amounts(sentence: str, question: str) -> list[str]:
    """Figures in the sentence that the question does not contain, other than years ("in
    2023") and list markers ("1)"): neither says how much or how many."""
    ql = question.lower()
    out = []
    for m in _NUMBER.finditer(sentence):
        figure = m.group(0).strip().rstrip(",.")
        # "1)" opening an item of a list, not "n=2)" closing a signature
        marker = (
            re.fullmatch(r"\d{1,2}", figure)
            and sentence[m.end() : m.end() + 1] == ")"
            and (m.start() == 0 or sentence[m.start() - 1].isspace())
        )
        if figure.lower() in ql or _YEAR.fullmatch(figure) or marker:
            continue
        out.append(figure)
    return out


def _names(sentence: str, question: str) -> list[str]:
    qwords = {w.lower().strip(".’'") for w in WORD.findall(question)}
    out = []
    first = True
    for m in _CAPS.finditer(sentence):
        phrase = m.group(0).strip()
        words = [_bare(w) for w in phrase.split()]
        at_start = first and m.start() <= 1
        first = False
        if at_start and len(words) == 1:
            continue  # a capitalised first word is not a name
        if any(w in qwords for w in words):
            continue
        if len(words) == 1 and words[0] in STOPWORDS:
            continue
        out.append(phrase)
    return out


def _bare(word: str) -> str:
    """Lower case, without possessive 's and surrounding punctuation."""
    return re.sub(r"[’']s$", "", word).strip(".,’'\"“”()").lower()


def _person_like(phrase: str) -> bool:
    words = [_bare(w) for w in phrase.split()]
    caps = [w for w in phrase.split() if w[:1].isupper()]
    if len(caps) < 2 or any(w in _NOT_PERSON for w in words):
        return False
    return not any(_MONTH.fullmatch(w) for w in caps)


@dataclass
class Candidate:
    hit: Hit
    start: int  # offsets within the hit's chunk text
    end: int
    text: str
    terms: set[str]
    dense: float = 0.0
    overlap: float = 0.0
    score: float = 0.0
    judge: float | None = None  # the cross-encoder's logit for (question, sentence)
    typed: bool = True
    other: bool = False  # about another subject than the one asked about
    covers: set[str] = field(default_factory=set)

    def window(self) -> str:
        """What the judge reads: the passage's title/heading line, then the sentence."""
        ctx = self.hit.chunk.context()
        return f"{ctx}\n{self.text}" if ctx else self.text


@dataclass
class Extract:
    """The chosen sentences (in answer order), the evidence score, and all candidates."""

    chosen: list[Candidate]
    evidence: float
    expect: Expect
    candidates: list[Candidate]
    missing: str = ""  # the kind of fact asked for that no relevant sentence holds
    judged: float | None = None  # the judge's best logit over the chosen sentences


_REFERS_BACK = re.compile(r"^(?:They|It|She|He|This|These|Those|Its|Their|His|Her|Such)\b")
_CONTINUES = re.compile(
    r"^(?:This|That|These|Those|It|Its|Such|Therefore|Thus|Hence|Because|Consequently|"
    r"As a result|Adding|In other words|That is)\b"
)


def extract(
    question: str,
    hits: Sequence[Hit],
    embed: object,
    *,
    max_sentences: int = 3,
    passages: int = 5,
    judge: EvidenceJudge | None = None,
) -> Extract:
    """Choose the sentences that answer `question` from the first `passages` hits.

    `embed` maps a list of texts to L2-normalised vectors (an Embedder's `embed`); `judge`,
    when given, scores the chosen sentences (`Extract.judged`).
    """
    expect = expected(question)
    q_terms = content_terms(question)
    cands: list[Candidate] = []
    for hit in hits[:passages]:
        text = hit.chunk.text
        for span in split_sentences(text):
            s = text[span.start : span.end]
            if len(s.split()) < 4:
                continue
            cands.append(Candidate(hit, span.start, span.end, s, set(content_terms(s))))
    if not cands:
        return Extract([], 0.0, expect, [])

    # IDF over the candidate sentences: words every passage shares weigh little
    n = len(cands)
    weights = {}
    for t in set(q_terms):
        df = sum(1 for c in cands if t in c.terms)
        weights[t] = math.log((n + 1) / (df + 0.5)) + 0.1
    total_w = sum(weights.values()) or 1.0

    subject = question_subject(question)
    # a subject the passages never name (a capital city for its country) cannot be checked
    used = bool(subject) and any(
        subject.casefold() in h.chunk.text.casefold() for h in hits[:passages]
    )
    parts = question_parts(question)
    predicate = without_subjects(question)  # "…each suggest Italy rely on?" for two subjects
    asked = [*parts, *([predicate] if predicate else [])]
    vecs = np.asarray(embed([question, *asked, *(c.text for c in cands)]))  # type: ignore[operator]
    qv, sv = vecs[0], vecs[1 + len(asked) :]
    predicate_vec = vecs[len(asked)] if predicate else None
    part_vecs = vecs[1 : 1 + len(parts)]
    sims = sv @ qv
    for c, sim in zip(cands, sims, strict=True):
        c.dense = float(sim)
        c.covers = {t for t in weights if t in c.terms}
        c.overlap = sum(weights[t] for t in c.covers) / total_w
        c.other = _other_subject(c.text, subject, used)
        c.typed = expect.satisfied(c.text, question) and not c.other
        c.score = 0.6 * c.dense + 0.4 * c.overlap + 0.04 / c.hit.rank
    ranked = sorted(cands, key=lambda c: -c.score)
    # a sentence about someone else sets no bar: "Spain spent…" for "did Italy spend?"
    top = next((c for c in ranked if not c.other), ranked[0])
    # The sentence most about the question must hold the kind of fact asked for (a number,
    # a date, a name), or one nearly as relevant must: otherwise the documents discuss the
    # topic without giving that fact, and the answer is a refusal, not a nearby figure.
    best = next((c for c in ranked if c.typed and c.score >= 0.8 * top.score), None)
    if best is None:
        return Extract([], 0.0, expect, ranked, missing=expect.kind)
    chosen = [best]
    # "What did the mayor say…, and what does she want…?": the best sentence for each part
    per_part: list[Candidate] = []
    for part, vec in zip(parts, part_vecs, strict=True):
        part_score = _fit(part, vec, cands, sv, weights)
        top_part = max((c for c in cands if c.typed), key=lambda c: part_score[id(c)])
        if top_part.score >= 0.55 * best.score and not any(_similar(top_part, o) for o in per_part):
            per_part.append(top_part)
    if len(per_part) >= 2:
        chosen = per_part[:max_sentences]
    covered = set().union(*(c.covers for c in chosen))
    plural = _asks_for_several(question)
    if plural and _names_two_subjects(question) and len(chosen) < max_sentences:
        # "How do Smith and Jones each…": the best answer from another document too
        docs = {o.hit.chunk.source for o in chosen}
        others = [c for c in ranked if c.hit.chunk.source not in docs and c.typed]
        if predicate_vec is not None and others:
            # what is asked of the second subject, not who it is: "the interview" matches
            # the interviewee's biography; "which treaties" matches her answer
            fit = _fit(predicate, predicate_vec, cands, sv, weights)
            others.sort(key=lambda c: -fit[id(c)])
        other = others[0] if others else None
        if other is not None and other.score >= 0.6 * best.score:
            chosen.append(other)
            covered |= other.covers
    for c in ranked:
        if len(chosen) >= max_sentences or c.other or any(c is o for o in chosen):
            continue
        gain = sum(weights[t] for t in c.covers - covered) / total_w
        redundant = any(_similar(c, o) for o in chosen)
        if redundant or c.score < 0.55 * best.score:
            continue
        # a further sentence must add part of the question the first left out, be nearly as
        # good, or (for "which partners…", "each", "both") be a further answer from elsewhere
        other_passage = all(c.hit.chunk.id != o.hit.chunk.id for o in chosen)
        if (
            gain >= 0.15
            or c.score >= 0.92 * best.score
            or (plural and other_passage and c.typed and c.score >= 0.8 * best.score)
        ):
            chosen.append(c)
            covered |= c.covers
    why = bool(re.match(r"\s*(why|how come)\b", question, re.I))
    chosen = _with_continuations(chosen, cands, max_sentences, why=why)
    evidence = evidence_score(chosen)
    judged = None
    if judge is not None and chosen:
        # the trained relevance model reads what would be shown: only the chosen sentences
        for c, v in zip(chosen, judge.logits(question, [c.window() for c in chosen]), strict=True):
            c.judge = v
        judged = max(c.judge for c in chosen if c.judge is not None)
    return Extract(chosen, evidence, expect, ranked, judged=judged)


_WORDS = re.compile(r"[\w’'.$%-]+|[,;:?]")
_MAX_QUESTION = 600  # characters the question-shape rules look at


def _tokens(question: str) -> list[str]:
    return _WORDS.findall(question[:_MAX_QUESTION])


def question_parts(question: str) -> list[str]:
    """The questions inside a two-part question ("What did X say, and what does Y want?");
    [] for a single question. A part starts at ", and what…", ", but why…" or "; how…",
    never at a relative clause ("the ban, which started in 2020, …")."""
    q = question[:_MAX_QUESTION]
    cuts = [
        m.start()
        for m in re.finditer(r"(?:,\s*(?:and|but)|;\s*(?:and|but)?)\s+(?=[A-Za-z])", q)
        if q[m.end() :].split(maxsplit=1)[0].lower().strip(",?") in QUESTION_WORDS
    ]
    if not cuts:
        return []
    bounds = [0, *cuts, len(q)]
    parts = [q[a:b] for a, b in itertools.pairwise(bounds)]
    parts = [re.sub(r"^[,;]\s*(?:and|but)?\s*", "", p).strip(" ,;?") for p in parts]
    parts = [p for p in parts if len(p.split()) >= 3]
    first = parts[0].split(maxsplit=1)[0].lower() if parts else ""
    if len(parts) < 2 or (first not in QUESTION_WORDS and first not in _AUX_WORDS):
        return []  # "According to Kim, and …" is not two questions
    return parts


_ASKED_SUBJECT = re.compile(
    r"\b(?i:did|does|do|has|have|had|will|would|is|was|are|were|can|could|should)\s+"
    r"((?:[A-Z][\w.’'-]*\s+){0,2}[A-Z][\w.’'-]*)"
)
_LEADING_NAME = re.compile(r"^\s*((?:[A-Z][\w.’'-]*\s+){0,2}?[A-Z][\w.’'-]*)\s+[a-z]")


def question_subject(question: str) -> str:
    """The name the question asks about as its subject: "How much did Italy spend…" →
    "Italy"; "" when the subject is not a name ("What did the report say…")."""
    m = _ASKED_SUBJECT.search(question[:_MAX_QUESTION])
    return re.sub(r"[’']s$", "", m.group(1)) if m else ""  # "Was Italy's budget…" → Italy


def _other_subject(sentence: str, subject: str, used: bool) -> bool:
    """The sentence opens with another name and never mentions the asked subject ("Spain
    spent 2 billion…" for "How much did Italy spend?"): it answers for someone else."""
    if not subject or not used or subject.casefold() in sentence.casefold():
        return False
    m = _LEADING_NAME.match(sentence)
    return bool(m) and m.group(1).split()[0].casefold() not in STOPWORDS


def _fit(
    text: str,
    vec: np.ndarray,
    cands: Sequence[Candidate],
    sv: np.ndarray,
    weights: dict[str, float],
) -> dict[int, float]:
    """How well each candidate answers a part of the question (by id(candidate)), scored as
    the whole question is: 0.6 × cosine + 0.4 × the part's IDF-weighted words it holds."""
    terms = set(content_terms(text)) & set(weights)
    total = sum(weights[t] for t in terms) or 1.0
    return {
        id(c): 0.6 * float(v) + 0.4 * sum(weights[t] for t in c.covers & terms) / total
        for c, v in zip(cands, sv @ vec, strict=True)
    }


def _side(words: Iterable[str], most: int = 4) -> list[str]:
    """Up to `most` words next to a conjunction, stopping at punctuation or a verb-like
    word (an auxiliary or question word)."""
    out: list[str] = []
    for w in words:
        if w in {",", ";", ":", "?"} or w.lower() in _AUX_WORDS or w.lower() in QUESTION_WORDS:
            break
        out.append(w)
        if len(out) == most:
            break
    return out


def without_subjects(question: str) -> str:
    """The question without the two subjects of "X and Y each…" ("Which treaties do the
    report and the interview each cite…" → "Which treaties do each cite…"), or
    "" when it names no two subjects, or nothing but the subjects is left to match on.

    A subject is at most three words and never takes in the question word or the verb
    before it ("Which forums do Kim and Lee each…" keeps "Which forums do").
    """
    words = _tokens(question)
    lower = [w.lower() for w in words]
    for i, w in enumerate(lower):
        if w != "and" or "each" not in lower[i + 1 : i + 6]:
            continue
        j = lower.index("each", i + 1)
        left = _side(reversed(words[:i]), most=3)
        right = words[i + 1 : j]
        named = [p for p in (left, right) if any(w[:1].isupper() for w in p)]
        if len(named) < 2:  # "the benefits and drawbacks of each approach": no named subjects
            continue
        rest = words[: i - len(left)] + words[j:]
        text = " ".join(rest).replace(" ?", "?").replace(" ,", ",")
        return text if len(content_terms(text)) >= 2 else ""
    return ""


def _names_two_subjects(question: str) -> bool:
    """ "X and Y each…", "both X and Y", "the essay and the interview": two things asked about."""
    q = question.lower()
    return bool(re.search(r"\b(each|both)\b", q) or re.search(r"\w+ and (?:the )?\w+", q))


def _asks_for_several(question: str) -> bool:
    q = question.lower()
    return bool(
        re.search(r"\b(each|both|all|and)\b", q)
        or re.search(r"\b(which|what)\s+(?:[\w-]+\s+)?\w+s\b", q)
    )


def evidence_score(chosen: Sequence[Candidate]) -> float:
    """How strongly the chosen sentences answer: 0 (nothing) to ~1 (a close match)."""
    if not chosen:
        return 0.0
    best = max(chosen, key=lambda c: c.score)
    return 0.6 * best.dense + 0.4 * max(c.overlap for c in chosen)


def _similar(a: Candidate, b: Candidate) -> bool:
    if a.hit.chunk.id == b.hit.chunk.id and not (a.end <= b.start or b.end <= a.start):
        return True
    if a.text == b.text:
        return True
    inter = len(a.terms & b.terms)
    return inter / max(min(len(a.terms), len(b.terms)), 1) > 0.8


def _with_continuations(
    chosen: list[Candidate], cands: Sequence[Candidate], max_sentences: int, why: bool = False
) -> list[Candidate]:
    """Add the sentence before one that opens with "They…" (it says who), and the sentence
    after one that announces it (ends with ":"), continues its claim ("This is why…"), or,
    for a "why" question, gives the reason that usually follows a claim."""
    by_chunk: dict[str, list[Candidate]] = {}
    for c in cands:
        by_chunk.setdefault(c.hit.chunk.id, []).append(c)
    spare = max(0, max_sentences - len(chosen))
    out: list[Candidate] = []
    for c in chosen:
        siblings = sorted(by_chunk[c.hit.chunk.id], key=lambda x: x.start)
        i = siblings.index(c)
        before = siblings[i - 1] if i > 0 else None
        after = siblings[i + 1] if i + 1 < len(siblings) else None
        if spare and before and _REFERS_BACK.match(c.text) and before not in chosen + out:
            out.append(before)
            spare -= 1
        out.append(c)
        if (
            spare
            and after
            and after not in chosen + out
            and (why or c.text.rstrip().endswith(":") or _CONTINUES.match(after.text))
        ):
            out.append(after)
            spare -= 1
    # one passage's sentences read in document order
    return _reading_order(out)


def _reading_order(chosen: list[Candidate]) -> list[Candidate]:
    first_seen: dict[str, int] = {}
    for i, c in enumerate(chosen):
        first_seen.setdefault(c.hit.chunk.id, i)
    return sorted(chosen, key=lambda c: (first_seen[c.hit.chunk.id], c.start))


class ExtractiveAnswerer:
    """Quotes the sentences that answer, or refuses; needs no LLM."""

    name = "extractive"
    llm = None

    def __init__(
        self, settings: AnswerSettings, embed: Embed, judge: EvidenceJudge | None = None
    ) -> None:
        self.settings = settings
        self.embed = embed
        self.judge = judge if settings.judge else None  # the cross-encoder, when switched on

    def answer(self, question: str, hits: Sequence[Hit], embed: Embed | None = None) -> Answer:
        """The extractive answer, or a refusal when the evidence is weak."""
        return self.answer_and_extract(question, hits, embed)[0]

    def answer_and_extract(
        self, question: str, hits: Sequence[Hit], embed: Embed | None = None
    ) -> tuple[Answer, Extract]:
        """The answer, and the sentence scores it was chosen by (an LLM prompt reuses them)."""
        s = self.settings
        ex = extract(question, hits, embed or self.embed, max_sentences=s.max_sentences,
                     judge=self.judge)  # fmt: skip
        weak = ex.judged is not None and ex.judged < s.min_judge
        if not ex.chosen or ex.evidence < s.min_evidence or weak:
            out = refusal(question, hits)
        else:
            text, citations = compose(ex.chosen)
            out = Answer(question, text, False, citations, "extractive", hits=list(hits))
        out.evidence = ex.evidence if ex.chosen else None
        out.judged = ex.judged
        return out, ex

    def stream(self, question: str, hits: Sequence[Hit]) -> Iterator[str | Answer]:
        t0 = time.perf_counter()
        answer = self.answer(question, hits)
        answer.timings["answer"] = time.perf_counter() - t0
        yield answer.answer
        yield answer

    def close(self) -> None:
        pass


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


def excerpts(hits: Sequence[Hit], ex: Extract, words: int) -> list[str]:
    """Each hit's text cut to about `words` words, in reading order (gaps marked "…"): the
    sentences the extractive answer chose (all of them, whatever their length: the LLM is
    shown that answer as a draft to check), then the best-scored others. What an LLM is
    shown, so that its prompt stays short."""
    order = {id(c): i for i, c in enumerate(ex.chosen)}  # the answer's own order
    by_chunk: dict[str, list[Candidate]] = {}
    for c in sorted(ex.candidates, key=lambda c: (order.get(id(c), len(order)), -c.score)):
        by_chunk.setdefault(c.hit.chunk.id, []).append(c)
    out = []
    for hit in hits:
        text = hit.chunk.text.strip()
        cands = by_chunk.get(hit.chunk.id, [])
        if len(text.split()) <= words:
            out.append(text)
            continue
        if not cands:
            out.append(" ".join(text.split()[:words]) + " …")
            continue
        kept: list[Candidate] = []
        used = 0
        for c in cands:
            n = len(c.text.split())
            if kept and used + n > words and id(c) not in order:  # the answer's are all shown
                continue
            kept.append(c)
            used += n
        kept.sort(key=lambda c: c.start)
        pieces = [kept[0].text]
        for prev, c in itertools.pairwise(kept):
            gap = hit.chunk.text[prev.end : c.start]
            pieces.append(c.text if not gap.strip() else "… " + c.text)
        lead = "… " if hit.chunk.text[: kept[0].start].strip() else ""
        tail = " …" if hit.chunk.text[kept[-1].end :].strip() else ""
        out.append(lead + " ".join(pieces) + tail)
    return out
