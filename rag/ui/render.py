"""Answers and passages → the HTML and Markdown the app shows. Pure functions, no Gradio."""

from __future__ import annotations

import html
import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..types import Answer, Chunk, Citation, Hit

NOT_IN_DOCUMENTS = "Not in the documents."
ANSWERED_BY = {
    "extractive": "Extractive answer: sentences quoted from these passages.",
    "llm": "Written by the LLM; each sentence checked against the passage it cites.",
}
_CITE = re.compile(r"\[(\d+)\]")


def source_id(turn: int, n: int) -> str:
    """The element id of passage [n] of answer `turn`: what a citation link jumps to."""
    return f"src-{turn}-{n}"


def answer_html(answer: Answer, turn: int) -> str:
    """The chat message: the answer with each [n] a link to its passage in the sources panel."""
    if answer.refused:
        closest = " The closest passages are listed under Sources." if answer.hits else ""
        return f"**{NOT_IN_DOCUMENTS}**{closest}" + _notes(answer)
    known = {c.n for c in answer.citations}

    def link(m: re.Match[str]) -> str:
        n = int(m.group(1))
        if n not in known:
            return m.group(0)
        sid = source_id(turn, n)
        return f'<a href="#{sid}" class="cite" data-src="{sid}" title="Show passage {n}">[{n}]</a>'

    text = _CITE.sub(link, _escape_markdown(answer.answer))
    return text + _notes(answer)


def _notes(answer: Answer) -> str:
    """Small print under an answer: the rewritten follow-up, and any warning."""
    notes = []
    if answer.searched:  # the "Search in" choice stays set, out of sight on a phone
        names = ", ".join(html.escape(doc_label(s, None)) for s in answer.searched)
        notes.append(f"Searched only in: {names}")
    if answer.standalone_question and answer.standalone_question != answer.question:
        notes.append(f"Searched for: “{html.escape(answer.standalone_question)}”")
    if answer.hypothesis:  # --expand: what the model wrote for the search, never an answer
        guess = _escape_markdown(answer.hypothesis)  # free LLM text: `*args`, `__init__`
        notes.append(f"Searched also for the model's guess: “{guess}”")
    notes += [f"⚠ {html.escape(w)}" for w in answer.warnings]
    return "".join(f"\n\n<small>{n}</small>" for n in notes)


WRITING = "Quoted from the passages while the model writes its answer…"


def draft_html(answer: Answer) -> str:
    """The quick extractive answer, shown until the model's verified sentences come."""
    return (f'<div class="draft">{_escape_markdown(answer.answer)}\n\n'
            f"<small>✍ {WRITING}</small></div>")  # fmt: skip


def streaming_text(pieces: str) -> str:
    """The answer while it streams in: plain text, citations not linked yet."""
    return _escape_markdown(pieces) + " ▍"


def answer_markdown(answer: Answer) -> str:
    """The answer with its citations as Markdown, for the clipboard."""
    if answer.refused:
        lines = [f"**Q:** {answer.question}", "", NOT_IN_DOCUMENTS]
        if answer.hits:
            lines += ["", "Closest passages:"]
            lines += [f"- {where(h.chunk)}: “{_snippet(h.chunk.text)}”" for h in answer.hits[:3]]
        return "\n".join(lines)
    lines = [f"**Q:** {answer.question}", "", answer.answer, "", "Sources:"]
    for c in answer.citations:
        quote = f" — “{' '.join(c.quote.split())}”" if c.quote else ""
        lines.append(f"[{c.n}] {where(c.hit.chunk)}{quote}")
    return "\n".join(lines)


def sources_html(
    turns: Sequence[tuple[int, Answer]], titles: Mapping[str, str | None] | None = None
) -> str:
    """The sources panel: the newest answer's passages first; older answers folded.
    `titles`: source → the title to show (the index's `titles()`), else the chunks' own."""
    if not turns:
        return (
            '<div class="empty">Ask a question: the passages each answer cites appear here, '
            "with the supporting words highlighted.</div>"
        )
    parts = []
    for i, (turn, answer) in enumerate(reversed(turns)):
        parts.append(_turn_html(turn, answer, open_=i == 0, titles=titles or {}))
    return "\n".join(parts)


def _turn_html(turn: int, answer: Answer, open_: bool, titles: Mapping[str, str | None]) -> str:
    q = html.escape(_snippet(answer.question, 90))
    if answer.refused:
        body = [f'<p class="refusal">{NOT_IN_DOCUMENTS}</p>']
        if answer.hits:
            body.append('<p class="note">Closest passages:</p>')
            body += [passage_html(h, source_id(turn, h.rank), f"{h.rank}", titles=titles)
                     for h in answer.hits[:3]]  # fmt: skip
        else:
            body.append('<p class="note">No passage matched at all. Add documents first?</p>')
    else:
        body = [_citation_html(c, source_id(turn, c.n), titles) for c in answer.citations]
        how = ANSWERED_BY.get(answer.mode)
        if how:
            body.insert(0, f'<p class="note">{how}</p>')
    if answer.searched:  # the "Search in" choice, which stays set from question to question
        names = ", ".join(html.escape(doc_label(s, titles.get(s))) for s in answer.searched)
        body.insert(0, f'<p class="note searched">Searched only in: {names}</p>')
    for w in answer.warnings:
        body.insert(0, f'<p class="warning">⚠ {html.escape(w)}</p>')
    return (
        f'<details class="turn" {"open" if open_ else ""}><summary>{q}</summary>'
        + "\n".join(body)
        + "</details>"
    )


