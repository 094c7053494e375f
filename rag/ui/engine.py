"""What the app does, without Gradio: ask, stream, upload, delete, re-index, check the LLM.

Every call runs on one of three small thread pools, so a question is answered while an
ingest or an evaluation runs. Each pool thread keeps its own `Rag` (its own catalog
connection and Chroma client, so a reader never sees a writer's open transaction), and all
of them share one embedding model: it is the bulk of the memory, and stateless.
"""

from __future__ import annotations

import contextlib
import filecmp
import json
import os
import queue
import re
import shutil
import threading
import unicodedata
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

from ..config import Mode, Settings
from ..errors import RagError, UsageError
from ..pipeline import Rag
from ..rerank import LazyReranker
from ..types import Answer, Draft, IngestReport

T = TypeVar("T")
Progress = Callable[[str, int, int], None]
_DONE = object()


@dataclass(frozen=True)
class LLMChoice:
    """Which answerer a question uses: extractive (url None) or an OpenAI-compatible endpoint."""

    url: str | None = None
    model: str | None = None
    gguf: str | None = None  # a local model file, when the server was started with one

    @property
    def writes(self) -> bool:
        """A model writes the answer (and can write a guess to search for): an endpoint
        or a local model file; a model name alone answers by quoting, as `_answerer` does."""
        return bool(self.url or self.gguf)


@dataclass(frozen=True)
class Saved:
    name: str  # the sanitized file name in the documents folder
    replaced: bool  # a different file of that name was there: this is its new version


