"""Files → Documents. Bad files are skipped with a reason, never fatal.

Supported: .txt .text .rst .md .markdown .html .htm .pdf .docx. Text that is not
UTF-8 is decoded by detection. Offsets in a Document refer to its decoded text with
newlines normalised to "\\n".
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import re
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

from .config import LoadSettings
from .errors import UsageError
from .types import Document, Skipped

log = logging.getLogger(__name__)

TEXT_TYPES = {".txt", ".text", ".rst", ".md", ".markdown"}
HTML_TYPES = {".html", ".htm", ".xhtml"}
SUPPORTED = TEXT_TYPES | HTML_TYPES | {".pdf", ".docx"}


# Bumped whenever a loader extracts different text from the same bytes: it is part of every
# file's fingerprint, so the next ingest re-reads each file (2: <dt> terms lead their <dd>).
LOADER_VERSION = 2


def fingerprint() -> Any:
    """A sha256 hasher primed with the loader version; feed it the file's bytes."""
    h = hashlib.sha256()
    h.update(f"rag-loader-{LOADER_VERSION}\n".encode())
    return h


class SkipFile(Exception):
    """Raised inside a loader: the file is skipped with this reason."""


class Discovered(NamedTuple):
    files: list[Path]  # to load, sorted, each file once
    unsupported: list[str]  # files of other types
    outside: list[Skipped]  # links inside a folder to files outside it: not followed
    # Sphinx `_sources/` copies of pages in `files` → the page, not in `files`: loaded only
    # when their page is not indexed after all (see Rag.ingest)
    copies: dict[Path, Path]


# the suffixes a Sphinx source copy's name can end with: the source's own (.rst, .md, .txt,
# .ipynb) and `html_sourcelink_suffix` (".txt" by default): `_sources/library/x.rst.txt`
_SOURCE_SUFFIXES = {".txt", ".rst", ".md", ".ipynb"}


def rendered_page(path: Path) -> list[Path]:
    """Where Sphinx put the page built from `path` if it is a copy of a page's source in
    `_sources/`: `<out>/_sources/<doc>.rst.txt` is `<out>/<doc>.html` (the html builder) or
    `<out>/<doc>/index.html` (dirhtml). Empty for any other file."""
    parts = path.parts
    if "_sources" not in parts[:-1]:
        return []
    at = len(parts) - 1 - parts[::-1].index("_sources")
    out, rel = Path(*parts[:at]), Path(*parts[at + 1 :])
    stem = rel.name
    for _ in range(2):
        root, ext = os.path.splitext(stem)
        if ext.lower() in _SOURCE_SUFFIXES and root:
            stem = root
    if stem == rel.name:
        return []
    return [out / rel.parent / f"{stem}.html", out / rel.parent / stem / "index.html"]


def source_copies(files: Iterable[Path]) -> dict[Path, Path]:
    """The files that are Sphinx source copies of a rendered page also among `files`, each
    with that page: the same text in reST, whose markup (``x``, :func:`y`, directives) the
    reader would see quoted. Only when the page itself is there: a lone `_sources/` folder
    is no copy of anything."""
    files = list(files)
    pages = {p: found for p in files if (found := rendered_page(p))}
    if not pages:  # no `_sources/` here: no file's real path is needed
        return {}
    present = {source_name(p): p for p in files}  # realpath: a link loop does not raise
    out: dict[Path, Path] = {}
    for p, candidates in pages.items():
        for page in candidates:
            if (found := present.get(source_name(page))) is not None:
                out[p] = found
                break
    return out


