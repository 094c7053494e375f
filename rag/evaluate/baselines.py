"""The llama-index baseline: a plain in-memory VectorStoreIndex over the same files.

Default llama-index settings (SentenceSplitter, 1024 tokens, overlap 200; top-k cosine),
with two things held equal so the comparison measures chunking and ranking only: the
embedding model (rag's own Embedder, wrapped) and the text of each file (rag's loaders;
metadata as SimpleDirectoryReader sets it). Answers come from rag's extractive answerer
over the retrieved nodes. Imported only when the baseline is asked for.
"""

from __future__ import annotations

import contextlib
import io
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..config import apply_offline_env
from ..errors import RagError
from ..types import Answer, Chunk, Hit

if TYPE_CHECKING:
    from ..pipeline import Rag

apply_offline_env()  # before llama-index is imported: its bundled tiktoken/NLTK data only

from llama_index.core import Document, Settings, VectorStoreIndex  # noqa: E402
from llama_index.core.base.embeddings.base import BaseEmbedding  # noqa: E402
from pydantic import PrivateAttr  # noqa: E402

log = logging.getLogger(__name__)


class RagEmbedding(BaseEmbedding):
    """rag's Embedder as a llama-index embedding model."""

    _embedder: Any = PrivateAttr()

    def __init__(self, embedder: Any, **kwargs: Any) -> None:
        super().__init__(model_name=embedder.name, **kwargs)
        self._embedder = embedder

    @classmethod
    def class_name(cls) -> str:
        return "RagEmbedding"

    def _get_query_embedding(self, query: str) -> list[float]:
        return self._embedder.embed([self._embedder.query_prefix + query])[0].tolist()

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return self._get_query_embedding(query)

    def _get_text_embedding(self, text: str) -> list[float]:
        return self._embedder.embed([text])[0].tolist()

    def _get_text_embeddings(self, texts: list[str]) -> list[list[float]]:
        return self._embedder.embed(texts).tolist()


class LlamaIndexBaseline:
    """search(question, n) → Hits and ask(question) → Answer, like the evaluator's systems."""

    name = "llamaindex"

    def __init__(self, rag: Rag, k: int) -> None:
        from ..loaders import load_file

        self.rag = rag
        self.k = k
        self._answerer: Any = None
        docs = []
        for source, row in sorted(rag.index.files().items()):
            if row.status != "indexed":
                continue
            loaded = load_file(Path(source), rag.settings.load)
            if not hasattr(loaded, "text"):
                log.warning("llamaindex baseline: skipping %s: %s", source, loaded.reason)
                continue
            docs.append(
                Document(
                    text=loaded.text,
                    metadata={"file_path": source, "file_name": Path(source).name},
                    excluded_embed_metadata_keys=["file_name"],
                    excluded_llm_metadata_keys=["file_name"],
                )
            )
        if not docs:
            raise RagError("the llamaindex baseline found none of the index's files to read")
        # llama-index prints "LLM is explicitly disabled. Using MockLLM." to stdout: that is
        # what we asked for, and stdout is for results
        with contextlib.redirect_stdout(io.StringIO()):
            Settings.llm = None
            Settings.embed_model = RagEmbedding(rag.embedder)
            self.index = VectorStoreIndex.from_documents(docs)
        self.chunks = len(self.index.docstore.docs)

    def search(self, question: str, n: int) -> list[Hit]:
        nodes = self.index.as_retriever(similarity_top_k=n).retrieve(question)
        hits = []
        for rank, nws in enumerate(nodes, start=1):
            node = nws.node
            text = node.get_content()
            start = node.start_char_idx or 0  # type: ignore[attr-defined]
            end = node.end_char_idx or start + len(text)  # type: ignore[attr-defined]
            chunk = Chunk(
                id=node.node_id,
                source=node.metadata.get("file_path", ""),
                text=text,
                start_char=start,
                end_char=end,
                position=rank,
            )
            score = float(nws.score or 0.0)
            hits.append(Hit(chunk=chunk, score=score, rank=rank, dense=score))
        return hits

    def ask(self, question: str) -> Answer:
        t0 = time.perf_counter()
        hits = self.search(question, self.k)
        t1 = time.perf_counter()
        if self._answerer is None:
            self._answerer = self.rag.make_answerer(name="extractive")
        answer = self._answerer.answer(question, hits)
        answer.timings = {"retrieve": t1 - t0, "answer": time.perf_counter() - t1}
        return answer
