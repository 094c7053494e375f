"""The keyword index's text side: a chunk's terms, and BM25 built over them.

Terms are what `bm25s.tokenize` makes (English stop words out, Snowball stems). The catalog
caches each chunk's terms as int32 ids into a vocabulary it keeps too, so an ingest that
changes one file tokenizes that file's chunks only, and a rebuild reads ids, not text.

`build` gives a `bm25s.BM25` that scores exactly as `bm25s.BM25().index(...)` does (Lucene
BM25, k1 = 1.5, b = 0.75; checked by tests/test_keyword.py), with the score matrix computed
in a few numpy operations instead of bm25s's loop over documents (32k chunks: 0.4 s instead of
3.3 s; the whole rebuild at 134k chunks 2.7–3.2 s instead of 28–30 s, docs/benchmarks.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .text import stemmer

# Bump when `terms` changes what it makes: a catalog's cached terms are then made again.
FORMAT = 1
_ID = np.dtype("<i4")  # how a term id is stored


def fingerprint() -> str:
    """What made the cached terms: this code's format and the tokenizer's and stemmer's
    versions (another version may stem a word otherwise)."""
    from importlib.metadata import version

    return f"{FORMAT}; bm25s {version('bm25s')}; PyStemmer {version('PyStemmer')}"


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


def encode(entry: str, vocab: dict[str, int]) -> bytes:
    """An entry's terms as int32 ids into `vocab` (new terms are added to it), as stored."""
    add = vocab.setdefault
    return np.fromiter((add(w, len(vocab)) for w in entry.split()), _ID).tobytes()


def build(entries: Sequence[str], k1: float = 1.5, b: float = 0.75) -> Any:
    """A bm25s retriever over `entries` (the strings `terms` makes), one document each."""
    vocab: dict[str, int] = {}
    return build_from_ids([encode(e, vocab) for e in entries], vocab, k1, b)


def build_from_ids(docs: Sequence[bytes], vocab: dict[str, int], k1: float = 1.5,
                   b: float = 0.75) -> Any:  # fmt: skip
    """A bm25s retriever over documents given as int32 term ids (`encode`) into `vocab`,
    whose ids run from 0 to len(vocab) - 1 (a term no document holds any more scores 0).
    ValueError, saying what, when the ids do not fit the vocabulary (a damaged cache)."""
    import bm25s

    n_docs, n_vocab = len(docs), len(vocab)
    if n_vocab and (min(vocab.values()) != 0 or max(vocab.values()) != n_vocab - 1):
        raise ValueError("the vocabulary's ids are not 0..n-1")
    sizes = np.fromiter(map(len, docs), np.int64, n_docs)
    if (sizes % _ID.itemsize).any():
        raise ValueError("an entry is not a whole number of term ids")
    lengths = sizes // _ID.itemsize
    token = np.frombuffer(b"".join(docs), _ID).astype(np.int64)
    if token.size and (token.min() < 0 or token.max() >= n_vocab):
        raise ValueError("an entry names a term the vocabulary does not hold")
    doc = np.repeat(np.arange(n_docs, dtype=np.int64), lengths)
    # one (term, document) pair per distinct occurrence, sorted by term then document: the
    # column-major order of bm25s's (documents × terms) CSC matrix
    rows = max(n_docs, 1)
    pair, tf = np.unique(token * rows + doc, return_counts=True)
    term, doc = pair // rows, pair % rows
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
    retriever.vocab_dict = {**vocab, "": n_vocab}  # bm25s's empty token, as index() adds it
    retriever.unique_token_ids_set = set(retriever.vocab_dict.values())
    return retriever