def discover(paths: Iterable[Path], keep_copies: bool = False) -> Discovered:
    """Files to load under `paths` (sorted, hidden entries skipped), the unsupported ones,
    links to files outside the folder given, and (unless `keep_copies`) the `_sources/`
    copies of rendered pages found in a folder, set apart (a file given by name is always
    among the files to load)."""
    named: set[Path] = set()
    files: list[Path] = []
    unsupported: list[str] = []
    outside: list[Skipped] = []
    for given in paths:
        path = Path(given).expanduser()
        if not path.exists():
            raise not_there(given)
        if path.is_file():
            candidates: Iterable[Path] = [path]
            named.add(path.resolve())
            if path.is_symlink() and _kind(path) in SUPPORTED:
                log.warning(
                    "%s is a link: indexed as its target %s, which stays indexed when the "
                    "link is removed (forget it with `rag delete %s`)",
                    path, source_name(path), source_name(path),
                )  # fmt: skip
        else:
            root = path.resolve()
            candidates = []
            for p in sorted(path.rglob("*")):
                if any(s.startswith(".") for s in p.relative_to(path).parts):
                    continue
                if p.is_symlink() and not p.exists():
                    outside.append(Skipped(str(p.absolute()), _dead_link(p)))
                    continue
                if p.is_symlink() and p.is_dir():
                    # not walked (its files would be keyed by paths outside the folder);
                    # a link to a folder inside is walked as that folder already
                    target = p.resolve()
                    if not target.is_relative_to(root):
                        outside.append(Skipped(str(p.absolute()), (
                            f"a link to the folder {target}/, outside {root}/: not followed "
                            "(ingest that folder by its own path to index it)")))  # fmt: skip
                    continue
                if not p.is_file():
                    continue
                if p.is_symlink():
                    target = p.resolve()
                    if not target.is_relative_to(root):
                        # its key would be the target's path, which no ingest of this folder
                        # would ever forget again
                        outside.append(Skipped(str(p.absolute()), (
                            f"a link to {target}, outside {root}/: not followed (ingest that "
                            "file by name to index it)")))  # fmt: skip
                        continue
                    if any(s.startswith(".") for s in target.relative_to(root).parts):
                        continue  # a link to a hidden file is as hidden as the file
                candidates.append(p)
        for p in candidates:
            (files if _kind(p) in SUPPORTED else unsupported).append(p)
    # the same file given twice (e.g. a folder and a file in it) is loaded once
    seen: set[Path] = set()
    unique = []
    for p in files:
        key = p.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(p)
    copies = {} if keep_copies else source_copies(unique)
    copies = {c: page for c, page in copies.items() if c.resolve() not in named}
    return Discovered(
        [p for p in unique if p not in copies], [source_name(p) for p in unsupported], outside,
        copies,
    )  # fmt: skip


def not_there(given: Path | str) -> UsageError:
    """The error for a path given that is not there (or is a dead link)."""
    path = Path(given).expanduser()
    if path.is_symlink():
        return UsageError(f"{given} is {_dead_link(path)}: point it at a file or folder")
    return UsageError(f"no such file or folder: {given} (check the path)")


def _kind(path: Path) -> str:
    """The file type, by the name of the file itself (a link's target)."""
    return (Path(source_name(path)) if path.is_symlink() else path).suffix.lower()


def _dead_link(link: Path) -> str:
    try:
        os.stat(link)
    except OSError as e:
        if e.errno == errno.ELOOP:
            return "a link loop: it leads back to itself"
    return "a broken link: its target is gone"


def source_name(path: Path) -> str:
    """The stable key of a file in the index: its absolute path, links followed (a link
    loop is left as far as it goes: Path.resolve would raise RuntimeError)."""
    return os.path.realpath(Path(path).expanduser())


def load_file(path: Path, settings: LoadSettings | None = None) -> Document | Skipped:
    """Load one file, or say why it was skipped."""
    settings = settings or LoadSettings()
    source = source_name(path)
    try:
        size = path.stat().st_size
        limit = int(settings.max_file_mb * 1024 * 1024)
        if size > limit:
            return Skipped(
                source,
                f"too large ({size / 1e6:.1f} MB > {settings.max_file_mb:g} MB; "
                "raise it with --max-file-mb)",
            )
        if size == 0:
            return Skipped(source, "empty file")
        data = path.read_bytes()
    except OSError as e:
        return Skipped(source, f"unreadable ({e.strerror or e})")
    suffix = path.suffix.lower()
    try:
        if suffix in HTML_TYPES:
            text, title, headings = _html(data)
            pages: tuple[tuple[int, int], ...] = ()
        elif suffix == ".pdf":
            text, title, pages = _pdf(data)
            headings = ()
        elif suffix == ".docx":
            _check_archive(data, limit)
            text, title, headings = _docx(data)
            pages = ()
        else:
            text = _decode(data)
            headings = _markdown_headings(text) if suffix in {".md", ".markdown"} else ()
            headings = headings or _plain_headings(text)
            title = _first_line_title(text)
            pages = ()
    except SkipFile as e:
        return Skipped(source, str(e))
    except Exception as e:  # a loader library failing on a corrupt file must not stop an ingest
        return Skipped(source, f"could not be parsed ({type(e).__name__}: {e})"[:300])
    if not text.strip():
        return Skipped(source, "no text in it (empty, or only images: OCR it first)")
    return Document(
        source=source,
        text=text,
        title=title or path.stem,
        sha256=_fingerprint_of(data),
        pages=pages,
        headings=tuple(headings),
    )


