""" "Open the original": a cited passage shown inside its document.

PDF: the cited page rendered (pypdfium2) with the passage's words boxed on it. Text, HTML,
Markdown and DOCX: the document's text as rag reads it, the passage marked and the quote
highlighted, a window around it for long files. Only indexed documents are opened: the
request names a source the catalog knows, never an arbitrary path.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

from ..loaders import load_file
from ..text import display_title
from ..types import Document
from .render import doc_label, highlight

WINDOW = 6000  # characters shown either side of the passage in a long document
SCALE = 1.5  # PDF points → pixels


def original_html(source: str, start: int, end: int, page: int | None, quote: str) -> str:
    path = Path(source)
    name = html.escape(path.name)
    if not path.is_file():
        return _note(f"{name} is no longer at {html.escape(source)}: re-index its folder.")
    if path.suffix.lower() == ".pdf" and page is not None:
        try:
            doc = _load(path)
            passage = doc.text[start:end] if doc else ""
            if doc is not None:
                page = _page_of_quote(doc, start, end, quote) or page
            return _pdf_page(path, page, passage, quote)
        except Exception as e:  # a PDF that renders badly still has its text view
            fallback = _note(f"page {page} could not be drawn ({type(e).__name__}); its text:")
            return fallback + _text_view(path, start, end, quote)
    return _text_view(path, start, end, quote)


def _note(text: str) -> str:
    return f'<p class="note">{text}</p>'


def _load(path: Path) -> Document | None:
    doc = load_file(path)
    return doc if isinstance(doc, Document) else None


def _page_of_quote(doc: Document, start: int, end: int, quote: str) -> int | None:
    """The page the quote is on: a passage that starts on one page may be cited for a
    sentence on the next."""
    words = quote.split()[:6]
    if not words or not doc.pages:
        return None
    at = doc.text.find(" ".join(words), start, end)
    if at < 0:
        return None
    pages = [n for offset, n in doc.pages if offset <= at]
    return pages[-1] if pages else None


def _text_view(path: Path, start: int, end: int, quote: str) -> str:
    doc = _load(path)
    if doc is None or end > len(doc.text):
        return _note(f"{html.escape(path.name)} cannot be read as it was indexed: re-index it.")
    lo, hi = max(0, start - WINDOW), min(len(doc.text), end + WINDOW)
    before = html.escape(doc.text[lo:start])
    passage, _ = highlight(doc.text[start:end], quote)
    after = html.escape(doc.text[end:hi])
    cut_before = '<span class="cut">… (earlier text)\n\n</span>' if lo > 0 else ""
    cut_after = '<span class="cut">\n\n… (later text)</span>' if hi < len(doc.text) else ""
    label = doc_label(str(path), display_title(str(path), doc.title, doc.text))
    return (
        f'<div class="original-head"><b>{html.escape(label)}</b> · '
        f"characters {start}–{end} of {len(doc.text)}</div>"
        f'<div class="original-text">{cut_before}{before}'
        f'<span class="passage-here" id="passage-here">{passage}</span>{after}{cut_after}</div>'
    )


def _pdf_page(path: Path, page: int, passage: str, quote: str) -> str:
    import pypdfium2 as pdfium
    from PIL import ImageDraw

    pdf = pdfium.PdfDocument(str(path))
    try:
        if not 1 <= page <= len(pdf):
            return _note(f"{html.escape(path.name)} has no page {page} now: re-index it.")
        p = pdf[page - 1]
        image = p.render(scale=SCALE).to_pil().convert("RGB")
        height = p.get_height()
        boxes = _find_boxes(p.get_textpage(), quote or passage) or _find_boxes(
            p.get_textpage(), passage
        )
        overlay = ImageDraw.Draw(image, "RGBA")
        for left, bottom, right, top in boxes:
            overlay.rectangle(
                [left * SCALE - 2, (height - top) * SCALE - 2, right * SCALE + 2,
                 (height - bottom) * SCALE + 2],
                fill=(253, 230, 138, 90), outline=(217, 119, 6, 255), width=2,
            )  # fmt: skip
        buf = io.BytesIO()
        image.save(buf, format="PNG", optimize=True)
        data = base64.b64encode(buf.getvalue()).decode()
        found = "the passage is boxed" if boxes else "the passage could not be located on it"
        return (
            f'<div class="original-head"><b>{html.escape(path.name)}</b> · page {page} of '
            f"{len(pdf)} · {found}</div>"
            f'<img class="original-page" alt="page {page} of {html.escape(path.name)}" '
            f'src="data:image/png;base64,{data}">'
        )
    finally:
        pdf.close()


def _find_boxes(textpage: object, text: str) -> list[tuple[float, float, float, float]]:
    """Rectangles (PDF points) of the first words of `text` on the page, found by searching
    ever shorter prefixes (PDF text breaks lines and hyphenates where the extract does not),
    then of each later line-sized piece."""
    words = text.split()
    if not words:
        return []
    boxes: list[tuple[float, float, float, float]] = []
    pieces = [" ".join(words[i : i + 8]) for i in range(0, min(len(words), 96), 8)]
    for piece in pieces:
        for size in (len(piece.split()), 5, 3):
            probe = " ".join(piece.split()[:size])
            hit = _search(textpage, probe)
            if hit is not None:
                index, count = hit
                n = textpage.count_rects(index, count)  # type: ignore[attr-defined]
                boxes += [textpage.get_rect(i) for i in range(n)]  # type: ignore[attr-defined]
                break
    return boxes


def _search(textpage: object, text: str) -> tuple[int, int] | None:
    if len(text) < 4:
        return None
    searcher = textpage.search(text, match_case=True)  # type: ignore[attr-defined]
    try:
        return searcher.get_next()  # type: ignore[no-any-return]
    finally:
        searcher.close()
