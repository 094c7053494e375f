from __future__ import annotations

import io
from pathlib import Path

import pytest

from rag.config import LoadSettings
from rag.errors import UsageError
from rag.loaders import discover, load_file
from rag.types import Document, Skipped


def _doc(path: Path, **kw: float) -> Document:
    d = load_file(path, LoadSettings(**kw))
    assert isinstance(d, Document), d
    return d


def test_txt_and_title_and_headings(tmp_path: Path) -> None:
    p = tmp_path / "essay.txt"
    body = "This paragraph is long enough to be a paragraph of prose that follows a title. " * 3
    p.write_text(f"My Essay\nA Section Title\n{body}\n")
    d = _doc(p)
    assert d.title == "My Essay"
    assert (d.text.index("A Section Title"), "A Section Title") in d.headings
    assert d.source == str(p.resolve())
    assert len(d.sha256) == 64


def test_non_utf8_is_decoded(tmp_path: Path) -> None:
    p = tmp_path / "latin.txt"
    text = "Le café coûte trois euros à Genève, déclare François. " * 5
    p.write_bytes(text.encode("cp1252"))
    d = _doc(p)
    assert "café coûte" in d.text and "François" in d.text


def test_utf16_with_bom_is_decoded(tmp_path: Path) -> None:
    p = tmp_path / "wide.txt"
    p.write_bytes("Hello wide world, this is UTF-16 text.".encode("utf-16"))
    assert "wide world" in _doc(p).text


@pytest.mark.parametrize(
    ("name", "data", "reason"),
    [
        ("empty.txt", b"", "empty"),
        ("blank.md", b"   \n\n  ", "no text"),
        ("blob.txt", bytes(range(256)) * 40, "binary"),
        ("broken.pdf", b"%PDF-1.4 this is not really a pdf", "PDF"),
        ("broken.docx", b"PK\x03\x04 not a zip", "DOCX"),
    ],
)
def test_bad_files_are_skipped_with_reason(
    tmp_path: Path, name: str, data: bytes, reason: str
) -> None:
    p = tmp_path / name
    p.write_bytes(data)
    out = load_file(p)
    assert isinstance(out, Skipped)
    assert reason.lower() in out.reason.lower()


def test_too_large_is_skipped_without_reading(tmp_path: Path) -> None:
    p = tmp_path / "big.txt"
    p.write_text("word " * 300_000)
    out = load_file(p, LoadSettings(max_file_mb=1))
    assert isinstance(out, Skipped) and "too large" in out.reason and "--max-file-mb" in out.reason


def test_unreadable_file_is_skipped(tmp_path: Path) -> None:
    p = tmp_path / "secret.txt"
    p.write_text("hidden")
    p.chmod(0)
    try:
        out = load_file(p)
        # root can read anything: then it loads, which is also fine
        assert isinstance(out, Skipped | Document)
        if isinstance(out, Skipped):
            assert "unreadable" in out.reason
    finally:
        p.chmod(0o644)


def test_html_keeps_main_content_only(tmp_path: Path) -> None:
    p = tmp_path / "page.html"
    p.write_text(
        "<html><head><title>Widgets guide</title><style>.x{}</style>"
        "<script>var tracking = 1;</script></head><body>"
        "<nav><a href='/'>Home</a> | <a href='/about'>About us</a></nav>"
        "<div class='sphinxsidebar'>Quick search box</div>"
        "<main><h1>Widgets</h1><p>Widgets are <b>small</b> gadgets.</p>"
        "<script>trackPageView();</script><style>.w{color:red}</style>"
        "<h2>Sizes</h2><p>They come in three sizes.</p><pre>code = 1\nmore = 2</pre>"
        "<table><tr><td>small</td><td>1 cm</td></tr></table></main>"
        "<footer>Copyright 2024</footer></body></html>"
    )
    d = _doc(p)
    assert d.title == "Widgets guide"
    assert "Widgets are small gadgets." in d.text
    assert "code = 1\nmore = 2" in d.text
    assert "small" in d.text and "1 cm" in d.text
    for junk in (
        "Home",
        "About us",
        "tracking",
        "trackPageView",
        "color:red",
        "Quick search",
        "Copyright",
    ):
        assert junk not in d.text
    headings = dict((h, o) for o, h in d.headings)
    assert d.text[headings["Sizes"] :].startswith("Sizes")