# --- text ------------------------------------------------------------------------------


def _fingerprint_of(data: bytes) -> str:
    h = fingerprint()
    h.update(data)
    return str(h.hexdigest())


def _utf16_without_bom(sample: bytes) -> str | None:
    """ "utf-16-le"/"utf-16-be" when the NULs of `sample` sit in every other byte, as the
    high bytes of mostly-ASCII UTF-16 text do; None otherwise."""
    n = len(sample) // 2 * 2
    if n < 2:
        return None
    even, odd = sample[0:n:2], sample[1:n:2]
    zeros_even, zeros_odd = even.count(0) / len(even), odd.count(0) / len(odd)
    if zeros_odd > 0.6 and zeros_even < 0.05:
        return "utf-16-le"
    if zeros_even > 0.6 and zeros_odd < 0.05:
        return "utf-16-be"
    return None


def _decode(data: bytes) -> str:
    if b"\x00" in data[:8192] and not data.startswith((b"\xff\xfe", b"\xfe\xff")):
        encoding = _utf16_without_bom(data[:8192])
        if encoding is None:
            raise SkipFile("binary file, not text")
        try:
            text = data.decode(encoding)
        except UnicodeDecodeError:
            raise SkipFile("binary file, not text") from None
        text = text.replace("\r\n", "\n").replace("\r", "\n")
        if _looks_binary(text):
            raise SkipFile("binary file, not text")
        return text
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        from charset_normalizer import from_bytes

        matches = from_bytes(data)
        best = matches.best()
        if best is None:
            raise SkipFile("binary file or unknown text encoding") from None
        # cp1250/cp1252 often tie on short texts; Western Windows text is far more common
        for m in matches:
            if m.encoding in _WESTERN and m.chaos <= best.chaos + 0.02:
                best = m
                break
        text = str(best)
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if _looks_binary(text):
        raise SkipFile("binary file, not text")
    return text


_WESTERN = ("cp1252", "iso8859_15", "latin_1")


def _looks_binary(text: str) -> bool:
    sample = text[:4096]
    if not sample:
        return False
    controls = sum(1 for ch in sample if ord(ch) < 32 and ch not in "\n\t\f\v")
    return controls / len(sample) > 0.05


def _first_line_title(text: str) -> str:
    for line in text.splitlines():
        line = line.strip().lstrip("#").strip()
        if line:
            return line if len(line) <= 100 else ""
    return ""


_MD_HEADING = re.compile(r"^(#{1,6})[ \t]+(.+?)[ \t#]*$", re.M)


def _markdown_headings(text: str) -> list[tuple[int, str]]:
    return [(m.start(), m.group(2).strip()) for m in _MD_HEADING.finditer(text)]


def _plain_headings(text: str) -> list[tuple[int, str]]:
    """Short title-like lines followed by a paragraph: section titles, bylines."""
    out: list[tuple[int, str]] = []
    lines = text.split("\n")
    offset = 0
    starts = []
    for line in lines:
        starts.append(offset)
        offset += len(line) + 1
    # the length of the next non-blank line after each line, found in one backward pass
    # (a forward search from every line is quadratic on text of many short lines)
    next_len = [0] * len(lines)
    following = 0
    for i in range(len(lines) - 1, -1, -1):
        next_len[i] = following
        if lines[i].strip():
            following = len(lines[i].strip())
    for i, line in enumerate(lines):
        s = line.strip()
        if not s or len(s) > 90 or len(s.split()) > 14 or not s[0].isupper():
            continue
        if s.rstrip("”\"')]").endswith((".", ",", ";", ":", "?", "!")) and not s.endswith(".)"):
            continue
        if next_len[i] > 120:
            out.append((starts[i] + line.index(s[0]), s))
    return out