class Engine:
    """The app's one entry to the pipeline: thread-safe, shared by every browser session."""

    def __init__(self, settings: Settings, docs_dir: Path, ask_workers: int = 2) -> None:
        self.settings = settings
        self.docs_dir = Path(docs_dir).expanduser().resolve()
        self._local = threading.local()
        self._ask_workers = ask_workers
        self._pools = {
            "ask": ThreadPoolExecutor(ask_workers, thread_name_prefix="rag-ask"),
            "write": ThreadPoolExecutor(1, thread_name_prefix="rag-write"),
            "eval": ThreadPoolExecutor(1, thread_name_prefix="rag-eval"),
        }
        self._llm_lock = threading.Lock()
        self._embedder: Any = None
        self._embedder_lock = threading.Lock()
        r = settings.retrieve
        self._reranker = LazyReranker(r.rerank_window, settings.embed.threads)  # shared too
        # one answerer per LLM choice, shared by the question threads (they are thread-safe);
        # a local model's llama-server is started by its answerer and stopped by close()
        self._answerers: dict[LLMChoice, Any] = {}

    # --- running work on the pools -----------------------------------------------------

    def _rag(self) -> Rag:
        rag = getattr(self._local, "rag", None)
        if rag is None:
            try:
                embedder = self._shared_embedder()
            except RagError:  # e.g. an embeddings endpoint that is down: say so when needed
                return Rag(self.settings)
            rag = self._local.rag = Rag(self.settings, embedder=embedder, reranker=self._reranker)
        return rag

    def embedder(self) -> Any:
        """The embedder every question thread shares (loaded on first need; raises
        EmbeddingError when it cannot be had, e.g. an --embed-url that is down)."""
        return self._shared_embedder()

    def _shared_embedder(self) -> Any:
        with self._embedder_lock:
            if self._embedder is None:
                from ..embeddings import make_embedder

                self._embedder = make_embedder(self.settings.embed, self.settings.answer.api_key)
            return self._embedder

    def run(self, pool: str, fn: Callable[[Rag], T]) -> T:
        """Run `fn(rag)` on a thread of `pool` and wait for its result (or exception)."""
        return self._pools[pool].submit(lambda: fn(self._rag())).result()

    def run_with_progress(
        self, pool: str, fn: Callable[[Rag, Progress], T], on_progress: Progress
    ) -> T:
        """Like `run`, calling `on_progress` on the *caller's* thread as the work reports it."""
        events: queue.Queue[tuple[str, int, int]] = queue.Queue()
        future: Future[T] = self._pools[pool].submit(
            lambda: fn(self._rag(), lambda s, d, t: events.put((s, d, t)))
        )
        while not future.done() or not events.empty():
            with contextlib.suppress(queue.Empty):
                on_progress(*events.get(timeout=0.1))
        return future.result()

    def warm_up(self) -> None:
        """Open the model and the index on the question threads now, not at the first question."""

        def touch() -> None:
            rag = self._rag()
            if rag.index_exists():
                rag.search("warm up", k=1, rerank=self.settings.answer.rerank)  # as asks do

        for _ in range(self._ask_workers):
            self._pools["ask"].submit(touch)

    def close(self) -> None:
        for pool in self._pools.values():
            pool.shutdown(wait=False, cancel_futures=True)
        with self._llm_lock:
            for answerer in self._answerers.values():
                answerer.close()
            self._answerers.clear()

    # --- questions ---------------------------------------------------------------------

    def ask_stream(
        self,
        question: str,
        *,
        k: int,
        mode: Mode,
        llm: LLMChoice,
        history: Sequence[dict[str, str]] = (),
        sources: Sequence[str] | None = None,
        expand: bool | None = None,
    ) -> Iterator[str | Draft | Answer]:
        """The answer's text pieces as they come, then the Answer (as `Rag.ask_stream`);
        `sources`: only these documents; `expand`: search also for the LLM's hypothetical
        answer (default: the settings')."""
        if not question.strip():
            raise UsageError("the question is empty: type a question")
        if expand is None:  # RAG_EXPAND=1: only where a model answers (it writes the guess)
            expand = self.settings.retrieve.expand and llm.writes
        out: queue.Queue[Any] = queue.Queue()

        def work() -> None:
            try:
                rag = self._rag()
                answerer = self._answerer(rag, llm)
                for piece in rag.ask_stream(
                    question, k=k, mode=mode, history=list(history), answerer=answerer,
                    sources=sources, expand=expand,
                ):  # fmt: skip
                    out.put(piece)
            except BaseException as e:
                out.put(e)
            out.put(_DONE)

        self._pools["ask"].submit(work)
        while (item := out.get()) is not _DONE:
            if isinstance(item, BaseException):
                raise item
            yield item

    def _answerer(self, rag: Rag, llm: LLMChoice) -> Any:
        """The answerer for `llm` (extractive, an endpoint, or a local GGUF), made once."""
        with self._llm_lock:
            if llm not in self._answerers:
                extractive: dict[str, Any] = {"llm_url": None, "llm_model": None, "llm_gguf": None}
                if llm.url:
                    extractive.update(llm_url=llm.url, llm_model=llm.model or None)
                elif llm.gguf:
                    extractive.update(llm_gguf=Path(llm.gguf))
                settings = replace(self.settings.answer, **extractive)
                self._answerers[llm] = rag.make_answerer(settings)
            return self._answerers[llm]

    # --- documents ---------------------------------------------------------------------

    def files(self) -> dict[str, Any]:
        """Every file the index knows: source → FileRow (status, chunks, reason)."""
        return self.run("ask", lambda rag: rag.files())

    def titles(self, sources: Sequence[str] | None = None) -> dict[str, str]:
        """source → the title to show (its own, else its opening words)."""
        return self.run("ask", lambda rag: rag.titles(sources))

    def status(self) -> dict[str, Any]:
        return self.run("ask", lambda rag: rag.status())

    def save_uploads(self, paths: Sequence[Path | str]) -> tuple[list[Saved], list[str]]:
        """Copy uploaded files into the documents folder. Returns (saved, refusals)."""
        from ..loaders import SUPPORTED

        self.docs_dir.mkdir(parents=True, exist_ok=True)
        limit = self.settings.load.max_file_mb
        saved, refused = [], []
        for given in paths:
            path = Path(given)
            name = safe_name(path.name)
            if Path(name).suffix.lower() not in SUPPORTED:
                kinds = ", ".join(sorted(SUPPORTED))
                refused.append(f"{path.name}: not a supported type (use {kinds})")
                continue
            size = path.stat().st_size
            if size > limit * 1024 * 1024:
                refused.append(f"{path.name}: too large ({size / 1e6:.1f} MB > {limit:g} MB)")
                continue
            target = self.docs_dir / name
            if target.is_symlink() or target.resolve().parent != self.docs_dir:
                refused.append(f"{path.name}: {name} is not a plain file in the documents folder")
                continue
            replaced = target.exists() and not filecmp.cmp(path, target, shallow=False)
            tmp = self.docs_dir / f".{name}.upload"
            shutil.copyfile(path, tmp)
            os.replace(tmp, target)  # whole or not at all, even if the server stops mid-copy
            saved.append(Saved(name, replaced))
        return saved, refused

    def ingest_docs(self, on_progress: Progress) -> IngestReport:
        """Index what changed in the documents folder."""
        self.docs_dir.mkdir(parents=True, exist_ok=True)
        return self.run_with_progress(
            "write", lambda rag, p: rag.ingest([self.docs_dir], progress=p), on_progress
        )

    def reindex(self, on_progress: Progress) -> IngestReport:
        """Index what changed under every folder the index was built from."""

        def work(rag: Rag, progress: Progress) -> IngestReport:
            roots = [Path(r) for r in (rag.status()["roots"] if rag.index_exists() else [])]
            roots = [r for r in roots if r.exists()]
            if self.docs_dir.exists() and not any(_within(self.docs_dir, r) for r in roots):
                roots.append(self.docs_dir)
            if not roots:
                raise UsageError("nothing to index yet: upload documents first")
            return rag.ingest(roots, progress=progress)

        return self.run_with_progress("write", work, on_progress)

    def delete(self, source: str) -> str:
        """Forget one document; delete its file too when it is in the documents folder."""

        def work(rag: Rag) -> str:
            path = Path(source)
            inside = path.parent == self.docs_dir
            if inside:
                path.unlink(missing_ok=True)
            chunks = rag.delete([source])
            kept = "" if inside else " (the file itself is outside the documents folder: kept)"
            noun = "chunk" if chunks == 1 else "chunks"
            return f"Deleted {path.name}: {chunks} {noun} removed{kept}."

        return self.run("write", work)