def test_definition_terms_lead_their_definition(tmp_path: Path) -> None:
    """Sphinx's API pages (and any <dl>): the <dt> signature leads the first paragraph of its
    <dd>, so a sentence quoted from it names what it describes."""
    p = tmp_path / "api.html"
    p.write_text(
        "<html><body><div class='body'><h1>textwrap</h1>"
        "<dl class='py function'><dt class='sig sig-object py' id='textwrap.dedent'>"
        "<span class='sig-prename'>textwrap.</span><span class='sig-name'>dedent</span>"
        "(<em>text</em>)<a class='headerlink' href='#textwrap.dedent'>¶</a></dt>"
        "<dd><p>Remove any common leading whitespace from every line in <em>text</em>.</p>"
        "<p>This can be used to line up triple-quoted strings.</p></dd></dl>"
        "<dl><dt>one</dt><dt>two</dt><dd><pre>x = 1</pre><p>Example after code.</p></dd></dl>"
        "<dl><dt>orphan term</dt></dl><h2>Next</h2><p>After the heading.</p>"
        "</div></body></html>"
    )
    paragraphs = _doc(p).text.split("\n\n")
    assert (
        "textwrap.dedent(text) — Remove any common leading whitespace from every line in text."
        in paragraphs
    )
    assert "This can be used to line up triple-quoted strings." in paragraphs  # only the first
    # a definition that opens with code: the terms stand alone before it
    assert paragraphs[paragraphs.index("one; two") + 1] == "x = 1"
    assert "Example after code." in paragraphs
    # a term with no definition is not glued onto the next heading or paragraph
    assert paragraphs[-3:] == ["orphan term", "Next", "After the heading."]
    assert "¶" not in _doc(p).text


def test_markdown_headings(tmp_path: Path) -> None:
    p = tmp_path / "notes.md"
    p.write_text("# Title\n\nIntro text.\n\n## Part two\n\nMore text here.\n")
    d = _doc(p)
    assert [h for _, h in d.headings] == ["Title", "Part two"]
    assert d.title == "Title"