# --- HTML ------------------------------------------------------------------------------

_DROP_TAGS = [
    "script", "style", "noscript", "template", "svg", "nav", "footer", "aside", "form",
    "iframe", "button", "select", "input", "head",
]  # fmt: skip
_DROP_ROLES = {"navigation", "banner", "contentinfo", "complementary", "search", "menu"}
_DROP_CLASS = re.compile(
    r"(^|[-_ ])(sidebar|sphinxsidebar|related|footer|navbar|nav|menu|breadcrumbs?|toc|"
    r"cookie|headerlink|skip-link|advert|ads|share|social)([-_ ]|$)",
    re.I,
)
_BLOCK = {
    "p", "div", "section", "article", "main", "li", "ul", "ol", "dl", "dt", "dd", "table",
    "tr", "blockquote", "figure", "figcaption", "header", "body", "html", "details", "summary",
    "caption", "thead", "tbody", "tfoot", "hr", "address",
}  # fmt: skip
_HEADINGS = {"h1", "h2", "h3", "h4", "h5", "h6"}
_WS = re.compile(r"\s+")


def _html(data: bytes) -> tuple[str, str, list[tuple[int, str]]]:
    from bs4 import BeautifulSoup, Comment, NavigableString, Tag

    soup = BeautifulSoup(data, "lxml")
    title = soup.title.get_text(" ", strip=True) if soup.title else ""
    for tag in soup.find_all(_DROP_TAGS):
        tag.decompose()
    for tag in soup.find_all(True):
        # not `tag.decomposed`: on a Tag, a missing attribute is a subtree search, which
        # made deeply nested pages quadratic
        if vars(tag).get("_decomposed"):
            continue
        attrs = tag.attrs or {}
        role = str(attrs.get("role", "")).lower()
        cls = " ".join(attrs.get("class", []) or []) + " " + str(attrs.get("id", ""))
        if role in _DROP_ROLES or (_DROP_CLASS.search(cls) and tag.name not in {"body", "html"}):
            tag.decompose()
    root = (
        soup.find("main")
        or soup.find(attrs={"role": "main"})
        or soup.find("article")
        or soup.find("div", class_="body")
        or soup.body
        or soup
    )
    out: list[str] = []
    length = 0
    headings: list[tuple[int, str]] = []
    inline: list[str] = []
    terms: list[str] = []  # a definition list's terms (<dt>), waiting for their definition

    def emit(block: str) -> None:
        nonlocal length
        if out:
            out.append("\n\n")
            length += 2
        out.append(block)
        length += len(block)

    def flush() -> None:
        text = _WS.sub(" ", "".join(inline)).strip()
        inline.clear()
        if text and terms:
            # a definition's first paragraph is led by the term it defines, so that a sentence
            # quoted from it names its subject ("textwrap.dedent(text) — Remove any …")
            text = f"{'; '.join(terms)} — {text}"
            terms.clear()
        if text:
            emit(text)

    def flush_terms() -> None:
        if terms:
            emit("; ".join(terms))
            terms.clear()

    def end_term() -> None:
        term = _WS.sub(" ", "".join(inline)).strip()
        inline.clear()
        if term:
            terms.append(term)

    def walk(top: Tag) -> None:
        # depth-first with an explicit stack: pages nest thousands of levels deep
        stack: list[tuple[Iterator[Any], Callable[[], None] | None]] = [(iter(top.children), None)]
        while stack:
            children, after = stack[-1]
            child = next(children, None)
            if child is None:
                stack.pop()
                if after is not None:
                    after()
                continue
            if isinstance(child, Comment):
                continue
            if isinstance(child, NavigableString):
                inline.append(str(child))
                continue
            if not isinstance(child, Tag):
                continue
            name = child.name
            if name == "dt":
                flush()
                stack.append((iter(child.children), end_term))
            elif name in _HEADINGS:
                flush()
                flush_terms()
                text = _WS.sub(" ", child.get_text(" ")).strip()
                if text:
                    emit(text)
                    headings.append((length - len(text), text))
            elif name == "pre":
                flush()
                flush_terms()
                code = child.get_text().strip("\n")
                if code.strip():
                    emit(code)
            elif name == "br":
                inline.append("\n")
            elif name in {"td", "th"}:
                inline.append(" ")
                stack.append((iter(child.children), lambda: inline.append(" ")))
            elif name in _BLOCK:
                flush()
                stack.append((iter(child.children), flush))
            else:
                stack.append((iter(child.children), None))

    if isinstance(root, Tag):
        walk(root)
    flush()
    flush_terms()
    text = "".join(out)
    if not title and headings:
        title = headings[0][1]
    return text, title, headings


