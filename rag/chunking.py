"""Documents → Chunks: sentence-aware, sized in the embedding model's own tokens.

A chunk is a run of whole sentences (a sentence longer than a chunk is cut at token
boundaries) whose tokens, with the title/heading prefix and the model's special tokens,
fit `ChunkSettings.size`. The next chunk repeats whole trailing sentences up to
`overlap` tokens. A heading starts a new chunk (without overlap from the section before), so chunks
follow the document's structure.
"""

from __future__ import annotations

import bisect
import hashlib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .config import ChunkSettings
from .types import Chunk, Document

# Words after which a period does not end a sentence.
_ABBREV = {
    "mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "vs", "no", "nos", "fig", "figs",
    "inc", "ltd", "co", "corp", "dept", "est", "approx", "cf", "al", "gen", "gov", "sen",
    "rep", "jan", "feb", "mar", "apr", "jun", "jul", "aug", "sep", "sept", "oct", "nov",
    "dec", "vol", "pp", "ed", "eds",
}  # fmt: skip
_END = re.compile(r"[.!?…]+[\"'”’»)\]]*(?=\s)")
_NEXT_START = re.compile(r"\s+[\"'“‘«(\[]?[A-Z0-9À-ÖØ-Þ$€£¥-]")
_DOTTED = re.compile(r"(?:\b[A-Za-z]\.){2,}$")


@dataclass(frozen=True)
class Span:
    start: int
    end: int


def split_sentences(text: str, start: int = 0, end: int | None = None) -> list[Span]:
    """Sentence spans (whitespace trimmed) of text[start:end].

    Blank lines always end a sentence; a single newline does when the line before it ends
    a sentence or is short (a heading, a list item), so hard-wrapped prose is kept whole.
    """
    end = len(text) if end is None else end
    spans: list[Span] = []
    for para in re.finditer(r"[^\n]+(?:\n(?!\s*\n)[^\n]*)*", text[start:end]):
        p_start, p_end = start + para.start(), start + para.end()
        for line_span in _split_lines(text, p_start, p_end):
            spans.extend(_split_punct(text, line_span.start, line_span.end))
    return [s for s in spans if s.end > s.start]


def _split_lines(text: str, start: int, end: int) -> list[Span]:
    out: list[Span] = []
    seg_start = start
    # a block with long lines is not hard-wrapped: each of its lines is a paragraph
    unwrapped = any(len(line) > 160 for line in text[start:end].split("\n"))
    i = text.find("\n", start, end)
    while i != -1:
        prev = text[seg_start:i].rstrip()
        last_line = prev[prev.rfind("\n") + 1 :]
        nxt = text[i + 1 : end].lstrip()
        ends_sentence = last_line.rstrip("\"'”’)]»").endswith((".", "!", "?", ":", "…"))
        short = len(last_line.strip()) < 60
        bullet = bool(re.match(r"([-*•]|\d+[.)])\s", nxt))
        if unwrapped or ends_sentence or short or bullet:
            out.append(Span(seg_start, i))
            seg_start = i + 1
        i = text.find("\n", i + 1, end)
    out.append(Span(seg_start, end))
    return out


def _split_punct(text: str, start: int, end: int) -> list[Span]:
    out: list[Span] = []
    seg = start
    for m in _END.finditer(text, start, end):
        cut = m.end()
        if not _NEXT_START.match(text, cut, end):
            continue
        word = text[seg : m.start() + 1].split()[-1] if text[seg : m.start() + 1].split() else ""
        bare = word.rstrip(".").lstrip("\"'“‘([").lower()
        if text[m.start()] == "." and (
            bare in _ABBREV or _DOTTED.search(word) or (len(bare) == 1 and bare.isalpha())
        ):
            continue
        out.append(_trim(text, seg, cut))
        seg = cut
    out.append(_trim(text, seg, end))
    return out


