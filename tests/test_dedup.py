"""Near-duplicate passages (an HTML page and its reST source) are shown once."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from rag.dedup import DUPLICATE, collapse, markup, overlap, shingles
from rag.pipeline import Rag
from rag.types import Chunk

from .conftest import ROOT, settings_for

PYDOCS = ROOT / "evals" / "corpora" / "pydocs"

RENDERED = (
    "Simple lightweight unbounded function cache. Sometimes called “memoize”. Returns the "
    "same as lru_cache(maxsize=None), creating a thin wrapper around a dictionary lookup for "
    "the function arguments. Because it never needs to evict old values, this is smaller and "
    "faster than lru_cache() with a size limit."
)
SOURCE = (
    "Simple lightweight unbounded function cache.  Sometimes called\n   "
    '`"memoize" <https://en.wikipedia.org/wiki/Memoization>`_.\n\n   Returns the same as '
    "``lru_cache(maxsize=None)``, creating a thin\n   wrapper around a dictionary lookup for "
    "the function arguments.  Because it\n   never needs to evict old values, this is smaller "
    "and faster than\n   :func:`lru_cache()` with a size limit.\n\n   For example::"
)
OTHER = (
    "The heapq module provides an implementation of the heap queue algorithm, also known as "
    "the priority queue algorithm. Heaps are binary trees for which every parent node has a "
    "value less than or equal to any of its children."
)


def _chunk(i: str, source: str, text: str) -> Chunk:
    return Chunk(i, source, text, 0, len(text))


def test_overlap_by_hand() -> None:
    a = shingles("one two three four")  # (one two three), (two three four)
    b = shingles("two three four five six")  # (two three four), (three four five), ...
    assert overlap(a, b) == pytest.approx(1 / 2)
    assert overlap(a, a) == 1.0
    assert overlap(a, frozenset()) == 0.0
    assert shingles("Hello, World!") == frozenset({("hello", "world")})


def test_markup_counts_rest_marks_not_prose() -> None:
    assert markup(RENDERED) == 0.0
    assert markup(SOURCE) > 0.05
    # marks: ** ** `` `` :func:` (5); words: use bold and code and func len (7)
    assert markup("Use **bold** and ``code`` and :func:`len`.") == pytest.approx(5 / 7)


def test_rendered_copy_is_kept_in_place_of_the_better_ranked_source() -> None:
    chunks = {
        "src": _chunk("src", "_sources/library/functools.rst.txt", SOURCE),
        "other": _chunk("other", "library/heapq.html", OTHER),
        "html": _chunk("html", "library/functools.html", RENDERED),
    }
    assert overlap(shingles(SOURCE), shingles(RENDERED)) >= DUPLICATE
    groups = collapse(["src", "other", "html"], chunks)
    assert [(g.kept, g.first, g.also_in) for g in groups] == [
        ("html", "src", ("_sources/library/functools.rst.txt",)),
        ("other", "other", ()),
    ]


def test_same_document_and_different_text_are_not_collapsed() -> None:
    chunks = {
        "a": _chunk("a", "x.html", RENDERED),
        "b": _chunk("b", "x.html", RENDERED),  # one file: a repeated block, not a copy
        "c": _chunk("c", "y.html", OTHER),
    }
    assert [g.kept for g in collapse(["a", "b", "c"], chunks)] == ["a", "b", "c"]
    # missing from the catalog: kept as it is
    assert [g.kept for g in collapse(["gone", "a"], chunks)] == ["gone", "a"]


def test_two_pages_quoting_one_sentence_stay_apart() -> None:
    shared = "Because it never needs to evict old values, this is smaller and faster."
    a = f"{OTHER} {shared}"
    b = (
        f"{shared} Dictionaries are mutable mappings from keys to values, created with "
        "braces or with dict(); a key must be hashable, and looking one up is fast."
    )
    assert overlap(shingles(a), shingles(b)) < DUPLICATE
    chunks = {"a": _chunk("a", "a.html", a), "b": _chunk("b", "b.html", b)}
    assert len(collapse(["a", "b"], chunks)) == 2


@pytest.mark.slow
def test_search_shows_the_html_page_once_with_its_source_as_also_in(tmp_path: Path) -> None:
    """A folder as Python's docs ship it, the page and its `_sources/` copy both indexed
    (`--source-copies`: by default the copy is left out at ingest)."""
    docs = tmp_path / "docs"
    for rel in ("library/functools.html", "_sources/library/functools.rst.txt",
                "library/heapq.html"):  # fmt: skip
        (docs / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(PYDOCS / rel, docs / rel)
    rag = Rag(settings_for(tmp_path / "index").with_(load={"source_copies": True}))
    rag.ingest([docs])
    for mode in ("hybrid", "dense", "keyword"):
        hits = rag.search("unbounded function cache memoize lru_cache maxsize None", k=5,
                          mode=mode)  # type: ignore[arg-type]  # fmt: skip
        top = hits[0]
        assert top.chunk.source.endswith("library/functools.html"), mode
        folded = [h for h in hits if any(s.endswith("functools.rst.txt") for s in h.also_in)]
        assert folded and all(h.chunk.source.endswith(".html") for h in folded), mode
        texts = [h.chunk.text for h in hits]
        for i, a in enumerate(texts):
            for b in texts[i + 1 :]:
                assert overlap(shingles(a), shingles(b)) < DUPLICATE, mode
        assert folded[0].to_json()["also_in"] == list(folded[0].also_in)


def test_a_copy_straddling_two_chunks_is_folded_into_the_one_it_shares_most_with() -> None:
    """A reST chunk can span the end of one HTML chunk and the start of the next: neither
    holds half of it alone, both together hold all of it."""
    first, second = OTHER, RENDERED
    straddle = " ".join(first.split()[-12:] + second.split()[:30])  # more of `second`
    chunks = {
        "a": _chunk("a", "library/x.html", first),
        "src": _chunk("src", "_sources/library/x.rst.txt", f"``{straddle}``"),
        "b": _chunk("b", "library/x.html", second),
    }
    g = shingles(straddle)
    assert overlap(g, shingles(first)) < DUPLICATE and overlap(g, shingles(second)) < 1.0
    groups = collapse(["a", "src", "b"], chunks)
    assert [(x.kept, x.first, x.also_in) for x in groups] == [
        ("a", "a", ()),
        ("b", "src", ("_sources/library/x.rst.txt",)),
    ]


def test_also_in_is_shown_in_the_app_and_the_cli() -> None:
    from rag.cli import _print_sources
    from rag.types import Answer, Citation, Hit
    from rag.ui.render import passage_html

    hit = Hit(_chunk("h", "library/functools.html", RENDERED), 0.9, 1,
              also_in=("_sources/library/functools.rst.txt",))  # fmt: skip
    shown = passage_html(hit, "s1", "1")
    assert 'class="also-in">also in <span title="_sources/library/functools.rst.txt">' in shown
    answer = Answer("q", f"{RENDERED} [1]", False, [Citation(1, hit, RENDERED)], "extractive")
    import click.testing

    out = click.testing.CliRunner().invoke(click.command()(lambda: _print_sources(answer)))
    assert "also in: _sources/library/functools.rst.txt" in out.output


def test_tiny_chunks_are_never_folded() -> None:
    chunks = {
        "a": _chunk("a", "x.html", "Navigation"),
        "b": _chunk("b", "_sources/y.rst.txt", "**Navigation**"),
    }
    assert [g.kept for g in collapse(["b", "a"], chunks)] == ["b", "a"]