# --- PDF and DOCX ----------------------------------------------------------------------


def _pdf(data: bytes) -> tuple[str, str, tuple[tuple[int, int], ...]]:
    import io
    import logging

    from pypdf import PdfReader

    logging.getLogger("pypdf").setLevel(logging.ERROR)
    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted and not reader.decrypt(""):
            raise SkipFile("encrypted PDF (decrypt it first)")
        pages_text = [(page.extract_text() or "") for page in reader.pages]
    except SkipFile:
        raise
    except Exception as e:
        raise SkipFile(f"corrupt or unreadable PDF ({type(e).__name__}: {e})"[:300]) from None
    parts: list[str] = []
    pages: list[tuple[int, int]] = []
    length = 0
    for number, page_text in enumerate(pages_text, start=1):
        page_text = page_text.replace("\r\n", "\n").strip()
        if not page_text:
            continue
        if parts:
            parts.append("\n\n")
            length += 2
        pages.append((length, number))
        parts.append(page_text)
        length += len(page_text)
    title = ""
    try:
        meta = reader.metadata
        title = (meta.title or "").strip() if meta else ""
    except Exception:
        title = ""
    return "".join(parts), title, tuple(pages)


ARCHIVE_RATIO = 200  # deflated office XML shrinks ~10x; a member that shrank 200x is a bomb


def _check_archive(data: bytes, limit: int) -> None:
    """Refuse a zip (DOCX) that would unpack to more than 4x the file size limit, or holds a
    member compressed so far it can only be a zip bomb: checked before anything unpacks."""
    import io
    import zipfile

    try:
        members = zipfile.ZipFile(io.BytesIO(data)).infolist()
    except zipfile.BadZipFile as e:
        raise SkipFile(f"corrupt or unreadable DOCX (BadZipFile: {e})"[:300]) from None
    total = sum(m.file_size for m in members)
    if total > 4 * limit:
        raise SkipFile(
            f"unpacks to {total / 1e6:.0f} MB (more than 4 x {limit / 1e6:.0f} MB); "
            "raise --max-file-mb if the file is genuine"
        )
    for m in members:
        if m.file_size > 1 << 20 and m.file_size > ARCHIVE_RATIO * max(m.compress_size, 1):
            raise SkipFile(
                f"{m.filename} inside expands {m.file_size // max(m.compress_size, 1)}x "
                f"({m.file_size / 1e6:.0f} MB): a zip bomb, not a document"
            )


def _docx(data: bytes) -> tuple[str, str, list[tuple[int, str]]]:
    import io
    import zipfile

    try:
        import docx

        document = docx.Document(io.BytesIO(data))
    except (zipfile.BadZipFile, KeyError, ValueError) as e:
        raise SkipFile(f"corrupt or unreadable DOCX ({type(e).__name__}: {e})"[:300]) from None
    blocks: list[str] = []
    headings: list[tuple[int, str]] = []
    length = 0
    title = ""

    def add(text: str, heading: bool = False) -> None:
        nonlocal length
        text = text.strip()
        if not text:
            return
        if blocks:
            length += 2
        if heading:
            headings.append((length, text))
        blocks.append(text)
        length += len(text)

    for para in document.paragraphs:
        style = (para.style.name if para.style is not None else "") or ""
        is_heading = style.startswith("Heading") or style == "Title"
        if style == "Title" and not title:
            title = para.text.strip()
        add(para.text, heading=is_heading)
    for table in document.tables:
        for row in table.rows:
            add(" | ".join(cell.text.strip() for cell in row.cells))
    core_title = (document.core_properties.title or "").strip()
    return "\n\n".join(blocks), core_title or title, headings
