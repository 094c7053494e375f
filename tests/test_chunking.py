from __future__ import annotations

import itertools
from functools import cache

import pytest

from rag.chunking import chunk_document, split_sentences
from rag.config import ChunkSettings, EmbedSettings
from rag.embeddings import make_embedder
from rag.types import Document


@cache
def embedder():  # type: ignore[no-untyped-def]
    return make_embedder(EmbedSettings())


def sentences(text: str) -> list[str]:
    return [text[s.start : s.end] for s in split_sentences(text)]


def test_sentence_split_keeps_abbreviations() -> None:
    text = (
        'U.S. President Donald Trump claimed, "We will receive $350 billion up front." '
        "Dr. Smith agreed. The Korea-U.S. technology council meets e.g. twice a year! Does it?"
    )
    assert sentences(text) == [
        'U.S. President Donald Trump claimed, "We will receive $350 billion up front."',
        "Dr. Smith agreed.",
        "The Korea-U.S. technology council meets e.g. twice a year!",
        "Does it?",
    ]


def test_sentence_split_lines() -> None:
    text = "A Heading\nThe first sentence ends here. Second one.\n\nNew paragraph"
    assert sentences(text) == [
        "A Heading",
        "The first sentence ends here.",
        "Second one.",
        "New paragraph",
    ]
    wrapped = (
        "This sentence is hard wrapped by an old-fashioned text editor at about seventy\n"
        "columns and goes on."
    )
    assert sentences(wrapped) == [wrapped]


def _doc(text: str, headings: tuple[tuple[int, str], ...] = ()) -> Document:
    return Document(source="/x.txt", text=text, title="Doc", sha256="0" * 64, headings=headings)


def test_chunks_are_exact_slices_within_token_budget() -> None:
    e = embedder()
    text = " ".join(
        f"Sentence number {i} talks about topic {i % 7} in some detail." for i in range(300)
    )
    doc = _doc(text)
    settings = ChunkSettings(size=128, overlap=24)
    chunks = chunk_document(doc, e.token_offsets, settings)
    assert len(chunks) > 5
    for c in chunks:
        assert doc.text[c.start_char : c.end_char] == c.text
        # context prefix + text + [CLS]/[SEP] fit the model's budget
        assert len(e.token_offsets([c.embedding_text()])[0]) + 2 <= settings.size
        assert c.text[0].isupper() and c.text.endswith(".")  # whole sentences
    # overlap: each chunk starts inside the previous one, and the text advances
    for a, b in itertools.pairwise(chunks):
        assert a.start_char < b.start_char <= a.end_char
    assert chunks[-1].end_char == len(text)
    assert [c.position for c in chunks] == list(range(len(chunks)))
    assert len({c.id for c in chunks}) == len(chunks)


def test_headings_start_chunks_and_are_carried() -> None:
    e = embedder()
    part1 = "Intro\n" + "Alpha facts are described here in one sentence. " * 30
    part2 = "Beta Section\n" + "Beta facts are described here in one sentence. " * 30
    text = part1 + "\n" + part2
    doc = _doc(text, headings=((0, "Intro"), (len(part1) + 1, "Beta Section")))
    chunks = chunk_document(doc, e.token_offsets, ChunkSettings(size=256, overlap=32))
    beta = [c for c in chunks if c.heading == "Beta Section"]
    assert beta and beta[0].text.startswith("Beta Section")
    assert all("Alpha" not in c.text for c in beta)
    assert beta[0].context() == "Doc — Beta Section"


def test_overlong_sentence_is_cut() -> None:
    e = embedder()
    text = "word " * 2000
    chunks = chunk_document(
        _doc(text.strip()), e.token_offsets, ChunkSettings(size=128, overlap=16)
    )
    assert len(chunks) >= 15
    assert all(len(e.token_offsets([c.embedding_text()])[0]) + 2 <= 128 for c in chunks)


@pytest.mark.parametrize("size", [64, 256, 512])
def test_chunk_size_setting(size: int) -> None:
    e = embedder()
    text = " ".join(f"Fact {i} is a short sentence." for i in range(400))
    chunks = chunk_document(_doc(text), e.token_offsets, ChunkSettings(size=size, overlap=8))
    longest = max(len(e.token_offsets([c.embedding_text()])[0]) for c in chunks)
    assert size * 0.6 <= longest + 2 <= size
