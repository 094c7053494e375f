"""The keyword index's text side: a chunk's terms, and BM25 built over them.

Terms are what `bm25s.tokenize` makes (English stop words out, Snowball stems), kept per
chunk as one space-separated string so the catalog can cache them: an ingest that changes
one file tokenizes that file's chunks only, not every chunk again.

`build` gives a `bm25s.BM25` that scores exactly as `bm25s.BM25().index(...)` does (Lucene
BM25, k1 = 1.5, b = 0.75; checked by tests/test_keyword.py), with the score matrix computed
in a few numpy operations instead of bm25s's loop over documents (32k chunks: 0.4 s instead of
3.3 s, docs/benchmarks.md#scale).
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from .text import stemmer


def chunk_text(title: str, heading: str, text: str) -> str:
    """What a chunk's keyword entry is made from."""
    return f"{title}\n{heading}\n{text}"


def digest(text: str) -> int:
    """Tells a cached entry from one made of other text (CRC-32)."""
    return zlib.crc32(text.encode("utf-8", "surrogatepass"))


def terms(texts: Sequence[str]) -> list[str]:
    """Each text's terms, in order, as one space-separated string (terms hold no spaces)."""
    import bm25s

    if not texts:
        return []
    tokens = bm25s.tokenize(
        list(texts), stopwords="en", stemmer=stemmer(), show_progress=False, return_ids=False
    )
    return [" ".join(t) for t in tokens]


def query_terms(query: str) -> list[str]:
    return terms([query])[0].split()


def build(entries: Sequence[str], k1: float = 1.5, b: float = 0.75) -> Any:
    """A bm25s retriever over `entries` (the strings `terms` makes), one document each."""
    import bm25s

    words = " ".join(entries).split()
    vocab = {w: i for i, w in enumerate(dict.fromkeys(words))}  # first-seen order
    n_docs, n_vocab = len(entries), len(vocab)
    lengths = np.fromiter((e.count(" ") + 1 if e else 0 for e in entries), np.int64, n_docs)
    token = np.fromiter(map(vocab.__getitem__, words), np.int64, len(words))
    doc = np.repeat(np.arange(n_docs, dtype=np.int64), lengths)
    # one (term, document) pair per distinct occurrence, sorted by term then document: the
    # column-major order of bm25s's (documents × terms) CSC matrix
    pair, tf = np.unique(token * max(n_docs, 1) + doc, return_counts=True)
    term, doc = pair // max(n_docs, 1), pair % max(n_docs, 1)
    df = np.bincount(term, minlength=n_vocab)
    idf = np.log(1 + (n_docs - df + 0.5) / (df + 0.5)).astype(np.float32)
    tf32 = tf.astype(np.float32)
    avg = lengths.mean() if n_docs else 1.0
    tfc = tf32 / (k1 * ((1 - b) + b * lengths[doc] / avg) + tf32)
    retriever = bm25s.BM25(k1=k1, b=b)
    retriever.scores = {
        "data": (idf[term] * tfc).astype(np.float32),
        "indices": doc.astype(np.int32),
        "indptr": np.concatenate([[0], np.cumsum(df)]).astype(np.int64),
        "num_docs": n_docs,
    }
    retriever.nonoccurrence_array = None
    vocab[""] = n_vocab  # bm25s's empty token, as `index(create_empty_token=True)` adds it
    retriever.vocab_dict = vocab
    retriever.unique_token_ids_set = set(vocab.values())
    return retriever