# --- helpers ---------------------------------------------------------------------------


def _within(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root.resolve())
        return True
    except ValueError:
        return False


def safe_name(name: str, max_len: int = 120) -> str:
    """A file name that stays inside its folder: no separators, no leading dots, no controls."""
    name = unicodedata.normalize("NFKC", name).replace("\\", "/").split("/")[-1]
    name = re.sub(r"[^\w.\- ()]+", "_", name).strip(" .")
    name = re.sub(r"_+", "_", name)
    stem, dot, suffix = name.rpartition(".")
    if not dot:
        stem, suffix = name, ""
    stem = stem[: max_len - len(suffix) - 1].strip(" .") or "document"
    return f"{stem}.{suffix}" if suffix else stem


def check_llm(url: str, api_key: str | None = None, timeout: float = 2.0) -> tuple[bool, str]:
    """Is an OpenAI-compatible endpoint up? A quick GET {url}/models."""
    url = url.strip().rstrip("/")
    if not re.match(r"https?://", url):
        return False, "the URL must start with http:// or https://"
    request = urllib.request.Request(f"{url}/models")
    if api_key:
        request.add_header("Authorization", f"Bearer {api_key}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body = json.loads(response.read(1 << 20) or b"{}")
    except urllib.error.HTTPError as e:
        return False, f"{url}/models answered HTTP {e.code}"
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = getattr(e, "reason", e)
        return False, f"cannot reach {url} ({reason})"
    models = [m.get("id") for m in body.get("data", []) if isinstance(m, dict)]
    listed = f": {', '.join(m for m in models[:5] if m)}" if models else ""
    return True, f"reachable{listed}"