def _trim(text: str, start: int, end: int) -> Span:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return Span(start, end)


TokenCounter = Callable[[Sequence[str]], list[list[tuple[int, int]]]]
"""Texts → for each text, the (start, end) character offsets of its tokens (no specials)."""


def chunk_document(
    doc: Document, token_offsets: TokenCounter, settings: ChunkSettings | None = None
) -> list[Chunk]:
    """Split one Document into Chunks whose texts are exact slices of `doc.text`."""
    settings = settings or ChunkSettings()
    sentences = split_sentences(doc.text)
    if not sentences:
        return []
    heading_starts = [h[0] for h in doc.headings]
    offsets = token_offsets([doc.text[s.start : s.end] for s in sentences])
    # cut sentences longer than the smallest possible budget into token windows
    units: list[tuple[Span, int]] = []
    hard_max = max(16, settings.size - 2 - 48)
    for s, toks in zip(sentences, offsets, strict=True):
        if len(toks) <= hard_max:
            units.append((s, len(toks)))
            continue
        for i in range(0, len(toks), hard_max):
            window = toks[i : i + hard_max]
            units.append((Span(s.start + window[0][0], s.start + window[-1][1]), len(window)))

    prefix_cost: dict[str, int] = {}

    def budget(heading: str) -> int:
        ctx = Chunk("", "", "", 0, 0, title=doc.title, heading=heading).context()
        if ctx not in prefix_cost:
            prefix_cost[ctx] = min(len(token_offsets([ctx])[0]) + 1, 48) if ctx else 0
        return max(16, settings.size - 2 - prefix_cost[ctx])

    def heading_at(pos: int) -> str:
        i = bisect.bisect_right(heading_starts, pos) - 1
        return doc.headings[i][1] if i >= 0 else ""

    chunks: list[Chunk] = []
    current: list[tuple[Span, int]] = []
    tokens = 0
    fresh = 0  # tokens in `current` that are not overlap from the previous chunk

    def emit() -> None:
        first, last = current[0][0], current[-1][0]
        chunks.append(_make_chunk(doc, first.start, last.end, heading_at(first.start), len(chunks)))

    heading_set = set(heading_starts)
    for unit in units:
        span, n = unit
        limit = (
            budget(heading_at(current[0][0].start)) if current else budget(heading_at(span.start))
        )
        at_heading = span.start in heading_set
        if at_heading and current and fresh == 0:
            current, tokens = [], 0  # overlap never crosses into a new section
        new_section = at_heading and fresh >= 16
        if current and (tokens + n > limit or new_section):
            emit()
            keep: list[tuple[Span, int]] = []
            kept = 0
            if not new_section:
                for prev in reversed(current):
                    if kept + prev[1] > settings.overlap:
                        break
                    keep.insert(0, prev)
                    kept += prev[1]
                # never repeat the whole chunk: the next one must make progress
                if len(keep) == len(current):
                    keep = keep[1:]
                    kept = sum(k[1] for k in keep)
            current, tokens, fresh = keep, kept, 0
            # overlap plus this unit must still fit
            while current and tokens + n > budget(heading_at(current[0][0].start)):
                tokens -= current.pop(0)[1]
        current.append(unit)
        tokens += n
        fresh += n
    if current:
        emit()
    return chunks


def _make_chunk(doc: Document, start: int, end: int, heading: str, position: int) -> Chunk:
    page = None
    if doc.pages:
        starts = [p[0] for p in doc.pages]
        i = bisect.bisect_right(starts, start) - 1
        page = doc.pages[max(i, 0)][1]
    key = f"{doc.source}\0{doc.sha256}\0{position}\0{start}:{end}"
    return Chunk(
        id=hashlib.sha256(key.encode()).hexdigest()[:24],
        source=doc.source,
        text=doc.text[start:end],
        start_char=start,
        end_char=end,
        title=doc.title,
        heading=heading,
        page=page,
        position=position,
    )
