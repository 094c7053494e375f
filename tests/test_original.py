"""'Open the original': the cited passage inside its document, PDF pages rendered."""

from __future__ import annotations

import base64
import io
import re
from pathlib import Path

from rag.loaders import load_file
from rag.types import Document
from rag.ui.original import original_html

from .test_loaders import _make_pdf


def test_a_text_passage_is_marked_inside_its_document(tmp_path: Path) -> None:
    p = tmp_path / "notes.md"
    p.write_text("# Notes\n\nFirst paragraph <b>here</b>.\n\nThe lamp is visible from 23 miles. "
                 "More text after.\n")  # fmt: skip
    doc = load_file(p)
    assert isinstance(doc, Document)
    start = doc.text.index("The lamp")
    end = len(doc.text)
    out = original_html(str(p), start, end, None, "The lamp is visible from 23 miles.")
    assert '<span class="passage-here" id="passage-here">' in out
    assert "<mark>The lamp is visible from 23 miles.</mark>" in out
    assert "&lt;b&gt;here&lt;/b&gt;" not in out or "<b>here</b>" not in out  # escaped text
    assert "First paragraph" in out  # the text around the passage is shown too


def test_a_pdf_passage_is_boxed_on_its_rendered_page(tmp_path: Path) -> None:
    from PIL import Image

    p = tmp_path / "report.pdf"
    p.write_bytes(_make_pdf(["First page talks about apples.", "Second page talks about pears."]))
    doc = load_file(p)
    assert isinstance(doc, Document)
    start = doc.pages[1][0]
    out = original_html(str(p), start, len(doc.text), 2, "Second page talks about pears.")
    assert "page 2 of 2 · the passage is boxed" in out
    png = base64.b64decode(re.search(r"base64,([^\"]+)", out).group(1))  # type: ignore[union-attr]
    image = Image.open(io.BytesIO(png)).convert("RGB")
    # the box is drawn in amber around the line of text (72 pt from the left and the top)
    region = [image.getpixel((x, y)) for x in range(90, 420) for y in range(80, 130)]
    amber = sum(1 for r, g, b in region if r > 190 and 90 < g < 160 and b < 60)
    assert amber > 0, "no highlight box at the passage"


def test_a_moved_file_says_what_to_do(tmp_path: Path) -> None:
    out = original_html(str(tmp_path / "gone.txt"), 0, 10, None, "")
    assert "no longer at" in out and "re-index" in out