def _citation_html(c: Citation, sid: str, titles: Mapping[str, str | None]) -> str:
    extra = "" if c.supported else ' <span class="unsupported">not supported by this passage</span>'
    return passage_html(c.hit, sid, str(c.n), quote=c.quote, extra=extra, titles=titles)


def passage_html(
    hit: Hit,
    sid: str,
    label: str,
    quote: str = "",
    extra: str = "",
    titles: Mapping[str, str | None] | None = None,
) -> str:
    """One passage: where it is from, its score, and its whole text with `quote` marked."""
    ch = hit.chunk
    markdown = Path(ch.source).suffix.lower() in {".md", ".markdown"}
    body, found = (highlight_markdown if markdown else highlight)(ch.text, quote)
    meta = [f"score {hit.score:.3f}"]
    if hit.dense is not None:
        meta.append(f"similarity {hit.dense:.2f}")
    scores = f'<span class="score" title="{html.escape(SCORE_HELP)}">{" · ".join(meta)}</span>'
    page = f" · page {ch.page}" if ch.page is not None else ""
    section = f' · <span class="heading">{html.escape(ch.heading)}</span>' if ch.heading else ""
    missing = "" if found or not quote else f"<blockquote>“{html.escape(quote)}”</blockquote>"
    if hit.also_in:  # near-duplicate copies of this passage, folded into it (dedup.py)
        names = ", ".join(
            f'<span title="{html.escape(s)}">{html.escape(Path(s).name)}</span>'
            for s in hit.also_in
        )
        extra += f' <span class="also-in">also in {names}</span>'
    request = json.dumps({"source": ch.source, "start": ch.start_char, "end": ch.end_char,
                          "page": ch.page, "quote": quote})  # fmt: skip
    opener = (
        f'<a class="open-original" href="#original" data-open="{html.escape(request)}">'
        "open the original</a>"
    )
    return (
        f'<article class="src" id="{sid}">'
        f'<header><span class="n">[{label}]</span> '
        f"{_source_html(ch.source, (titles or {}).get(ch.source) or ch.title)}{page}{section}"
        f" · {scores}{extra} · {opener}"
        "</header>"
        f'{missing}<div class="passage{" md" if markdown else ""}">{body}</div></article>'
    )


SCORE_HELP = (
    "Score: how well the passage matches the question, as used to rank it: the "
    "cross-encoder's relevance (0-1) when reranked, else half meaning and half exact words, "
    "each scaled 0-1 over the candidates. Similarity: cosine of the question's and the "
    "passage's embeddings (-1 to 1; above ~0.5 is close in meaning)."
)


def doc_label(source: str, title: str | None) -> str:
    """A document as people name it: its own title (first heading, <title>, PDF/DOCX
    metadata) with the file name after it; the file name alone when it has no better one."""
    name = Path(source).name
    t = " ".join((title or "").split())
    if not t or t.casefold() in (name.casefold(), Path(source).stem.casefold()):
        return name
    return f"{_snippet(t, 70)} ({name})"


def _quote_spans(text: str, quote: str) -> tuple[list[tuple[int, int]], bool]:
    """Where each part of `quote` (parts joined by " … ") is in `text`, matched ignoring
    differences in whitespace, as sorted non-overlapping spans; and whether all were found."""
    spans: list[tuple[int, int]] = []
    parts = [p.strip() for p in quote.split(" … ") if p.strip()] if quote else []
    for part in parts:
        words = [re.escape(w) for w in part.split()]
        m = re.search(r"\s+".join(words), text) if words else None
        if m:
            spans.append(m.span())
    spans.sort()
    merged: list[tuple[int, int]] = []
    for start, end in spans:
        if merged and start < merged[-1][1]:  # overlapping parts: their union, once
            start = merged[-1][1]
        if start < end:
            merged.append((start, end))
    return merged, len(spans) == len(parts)


def highlight(text: str, quote: str) -> tuple[str, bool]:
    """`text` as HTML with each part of `quote` in <mark>; returns (html, all parts found)."""
    spans, found = _quote_spans(text, quote)
    out, pos = [], 0
    for start, end in spans:
        out.append(html.escape(text[pos:start]))
        out.append(f"<mark>{html.escape(text[start:end])}</mark>")
        pos = end
    out.append(html.escape(text[pos:]))
    return "".join(out), found


