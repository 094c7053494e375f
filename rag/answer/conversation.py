"""Follow-up questions ("and Spain?", "what about its funding?") made standalone for retrieval.

A rule decides whether a question is a follow-up, and rewrites it:
  - "and X?" / "what about X?" where X is a name: X takes the place of the previous
    question's first name ("What did Italy spend…?" + "and Spain?" → "What did Spain spend…?"),
    except a one-word name for a full one in a "who" question (a place is not a person);
  - "its"/"their"/… with no name of its own: the previous question's first name owns it;
  - any other follow-up without a subject of its own (a pronoun, or at most two content
    words and no name): the previous question's content words are added in parentheses.
A question that has its own subject is left alone. With an LLM, a follow-up is rewritten
by the model instead, when its rewrite keeps the follow-up's names and uses the conversation.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..errors import LLMError
from ..text import QUESTION_WORDS, STOPWORDS, WORD

if TYPE_CHECKING:
    from .llm import LLM

log = logging.getLogger(__name__)

History = Sequence[tuple[str, str]]  # (question, answer) turns, oldest first

_LEAD = re.compile(
    r"^\s*(?:and|also|but|so|ok(?:ay)?|then)?[\s,]*"
    r"(?:what about|how about|what of|same for|and for|and in|and|also)\b[\s,]*",
    re.I,
)
_POSSESSIVE = re.compile(r"\b(?:its|their|his|her)\b", re.I)
_PRONOUN = re.compile(r"\b(?:it|its|they|them|their|he|him|his|she|her|this|these|those)\b", re.I)
_NAME = re.compile(r"[A-Z][\w’'.-]*(?:\s+(?:of|de|the|von|van)?\s*[A-Z][\w’'.-]*)*")


def condense(history: History, question: str, llm: LLM | None = None) -> str:
    """`question` rewritten to stand alone, given the earlier turns (unchanged if it does).

    `history` holds (question, answer) pairs, oldest first, as asked (follow-ups earlier in
    the conversation are completed in turn). The LLM, when given, is asked only about a
    question the rule takes for a follow-up, and its rewrite must keep the follow-up's
    names and use the conversation; otherwise the rule's rewrite stands.
    """
    if not history or not question.strip():
        return question
    previous = _previous(history)
    ruled = rewrite_by_rule(previous, question)
    if ruled == question or llm is None:
        return ruled
    from .llm import condense_messages

    try:
        rewritten = _clean(llm.complete(condense_messages(history, question), max_tokens=96))
    except LLMError as e:
        log.warning("%s; rewriting the follow-up by rule", e)
        return ruled
    if _acceptable(rewritten, question, previous):
        return rewritten
    log.info("the LLM's rewrite %r of %r is not usable; using %r", rewritten, question, ruled)
    return ruled


def _previous(history: History) -> str:
    """The last question made standalone by rule (callers may keep the raw follow-ups)."""
    turns = [q for q, _ in history[-5:]]
    previous = turns[0]
    for q in turns[1:]:
        previous = rewrite_by_rule(previous, q)
    return previous


def rewrite_by_rule(previous: str, question: str) -> str:
    """The follow-up `question` completed from the `previous` (standalone) question."""
    q = question.strip()
    lead = _LEAD.match(q)
    rest = q[lead.end() :].strip() if lead and lead.end() > 0 else q
    names = _names(rest, skip_first=not lead)
    words = _content_words(rest)
    if not (lead or (not names and (_PRONOUN.search(rest) or len(words) <= 2))):
        return question  # it has a subject of its own
    prev_names = _names(previous, skip_first=True)
    core = rest.rstrip(" ?.!")
    if (
        lead
        and names
        and prev_names
        and _only_names(core)
        and _same_kind(previous, prev_names[0], names[0])
    ):
        swapped = previous.replace(prev_names[0], names[0], 1)
        if swapped != previous:
            return swapped
    if not names and prev_names and _POSSESSIVE.search(core):
        owner = prev_names[0] + ("’" if prev_names[0].endswith("s") else "'s")
        core = _POSSESSIVE.sub(owner, core, count=1)
        return _sentence(lead, core)
    context = [w for w in _content_words(previous) if w.lower() not in {x.lower() for x in words}]
    if not context:
        return question
    return _sentence(lead, f"{core} ({' '.join(context)})")


def _same_kind(previous: str, old: str, new: str) -> bool:
    """May `new` take `old`'s place? Not in a question about who someone is, when one is a
    full name and the other one word ("Who is Anthony Kim?" + "and Korea?"): without a model
    a person cannot be told from a place, so the follow-up keeps both instead."""
    if not re.match(r"\s*who\s+(?:is|was|are|were)\b", previous, re.I):
        return True
    return (" " in old.strip()) == (" " in new.strip())


def _sentence(lead: re.Match[str] | None, core: str) -> str:
    prefix = "What about " if lead and not _starts_with_question_word(core) else ""
    text = prefix + core
    return text[:1].upper() + text[1:] + "?"


def _starts_with_question_word(text: str) -> bool:
    first = text.split()[0].lower() if text.split() else ""
    return first in QUESTION_WORDS or first in {"is", "are", "was", "were", "do", "does", "did"}


def _names(text: str, skip_first: bool) -> list[str]:
    """Capitalised phrases; a capitalised first word alone is not a name."""
    out = []
    for m in _NAME.finditer(text):
        phrase = m.group(0).rstrip(".’'")
        if m.start() == 0 and skip_first and " " not in phrase:
            continue
        if phrase.lower() in STOPWORDS or phrase.lower() in QUESTION_WORDS:
            continue
        if m.start() == 0 and skip_first:  # "What Italy…" is not a name; "Mutual Defense" is
            first, _, tail = phrase.partition(" ")
            if first.lower() in STOPWORDS | QUESTION_WORDS:
                phrase = tail
        out.append(phrase)
    return out


def _only_names(text: str) -> bool:
    words = [w for w in WORD.findall(text) if w.lower() not in STOPWORDS]
    return bool(words) and all(w[:1].isupper() for w in words) and len(words) <= 4


def _content_words(text: str) -> list[str]:
    out: list[str] = []
    for w in WORD.findall(text):
        lw = w.lower()
        if lw in STOPWORDS or lw in QUESTION_WORDS or len(w) < 2 or lw in {x.lower() for x in out}:
            continue
        out.append(w)
    return out


def _clean(text: str) -> str:
    line = text.strip().splitlines()[0].strip() if text.strip() else ""
    line = re.sub(
        r"^(?:standalone question|rewritten question|question)\s*:\s*", "", line, flags=re.I
    )
    return line.strip(" \"'“”")


def _acceptable(rewritten: str, question: str, previous: str) -> bool:
    """One line that keeps every name of the follow-up and takes a word from before."""
    if not rewritten or len(rewritten) > 400:
        return False
    low = rewritten.lower()
    if not all(n.lower() in low for n in _names(question, skip_first=True)):
        return False
    own = {w.lower() for w in _content_words(question)}
    return any(w.lower() in low for w in _content_words(previous) if w.lower() not in own)
