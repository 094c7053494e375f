"""Near-duplicate passages in a ranked list: the same text from two files, shown once.

Documentation folders hold each page twice: `library/x.html` and its reST source
`_sources/library/x.rst.txt`. Both are indexed, both match a question, and the second copy
pushes a different passage out of the top k (and shows the reader markup). Two chunks are
duplicates when most word trigrams of the shorter one are in the other (their chunk
boundaries differ, so neither contains the other exactly). Of a group, the copy with the
least markup (``literal``, :role:`x`, .. directive::) is kept at the place of the best-ranked
one; the others are listed in `Hit.also_in`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from .types import Chunk

# share of the shorter chunk's word trigrams found in the other one. Measured on
# evals/corpora/pydocs: 90% of the reST chunks reach 0.54 with a chunk of their own HTML page
# (median 0.78), never more than 0.48 with another page's; 0.50 was two pages' tracebacks
DUPLICATE = 0.55
MIN_SHINGLES = 8  # a chunk shorter than this many word trigrams is never folded
_WORD = re.compile(r"[^\W_]+")
_MARKUP = re.compile(
    r"``|:[\w:.-]+:`|^\s*\.\. [\w:-]+::|`_{1,2}\b|\*\*|^\s*[=\-~^\"'`#*+]{4,}\s*$", re.M
)


def shingles(text: str) -> frozenset[tuple[str, ...]]:
    """The text's word trigrams, lower case, markup and punctuation left out."""
    words = _WORD.findall(text.casefold())
    if len(words) < 3:
        return frozenset([tuple(words)]) if words else frozenset()
    return frozenset(zip(words, words[1:], words[2:], strict=False))


def overlap(a: frozenset[tuple[str, ...]], b: frozenset[tuple[str, ...]]) -> float:
    """|a ∩ b| / min(|a|, |b|): 1.0 when the shorter text is all inside the longer one."""
    if not a or not b:
        return 0.0
    return len(a & b) / min(len(a), len(b))


def markup(text: str) -> float:
    """reST/Markdown markup marks per word: 0 for rendered text."""
    return len(_MARKUP.findall(text)) / max(len(_WORD.findall(text)), 1)


@dataclass(frozen=True)
class Group:
    kept: str  # the id shown: a chunk of the copy with the least markup
    first: str  # the best-ranked id of the group: the kept chunk takes its place
    also_in: tuple[str, ...] = ()  # sources of the other copies


def collapse(
    ids: Sequence[str], chunks: dict[str, Chunk], threshold: float = DUPLICATE
) -> list[Group]:
    """`ids` (best first) as groups of near duplicates from different files, in the order of
    their best-ranked member. Ids missing from `chunks` are groups of one.

    A chunk is a copy when `threshold` of its word trigrams are in the chunks of another
    file among `ids` (together: a copy's chunk boundaries fall elsewhere, so one of its
    chunks can straddle two), and that file has less markup (or as little, and ranks
    higher). It is folded into the chunk of that file it shares most with.
    """
    rank = {i: n for n, i in enumerate(ids)}
    grams = {i: shingles(chunks[i].text) for i in ids if i in chunks}
    by_source: dict[str, list[str]] = {}
    for i in grams:
        by_source.setdefault(chunks[i].source, []).append(i)
    union = {s: frozenset().union(*(grams[i] for i in members)) for s, members in by_source.items()}
    marks = {
        s: round(sum(markup(chunks[i].text) for i in m) / len(m), 2) for s, m in by_source.items()
    }
    into: dict[str, str] = {}
    for i, g in grams.items():
        if len(g) < MIN_SHINGLES:  # "Navigation", "See also": too short to say it is a copy
            continue
        own = chunks[i].source
        for other, u in union.items():
            if other == own or len(g & u) < threshold * len(g):
                continue
            partner = max(by_source[other], key=lambda j: (len(g & grams[j]), -rank[j]))
            if (marks[other], rank[partner]) < (marks[own], rank[i]):
                into[i] = partner
                break

    def root(i: str) -> str:
        seen = {i}
        while i in into and into[i] not in seen:
            i = into[i]
            seen.add(i)
        return i

    members: dict[str, list[str]] = {}
    for i in ids:
        members.setdefault(root(i), []).append(i)
    out = []
    for kept, group in sorted(members.items(), key=lambda kv: min(rank[m] for m in kv[1])):
        others = dict.fromkeys(chunks[m].source for m in group if m != kept)
        others.pop(chunks[kept].source if kept in chunks else "", None)
        first = min(group, key=lambda m: rank[m])
        out.append(Group(kept, first, tuple(others)))
    return out