_OPEN, _CLOSE = "\ue000", "\ue001"  # private-use characters: never in a document's text


def highlight_markdown(text: str, quote: str) -> tuple[str, bool]:
    """A Markdown passage rendered safely (raw HTML shown as text, no images fetched, links
    checked by markdown-it; tables as tables), with the quote in <mark> as in `highlight`."""
    from markdown_it import MarkdownIt

    spans, found = _quote_spans(text, quote)
    pieces, pos = [], 0
    for start, end in spans:
        pieces += [text[pos:start], _OPEN, text[start:end], _CLOSE]
        pos = end
    pieces.append(text[pos:].replace(_OPEN, "").replace(_CLOSE, ""))
    md = MarkdownIt("commonmark", {"html": False}).enable("table").disable("image")
    rendered = md.render("".join(pieces))
    return rendered.replace(_OPEN, "<mark>").replace(_CLOSE, "</mark>"), found


def _source_html(source: str, title: str) -> str:
    label = doc_label(source, title)
    name = Path(source).name
    if label == name:
        return f'<b title="{html.escape(source)}">{html.escape(name)}</b>'
    return (
        f'<b title="{html.escape(source)}">{html.escape(label[: -len(name) - 3])}</b> '
        f'<span class="file" title="{html.escape(source)}">{html.escape(name)}</span>'
    )


def where(chunk: Chunk) -> str:
    page = f", page {chunk.page}" if chunk.page is not None else ""
    return f"{Path(chunk.source).name}{page}"


def documents_rows(
    files: dict[str, Any], docs_dir: Path, titles: Mapping[str, str] | None = None
) -> tuple[list[list[Any]], list[str]]:
    """Rows of the documents table (title, file, folder, status, chunks, note) and their
    sources. `titles`: the titles to show (the index's `titles()`), else the files' own."""
    rows, order = [], []
    for source, row in sorted(files.items(), key=lambda kv: (Path(kv[0]).name.casefold(), kv[0])):
        p = Path(source)
        folder = "documents" if p.parent == docs_dir.resolve() else str(p.parent)
        title = " ".join(((titles or {}).get(source) or row.title or "").split())
        rows.append([_snippet(title, 80), p.name, folder, row.status, row.chunks, row.reason or ""])
        order.append(source)
    return rows, order


def _escape_markdown(text: str) -> str:
    # answers quote documents verbatim: their *, _, <, # … must show as typed
    text = html.escape(text, quote=False)
    return re.sub(r"([\\`*_{}#|~])", r"\\\1", text)


def _snippet(text: str, n: int = 160) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"


def plain(text: str) -> str:
    """User or error text shown in the chat exactly as typed."""
    return _escape_markdown(text)


def status_markdown(info: dict[str, Any], docs_dir: Path) -> str:
    """The Status tab: the index, its models and settings, and the versions in use."""
    emb, ch = info.get("embedding") or {}, info.get("chunking") or {}
    r = info.get("settings", {}).get("retrieve", {})
    llm = info.get("settings", {}).get("answer", {})
    answers = llm.get("llm_url") or llm.get("llm_gguf")

    def code(text: Any) -> str:
        return f"<code>{html.escape(str(text))}</code>"

    rows = [
        ("Documents", f"{info['documents']} indexed, {len(info.get('skipped', []))} skipped"),
        ("Passages (chunks)", str(info["chunks"])),
        ("Index folder", code(info["index"])),
        ("Vectors", code(info.get("chroma"))),
        ("Uploads go to", code(docs_dir)),
        ("Indexed folders", ", ".join(code(x) for x in info.get("roots", [])) or "–"),
        ("Embedding model", f"{emb.get('model', '?')} ({emb.get('dim', '?')} dimensions)"),
        ("Chunking", f"{ch.get('size', '?')} tokens, {ch.get('overlap', '?')} overlap"),
        ("Retrieval", f"{r.get('mode')}, k={r.get('k')}, fused depth {r.get('candidates')}"),
        (
            "Answers",
            html.escape(f"LLM {answers} ({llm.get('llm_model') or 'its default model'})")
            if answers
            else "extractive (no LLM configured)",
        ),
        ("Created", _when(info.get("created"))),
        ("Updated", _when(info.get("updated"))),
    ]
    versions = info.get("versions") or {}
    if versions:
        rows.append(("Versions", ", ".join(f"{k} {v}" for k, v in versions.items())))
    body = "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in rows)
    return f'<table class="status-table">{body}</table>'


def _when(stamp: Any) -> str:
    """A manifest time (epoch seconds or ISO text) as local date and time."""
    from datetime import datetime

    if isinstance(stamp, int | float):
        return datetime.fromtimestamp(stamp).strftime("%Y-%m-%d %H:%M:%S")
    return html.escape(str(stamp or "–"))