def _make_pdf(pages: list[str]) -> bytes:
    """A minimal valid PDF with one text line per page (no PDF library needed)."""
    objs: list[bytes] = []
    kids = " ".join(f"{3 + 2 * i} 0 R" for i in range(len(pages)))
    objs.append(b"<< /Type /Catalog /Pages 2 0 R >>")
    objs.append(f"<< /Type /Pages /Kids [{kids}] /Count {len(pages)} >>".encode())
    font_id = 3 + 2 * len(pages)
    for i, text in enumerate(pages):
        content = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode()
        objs.append(
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents {4 + 2 * i} 0 R "
            f"/Resources << /Font << /F1 {font_id} 0 R >> >> >>".encode()
        )
        objs.append(b"<< /Length %d >>\nstream\n" % len(content) + content + b"\nendstream")
    objs.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    out = io.BytesIO()
    out.write(b"%PDF-1.4\n")
    offsets = []
    for n, body in enumerate(objs, start=1):
        offsets.append(out.tell())
        out.write(f"{n} 0 obj\n".encode() + body + b"\nendobj\n")
    xref = out.tell()
    out.write(f"xref\n0 {len(objs) + 1}\n0000000000 65535 f \n".encode())
    for off in offsets:
        out.write(f"{off:010d} 00000 n \n".encode())
    out.write(
        f"trailer\n<< /Size {len(objs) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    )
    return out.getvalue()


def test_pdf_pages_are_recorded(tmp_path: Path) -> None:
    p = tmp_path / "report.pdf"
    p.write_bytes(_make_pdf(["First page talks about apples.", "Second page talks about pears."]))
    d = _doc(p)
    assert "apples" in d.text and "pears" in d.text
    assert [n for _, n in d.pages] == [1, 2]
    assert d.text[d.pages[1][0] :].startswith("Second page")


def test_docx_paragraphs_headings_tables(tmp_path: Path) -> None:
    import docx

    document = docx.Document()
    document.add_heading("Quarterly report", level=1)
    document.add_paragraph("Revenue grew by 12 percent in the third quarter.")
    table = document.add_table(rows=1, cols=2)
    table.rows[0].cells[0].text = "Region"
    table.rows[0].cells[1].text = "North"
    p = tmp_path / "report.docx"
    document.save(str(p))
    d = _doc(p)
    assert "Revenue grew by 12 percent" in d.text
    assert "Region | North" in d.text
    assert (0, "Quarterly report") in d.headings


def test_discover_lists_unsupported_and_skips_hidden(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("a")
    (tmp_path / "b.png").write_bytes(b"\x89PNG")
    (tmp_path / "app.js").write_text("x")
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "c.txt").write_text("c")
    files, unsupported, outside, _copies = discover([tmp_path])
    assert [f.name for f in files] == ["a.txt"] and not outside
    assert sorted(Path(u).name for u in unsupported) == ["app.js", "b.png"]


def test_discover_missing_path_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no such file"):
        discover([tmp_path / "nope"])


# --- pathological inputs: every loader is linear in its input ---------------------------


def test_deeply_nested_html_loads_whole_and_fast(tmp_path: Path) -> None:
    """8,000 nested elements: the walk used to recurse (RecursionError: the page was skipped)
    and `tag.decomposed` searched each subtree (quadratic, ~30 s here)."""
    import time

    n = 8000
    page = "".join(f'<div class="c{i}"><span>w{i} text</span>' for i in range(n))
    p = tmp_path / "deep.html"
    p.write_text(f"<html><body><main>{page}{'</div>' * n}</main></body></html>")
    started = time.perf_counter()
    d = _doc(p)
    assert time.perf_counter() - started < 8  # ~0.5 s when linear
    assert "w0 text" in d.text and f"w{n - 1} text" in d.text


def test_many_heading_like_lines_are_linear(tmp_path: Path) -> None:
    """Each line used to search all the lines after it (`lines[i + 1 :]`): quadratic."""
    import time

    p = tmp_path / "lines.txt"
    p.write_text("\n".join(f"Heading Number {i}" for i in range(150_000)) + "\n" + "x " * 100)
    started = time.perf_counter()
    d = _doc(p)
    assert time.perf_counter() - started < 5  # ~0.2 s when linear, ~20 s quadratic
    # the last short line is followed by a paragraph, so it is a heading; the others are not
    assert [h[1] for h in d.headings] == ["Heading Number 149999"]


def _zip(tmp_path: Path, name: str, members: dict[str, bytes]) -> Path:
    import zipfile

    p = tmp_path / name
    with zipfile.ZipFile(p, "w", zipfile.ZIP_DEFLATED) as z:
        for member, data in members.items():
            z.writestr(member, data)
    return p


def test_docx_zip_bomb_is_skipped_before_unpacking(tmp_path: Path) -> None:
    # 40 MB of one byte deflates to ~40 KB: 1000x, far past any real document
    p = _zip(tmp_path, "bomb.docx", {"word/document.xml": b" " * (40 << 20)})
    assert p.stat().st_size < 1 << 20
    out = load_file(p)
    assert isinstance(out, Skipped) and "zip bomb" in out.reason
    assert "word/document.xml" in out.reason


def test_docx_that_unpacks_past_the_size_limit_is_skipped(tmp_path: Path) -> None:
    import os

    # 5 MB of random a/b letters deflate ~7x: under 1 MB zipped, yet no bomb
    big = bytes(b"ab"[x & 1] for x in os.urandom(5 << 20))
    p = _zip(tmp_path, "huge.docx", {"word/document.xml": big})
    assert p.stat().st_size < 1 << 20
    out = load_file(p, LoadSettings(max_file_mb=1))
    assert isinstance(out, Skipped) and "unpacks to" in out.reason and "--max-file-mb" in out.reason
    assert "unpacks to" not in str(load_file(p, LoadSettings(max_file_mb=50)))


@pytest.mark.parametrize("encoding", ["utf-16-le", "utf-16-be"])
def test_utf16_without_bom_is_text_not_binary(tmp_path: Path, encoding: str) -> None:
    p = tmp_path / "wide.txt"
    p.write_bytes("Ünïcode wide text without a byte order mark, café.\n".encode(encoding) * 20)
    d = _doc(p)
    assert d.text.startswith("Ünïcode wide text") and "café" in d.text


def test_binary_with_nuls_is_still_binary(tmp_path: Path) -> None:
    p = tmp_path / "blob.txt"
    p.write_bytes(b"\x00\x01\x02\x03abc\x00\x00\xff" * 500)
    out = load_file(p)
    assert isinstance(out, Skipped) and "binary" in out.reason


# --- Sphinx source copies ---------------------------------------------------------------


def _sphinx_tree(root: Path) -> Path:
    for rel in ("library/x.html", "_sources/library/x.rst.txt", "guide/index.html",
                "_sources/guide/index.rst.txt", "_sources/orphan.rst.txt",
                "_sources/notes.txt"):  # fmt: skip
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(f"<p>{rel}</p>")
    (root / "notes.html").write_text("<p>notes</p>")
    return root


def test_rendered_page_of_a_sphinx_source_copy() -> None:
    from rag.loaders import rendered_page

    out = Path("/d/html")
    assert rendered_page(out / "_sources/library/x.rst.txt") == [
        out / "library/x.html", out / "library/x/index.html"]  # fmt: skip
    assert rendered_page(out / "_sources/notes.txt")[0] == out / "notes.html"
    assert rendered_page(out / "_sources/a.md.txt")[0] == out / "a.html"
    # the innermost `_sources` names the output folder
    assert rendered_page(Path("/_sources/b/_sources/c.rst.txt"))[0] == Path("/_sources/b/c.html")
    for other in ("library/x.rst.txt", "_sources/image.png", "_sources"):
        assert rendered_page(out / other) == [], other


def test_discover_leaves_out_source_copies_of_pages_it_found(tmp_path: Path) -> None:
    docs = _sphinx_tree(tmp_path / "html")
    files, _unsupported, _outside, copies = discover([docs])
    names = sorted(str(f.relative_to(docs)) for f in files)
    # a copy whose page is not there is indexed: it is the only copy of its text
    assert names == ["_sources/orphan.rst.txt", "guide/index.html", "library/x.html",
                     "notes.html"]  # fmt: skip
    left_out = sorted(Path(c).relative_to(docs.resolve()).as_posix() for c in copies)
    assert left_out == ["_sources/guide/index.rst.txt", "_sources/library/x.rst.txt",
                        "_sources/notes.txt"]  # fmt: skip
    # kept on request, and a copy given by name is always read
    assert len(discover([docs], keep_copies=True).files) == 7
    both = discover([docs, docs / "_sources/library/x.rst.txt"])
    assert docs / "_sources/library/x.rst.txt" in both.files and len(both.copies) == 2
    # the folder given is `_sources/` itself: its pages are not in the ingest, nothing is a copy
    assert len(discover([docs / "_sources"]).files) == 4


def test_source_copies_setting_from_the_environment() -> None:
    from rag.config import Settings

    assert Settings().load.source_copies is False
    assert Settings.from_env({"RAG_SOURCE_COPIES": "1"}).load.source_copies is True
    with pytest.raises(UsageError, match="RAG_SOURCE_COPIES"):
        Settings.from_env({"RAG_SOURCE_COPIES": "maybe"})
