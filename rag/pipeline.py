"""The one pipeline object the CLI, the UI and the evaluator share.

`Rag(settings)` loads nothing until it is used: the embedder, the index and the
answerer are opened on first need, so `rag --help` and `rag status` stay fast.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import shutil
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from .config import AnswerSettings, Mode, Settings, apply_offline_env
from .errors import IndexMissing, Interrupted, UsageError, shell
from .types import Answer, Chunk, Document, Draft, Hit, IngestReport, Skipped

log = logging.getLogger(__name__)

IngestProgress = Callable[[str, int, int], None]  # (stage, done, total)
T = TypeVar("T")
R = TypeVar("R")
WRITE_EVERY = 64  # chunks embedded between two commits: what an interruption can lose


class Rag:
    def __init__(
        self, settings: Settings | None = None, *, embedder: Any = None, reranker: Any = None
    ) -> None:
        """`embedder`, `reranker`: models already loaded (they are stateless and thread-safe,
        so several `Rag`s on several threads can share one copy); by default, made when
        needed."""
        apply_offline_env()
        self.settings = settings or Settings.from_env()
        self._embedder: Any = embedder
        self._reranker: Any = reranker
        self._index: Any = None
        self._retriever: Any = None
        self._answerer: Any = None
        self._health: Any = None  # the index's check on open (store.Health)
        self._lock = threading.RLock()  # the UI answers while an ingest runs
        self._warned_expand = False  # "expand needs an LLM" is said once
        self._hypotheses: dict[tuple[str, str], str] = {}  # the last 64 written (expand.py)
        self._memo_lock = threading.Lock()

    # --- parts, opened lazily ----------------------------------------------------------

    @property
    def embedder(self) -> Any:
        if self._embedder is None:
            from .embeddings import make_embedder

            self._embedder = make_embedder(self.settings.embed, self.settings.answer.api_key)
        return self._embedder

    @property
    def reranker(self) -> Any:
        """The cross-encoder that reorders hybrid candidates (loaded on first use)."""
        if self._reranker is None:
            from .rerank import LazyReranker

            window = self.settings.retrieve.rerank_window
            self._reranker = LazyReranker(window, self.settings.embed.threads)
        return self._reranker

    @property
    def index(self) -> Any:
        if self._index is None:
            from .store import Index

            index = Index.open(
                self.settings.store, embedder_name=self.embedder.name, dim=self.embedder.dim
            )
            # a cheap check on every open: counts of passages and vectors agree
            from .errors import StoreError

            try:
                self._health = index.health()
                for problem in self._health.problems(index.dir):
                    log.warning("%s", problem)
            except StoreError as e:  # unreadable vectors: the keyword index still answers
                if not index.read_only:  # a full disk: the store has said so already
                    log.warning("%s", e)
            self._index = index
        return self._index

    def health(self, full: bool = True) -> Any:
        """Whether the index's parts agree (store.Health); `full` compares every id."""
        self._health = self.index.health(full=full)
        return self._health

    def repair(self, *, full: bool = True) -> dict[str, int]:
        """Make the index whole again: rebuild a lost catalog from the vectors, re-embed the
        passages whose vectors are missing (from the catalog's text: no file is read), sweep
        orphan vectors, rebuild the keyword index. Takes the write lock."""
        from .errors import IndexDamaged, ManifestDamaged
        from .store import write_lock

        def set_aside_and_reopen() -> None:
            if self._index is not None:
                self._index.close()
            _set_aside_catalog(Path(self.settings.store.index_dir))
            self._index = self._open_index()  # an empty catalog, recovered from the vectors
            self._retriever = None

        with write_lock(self.settings.store.index_dir, "rag doctor --repair"), self._lock:
            if self._index is None:  # opened here, not by `self.index`: no warning to repeat
                try:
                    self._index = self._open_index()
                except ManifestDamaged:
                    raise  # not restorable here (the message says why): the catalog is kept
                except IndexDamaged:
                    set_aside_and_reopen()
                self._retriever = None
            try:
                return self._repair(self._index, full=full)
            except IndexDamaged:  # damage inside the catalog file, found by its own check
                set_aside_and_reopen()
                return self._repair(self._index, full=full)

    def _open_index(self, chunk: Any = None) -> Any:
        """The index, for a writer: a manifest.json that is missing, damaged or edited is
        first written again from the catalog's copy (IndexDamaged: the catalog is too)."""
        from .errors import ManifestDamaged
        from .store import Index

        def open_() -> Index:
            return Index.open(self.settings.store, embedder_name=self.embedder.name,
                              dim=self.embedder.dim, chunk=chunk)  # fmt: skip

        try:
            return open_()
        except ManifestDamaged as e:  # the catalog is not to blame: restore the manifest
            if (Path(self.settings.store.index_dir) / "manifest.json").is_dir():
                raise  # a folder in its place: the user moves it (the message says so)
            log.warning("%s; restoring it", str(e).partition(": restore")[0])
            Index.restore_manifest(self.settings.store, embedder_name=self.embedder.name,
                                   dim=self.embedder.dim, chunk=self.settings.chunk)  # fmt: skip
            return open_()

    def _repair(self, index: Any, *, full: bool, sweep: bool = True) -> dict[str, int]:
        from .errors import ChromaTimeout, DiskFull, StoreError

        out = {"recovered": 0, "reembedded": 0, "orphans": 0}
        try:
            health = index.health(full=full)
        except (ChromaTimeout, DiskFull):
            raise  # not damage: moving the vectors aside would re-embed everything
        except StoreError:
            if index.settings.chroma_url:
                raise  # a server's vectors are the server's to repair
            # an unreadable Chroma folder: set it aside; everything is re-embedded from the
            # catalog's text below (no file is read)
            index.set_aside_vectors()
            health = index.health(full=full)
        if health.catalog_lost:
            out["recovered"] = index.recover_catalog()
            health = index.health(full=full)
        elif index.catalog_was_missing and not index.read_only:
            index.remember_deletions()  # nothing to recover, but what the user deleted
        if health.missing or full:
            missing = index.missing_vectors()
            for i in range(0, len(missing), WRITE_EVERY):
                part = missing[i : i + WRITE_EVERY]
                index.put_vectors(part, self.embedder.embed([c.embedding_text() for c in part]))
                out["reembedded"] += len(part)
        if sweep and (health.orphans or full):
            out["orphans"] = index.sweep_orphans()
        if any(out.values()) or full:
            index.rebuild_keyword_index()
            index.write_manifest()
        if any(out.values()):
            index.bump_generation()  # a running reader reopens its copy of the vectors
        self._health = index.health(full=full)
        return out

    @property
    def retriever(self) -> Any:
        if self._retriever is None:
            from .retrieve import Retriever

            self._retriever = Retriever(
                self.index, self.embedder, self.settings.retrieve, lambda: self.reranker
            )
        return self._retriever

    def index_exists(self) -> bool:
        from .store import CATALOG, MANIFEST

        # a catalog or vectors without their manifest is an index too: opening it says how
        # to restore it
        directory = Path(self.settings.store.index_dir)
        return any(p.exists() for p in (directory / MANIFEST, directory / CATALOG,
                                         directory / "chroma"))  # fmt: skip

    # --- ingest ------------------------------------------------------------------------

    def ingest(
        self,
        paths: Sequence[Path | str],
        *,
        rebuild: bool = False,
        repair: bool = False,
        progress: IngestProgress | None = None,
    ) -> IngestReport:
        """Index new and changed files under `paths`, forget removed ones. Safe to interrupt;
        one writer at a time (the index's write lock). What the index lost (vectors, the
        catalog) is repaired first; `repair` compares every id instead of counts."""
        from .loaders import discover

        started = time.perf_counter()
        roots = [Path(p) for p in paths]
        if not roots:
            raise UsageError("give at least one file or folder to ingest")
        vanished = self._forget_missing_roots(roots)
        roots = [r for r in roots if r.expanduser().exists()]
        if not roots:  # every path given is gone: what the index held from them is removed
            stats = self.index.stats()
            return IngestReport(removed=vanished, chunks_total=stats["chunks"],
                                documents_total=stats["documents"],
                                seconds=time.perf_counter() - started)  # fmt: skip
        files, unsupported, outside, copies = discover(
            roots, keep_copies=self.settings.load.source_copies
        )
        report = IngestReport(unsupported=unsupported, skipped=list(outside))
        from .store import write_lock

        what = "rag ingest " + " ".join(str(r) for r in roots)
        with write_lock(self.settings.store.index_dir, what[:200]):
            try:
                self._ingest(roots, files, copies, report, rebuild=rebuild, repair=repair,
                             progress=progress)  # fmt: skip
            except KeyboardInterrupt:
                done = len(report.added) + len(report.updated)
                raise Interrupted(
                    f"interrupted: what was written before the stop is kept ({report.chunks_added}"
                    f" chunks); run `rag --index {shell(self.settings.store.index_dir)} ingest "
                    f"{shell(*roots)}` to index the rest (done files are not "
                    f"embedded again; {done} were read)"
                ) from None
        report.removed = [*vanished, *report.removed]
        report.seconds = time.perf_counter() - started
        return report

    def _forget_missing_roots(self, roots: list[Path]) -> list[str]:
        """Paths given that no longer exist but that the index holds documents from: their
        documents are removed (a folder deleted from disk must not be cited forever).
        A path the index never knew is a usage error, as before."""
        from .loaders import not_there, source_name

        missing = [r for r in roots if not r.expanduser().exists()]
        if not missing:
            return []
        from .errors import ManifestDamaged

        try:
            known = self.files() if self.index_exists() else {}
        except ManifestDamaged:
            known = {}  # restored by the ingest that follows
        gone: list[str] = []
        for r in missing:
            under = [s for s in known if _under(s, source_name(r))]
            if not under:
                raise not_there(r)
            gone += under
        from .store import write_lock

        with write_lock(self.settings.store.index_dir, "removing vanished documents"), self._lock:
            self.index.remove_sources(gone)
            self.index.rebuild_keyword_index()
            self.index.write_manifest()
        return gone

    def _ingest(
        self,
        roots: list[Path],
        files: list[Path],
        copies: dict[Path, Path],
        report: IngestReport,
        *,
        rebuild: bool,
        repair: bool,
        progress: IngestProgress | None,
    ) -> None:
        from .chunking import chunk_document
        from .loaders import load_file, source_name
        from .store import Index

        settings = self.settings
        with self._lock:
            if rebuild:
                self._wipe()
            if not rebuild and self.index_exists():  # a rebuild's wipe leaves chroma/
                from .errors import IndexDamaged, ManifestDamaged

                try:
                    index = self._open_index(settings.chunk)
                except IndexDamaged as e:
                    if not repair or isinstance(e, ManifestDamaged):
                        raise
                    _set_aside_catalog(Path(settings.store.index_dir))
                    # recovered from the vectors by the repair below
                    index = self._open_index(settings.chunk)
            else:
                index = Index.create(
                    settings.store,
                    embedder_name=self.embedder.name,
                    dim=self.embedder.dim,
                    chunk=settings.chunk,
                )
            self._index, self._retriever = index, None
            # orphans are kept for now: an ingest killed after writing vectors left them, and
            # they are reused below when their file is read again (swept at the end)
            repaired = self._repair(index, full=repair, sweep=False)
            report.chunks_repaired = repaired["reembedded"]
            report.chunks_recovered = repaired["recovered"]
        index.add_roots(source_name(r) for r in roots)
        known = index.files()

        # what changed: compare content hashes with the catalog
        seen: set[str] = set()
        named = {source_name(r) for r in roots if r.is_file()}  # given by name, not by folder
        limit = int(settings.load.max_file_mb * 1024 * 1024)

        def scan(paths: list[Path]) -> list[tuple[Path, str, str | None]]:
            todo: list[tuple[Path, str, str | None]] = []  # (path, source, old sha or None)
            for n, path in enumerate(paths, start=1):
                source = source_name(path)
                seen.add(source)
                if progress:
                    progress("scan", n, len(paths))
                sha = _file_sha(path, limit)
                row = known.get(source)
                if row is not None and row.status == "deleted" and source not in named:
                    report.excluded.append(source)  # deleted by the user: not brought back
                    continue
                if row is not None and sha is not None and row.sha256 == sha:
                    if row.status == "indexed":
                        report.unchanged.append(source)
                    else:
                        report.skipped.append(Skipped(source, row.reason or "skipped"))
                        report.skipped_before.append(source)
                    continue
                todo.append((path, source, row.sha256 if row else None))
            return todo

        # a `_sources/` copy once given by name (a root of the index) is a file of its own
        given = set(index.manifest.get("roots", []))
        files = [*files, *(c for c in copies if source_name(c) in given)]
        copies = {c: page for c, page in copies.items() if source_name(c) not in given}
        held = {source_name(c) for c in copies}  # decided once their pages are read
        todo = scan(files)
        removed = [
            s for s in known
            if s not in seen and s not in held and any(_under(s, source_name(r)) for r in roots)
        ]  # fmt: skip
        gone = [s for s in removed if known[s].status == "deleted"]  # nothing left to forget
        if gone:
            index.remove_sources(gone)
            removed = [s for s in removed if s not in gone]
        if removed:
            report.chunks_removed += sum(known[s].chunks for s in removed)
            index.remove_sources(removed)
            report.removed.extend(removed)

        # files are read and chunked as they are needed (never all at once), and embedded and
        # written in groups of whole documents
        def read(item: tuple[Path, str, str | None]) -> tuple[Document, list[Chunk]] | Skipped:
            loaded = load_file(item[0], settings.load)
            if isinstance(loaded, Skipped):
                return loaded
            return loaded, chunk_document(loaded, self.embedder.token_offsets, settings.chunk)

        total = done = 0

        def tick(k: int) -> None:
            nonlocal done
            done += k
            if progress:
                progress("embed", done, total)

        def write(group: list[tuple[Document, list[Chunk]]]) -> None:
            chunks = [c for _, cs in group for c in cs]
            # vectors Chroma already holds for these exact passages (a recovered catalog,
            # or an ingest killed after writing vectors) are kept, not embedded again
            kept = index.existing_vectors([c.id for c in chunks])
            todo_chunks = [c for c in chunks if c.id not in kept]
            # a kept passage the catalog already had is not removed by this update
            report.chunks_removed -= len(index.positions(list(kept)))
            tick(len(chunks) - len(todo_chunks))
            fresh = self.embedder.embed(
                [c.embedding_text() for c in todo_chunks], progress=tick
            ) if todo_chunks else None  # fmt: skip
            made = dict(zip((c.id for c in todo_chunks), fresh if fresh is not None else [],
                            strict=True))  # fmt: skip
            vectors = np.stack([kept[c.id] if c.id in kept else made[c.id] for c in chunks])
            with self._lock:
                index.put_documents(group, vectors)
            report.chunks_added += len(todo_chunks)
            report.chunks_reused += len(chunks) - len(todo_chunks)

        def process(todo: list[tuple[Path, str, str | None]]) -> None:
            nonlocal total
            group: list[tuple[Document, list[Chunk]]] = []
            # read ahead on a thread only when the embedder works elsewhere, to hide reading
            # behind its network round trips; a local one keeps both cores busy and reading
            # is ~5% of a local ingest: a thread beside it measured 0.88× and 1.03× in two
            # runs (bench/ingest_overlap.py), nothing to gain for a second thread
            ahead = not getattr(self.embedder, "runs_here", True)
            reader = _read_ahead(todo, read) if ahead else _read_in_turn(todo, read)
            # closing() stops a reader thread on any way out, Ctrl-C included
            with contextlib.closing(reader) as files_read:
                for n, ((path, source, _old), got) in enumerate(files_read, start=1):
                    if progress:
                        progress("load", n, len(todo))
                    if isinstance(got, Skipped):
                        report.skipped.append(got)
                        if source in known and known[source].status == "indexed":
                            report.chunks_removed += known[source].chunks
                        index.mark_skipped(source, got.reason, _file_sha(path, limit))
                        continue
                    loaded, chunks = got
                    if not chunks:
                        report.skipped.append(Skipped(source, "no text in it"))
                        index.mark_skipped(source, "no text in it", loaded.sha256)
                        continue
                    if source in known and known[source].status == "indexed":
                        report.updated.append(source)
                        report.chunks_removed += known[source].chunks
                    else:
                        report.added.append(source)
                    group.append((loaded, chunks))
                    total += len(chunks)
                    if sum(len(cs) for _, cs in group) >= WRITE_EVERY:
                        write(group)
                        group = []
                if group:
                    write(group)

        try:
            process(todo)
            # a copy is left out only when its page is indexed now; a page too large,
            # unreadable or without text leaves its copy the only one of that text (a page
            # the user deleted leaves its copy out too: they asked for neither)
            settled = {*report.unchanged, *report.added, *report.updated, *report.excluded}
            alone = [c for c, page in copies.items() if source_name(page) not in settled]
            todo += (more := scan(alone))
            process(more)
            left = sorted(held - {source_name(c) for c in alone})
            report.copies = left
            # copies indexed earlier (by --source-copies) are forgotten; a copy the user
            # deleted keeps its row, so that --source-copies does not bring it back
            drop = [s for s in left if s in known and known[s].status != "deleted"]
            if drop:
                report.chunks_removed += sum(known[s].chunks for s in drop)
                index.remove_sources(drop)
                report.removed.extend(drop)
                removed += drop
        finally:
            # even when interrupted: keyword index in step with what was written
            with self._lock:
                if todo or removed:
                    index.sweep_orphans()
                    index.rebuild_keyword_index()
                index.write_manifest()
        stats = index.stats()
        report.chunks_total = stats["chunks"]
        report.documents_total = stats["documents"]

    def _wipe(self) -> None:
        """Delete the index (the folder's generated files) for a rebuild."""
        from .errors import ManifestDamaged
        from .store import CATALOG, MANIFEST, Index, read_manifest

        directory = Path(self.settings.store.index_dir)
        try:
            manifest = read_manifest(directory) if directory.exists() else None
        except ManifestDamaged:
            manifest = None  # its Chroma folder is deleted below
        if self._index is not None:
            self._index.close()
        self._index = self._retriever = None
        if manifest:
            # through Chroma, not by deleting its files: Chroma caches open clients per path
            old = Index(self.settings.store, manifest)
            try:
                old._drop_collection()
            except Exception as e:
                if manifest.get("chroma_url"):
                    raise
                log.warning("could not drop the Chroma collection (%s); deleting its folder", e)
                manifest = None
            finally:
                old.close()
        if manifest is None and (directory / "chroma").is_dir():  # unreadable, or no manifest
            shutil.rmtree(directory / "chroma", ignore_errors=True)
            from chromadb.api.shared_system_client import SharedSystemClient

            SharedSystemClient.clear_system_cache()
        for name in (MANIFEST, CATALOG, CATALOG + "-wal", CATALOG + "-shm"):
            (directory / name).unlink(missing_ok=True)
        for name in ("bm25", "bm25.tmp"):
            shutil.rmtree(directory / name, ignore_errors=True)

    # --- questions ---------------------------------------------------------------------

    def search(
        self,
        query: str,
        k: int | None = None,
        mode: Mode | None = None,
        rerank: int | None = None,
        sources: Sequence[str] | None = None,
        hypothesis: str | None = None,
    ) -> list[Hit]:
        """`sources`: only these documents (exact sources; see `match_sources`).
        `hypothesis`: an answer an LLM wrote (`hypothesis()`), searched for too. Only
        callers that expand pass one (ask_stream, `rag search`, `rag eval` with
        `retrieve.expand` on): a warm-up, an exact-quote check or /v1/search never
        call the LLM."""
        with self._lock:
            self._reopen_if_replaced()
            return self.retriever.search(query, k=k, mode=mode, rerank=rerank, sources=sources,
                                         hypothesis=hypothesis)  # fmt: skip

    def hypothesis(self, question: str, answerer: Any = None) -> str:
        """The passage the answerer's LLM writes as if it answered `question` (expand.py);
        "" without an LLM or when it fails (the search then reads the question alone)."""
        from .expand import hypothesis

        chosen = answerer or self.answerer
        llm = chosen.llm  # a GGUF's llama-server starts here
        if llm is None:
            if not self._warned_expand:
                self._warned_expand = True
                # an LLM that was chosen but could not start says why; none chosen, how to
                problem = getattr(chosen, "problem", None)
                why = (problem.removesuffix("; showing the extractive answer")
                       if problem else "expanding searches needs an LLM (--llm local, "
                       "or --llm-url)")  # fmt: skip
                log.warning("%s: searching for the question alone", why)
            return ""

        def key() -> tuple[str, str]:
            # one endpoint may serve several models (the UI's endpoint + model name)
            return (f"{getattr(llm, 'url', id(llm))} {getattr(llm, 'named', None)}", question)

        with self._memo_lock:
            known = self._hypotheses.get(key())
        if known is not None:  # `rag eval` asks, then searches, the same question
            return known
        text = hypothesis(llm, question)  # not under a lock: it takes seconds
        if text:  # a failure is tried again next time (the app's retry button)
            with self._memo_lock:
                if len(self._hypotheses) >= 64:
                    self._hypotheses.pop(next(iter(self._hypotheses)), None)
                # kept under the key as it is now: a model unnamed in the settings is named
                # by the endpoint on the first call, and the next lookup uses that name
                self._hypotheses[key()] = text
        return text

    def _reopen_if_replaced(self) -> None:
        """A long-running reader (the app) whose index another process rebuilt or repaired
        (the catalog file replaced): open the new one, and its vectors, before answering."""
        if self._index is not None and self._index.replaced():
            from .store import _reopen_chroma

            log.info("the index was rebuilt or repaired by another process; reopening it")
            self._index.close()
            _reopen_chroma(self._index._chroma_path())
            self._index = self._retriever = None

    def match_sources(self, patterns: Sequence[str]) -> list[str]:
        """The indexed documents matching any of `patterns`: a glob (`*.pdf`,
        `~/papers/2024/*`), a folder (everything under it) or a file, each tried against the
        absolute path, the path relative to the current folder and the file name."""
        import fnmatch
        import os

        indexed = [s for s, row in self.files().items() if row.status == "indexed"]
        out: list[str] = []
        for pattern in patterns:
            expanded = os.path.expanduser(pattern)
            absolute = os.path.abspath(expanded)
            matched = [
                s for s in indexed
                if s == absolute or _under(s, absolute)
                or fnmatch.fnmatchcase(s, absolute) or fnmatch.fnmatchcase(s, expanded)
                or fnmatch.fnmatchcase(Path(s).name, expanded)
            ]  # fmt: skip
            if not matched:
                examples = ", ".join(sorted(Path(s).name for s in indexed)[:3])
                raise UsageError(
                    f"no indexed document matches --source {pattern!r} (it is matched against "
                    "each document's path and file name; the index holds "
                    f"{len(indexed)} documents, e.g. {examples or 'none yet'})"
                )
            out.extend(m for m in matched if m not in out)
        return out

    @property
    def answerer(self) -> Any:
        """The answerer the settings choose (answer/__init__.py:make_answerer), made once;
        it lives as long as this Rag (a llama-server it starts is stopped by close())."""
        with self._lock:
            if self._answerer is None:
                self._answerer = self.make_answerer()
            return self._answerer

    def make_answerer(self, answer: AnswerSettings | None = None, **kwargs: Any) -> Any:
        """An answerer over this Rag's models, for `answer` settings (default: its own);
        the caller closes it. `kwargs` go to answer.make_answerer (name, llm)."""
        from .answer import make_answerer

        a = answer or self.settings.answer
        # the cross-encoder, loaded when first used: the answerers use it as `a` says
        return make_answerer(a, self.embedder.embed, self.reranker, **kwargs)

    def ask(self, question: str, **kwargs: Any) -> Answer:
        """Answer `question` (see ask_stream). Never raises for a question the documents
        miss, nor for an LLM that fails (the extractive answer is given, with a warning)."""
        answer: Answer | None = None
        for piece in self.ask_stream(question, **kwargs):
            if isinstance(piece, Answer):
                answer = piece
        assert answer is not None
        return answer

    def ask_stream(
        self,
        question: str,
        *,
        k: int | None = None,
        mode: Mode | None = None,
        history: Sequence[Any] | None = None,
        answerer: Any = None,
        llm: Any = None,
        sources: Sequence[str] | None = None,
        expand: bool | None = None,
    ) -> Iterator[str | Draft | Answer]:
        """Yield the answer's text as it is produced, then the whole Answer.

        `history`: the earlier turns, oldest first, as (question, answer) pairs or chat
        messages; a follow-up is rewritten to stand alone before retrieval. `answerer`: one
        made by `make_answerer` (default: `self.answerer`); `llm`: answer with this LLM;
        `sources`: answer only from these documents; `expand`: search also for the LLM's
        hypothetical answer (default: `retrieve.expand`).
        """
        from .answer import condense, pairs

        owned = None
        if llm is not None:
            answerer = owned = self.make_answerer(llm=llm)
        answerer = answerer or self.answerer
        timings: dict[str, float] = {}
        try:
            self.retriever  # noqa: B018 -- no index says so before an LLM is started or asked
            standalone = question
            turns = pairs(history or [])
            if turns:
                t = time.perf_counter()
                standalone = condense(turns, question, answerer.llm)
                timings["condense"] = time.perf_counter() - t
            hypothesis = None
            if self.settings.retrieve.expand if expand is None else expand:
                t = time.perf_counter()
                hypothesis = self.hypothesis(standalone, answerer)
                timings["expand"] = time.perf_counter() - t
            t = time.perf_counter()
            k = max(k or self.settings.retrieve.k, 1)
            hits = self.search(standalone, k=k, mode=mode, rerank=self.settings.answer.rerank,
                               sources=sources, hypothesis=hypothesis)  # fmt: skip
            timings["retrieve"] = time.perf_counter() - t
            for piece in answerer.stream(standalone, hits):
                if isinstance(piece, Answer):
                    piece.question = question
                    piece.standalone_question = standalone if standalone != question else None
                    piece.searched = list(sources) if sources else None
                    piece.hypothesis = hypothesis or None
                    if hypothesis == "" and answerer.llm is not None:  # it wrote no guess
                        piece.warnings = [*piece.warnings, "the model wrote no guess to search "
                                          "for: searched for the question alone"]  # fmt: skip
                    if self._health is not None:  # found on open: said with every answer
                        piece.warnings = [*piece.warnings,
                                          *self._health.problems(self.index.dir)]  # fmt: skip
                    piece.timings = {**timings, **piece.timings}
                yield piece
        finally:
            if owned is not None:
                owned.close()

    # --- documents ---------------------------------------------------------------------

    def files(self) -> dict[str, Any]:
        """Every file the index knows: source → its row (status "indexed" or "skipped",
        chunks, skip reason); not the ones the user deleted."""
        if not self.index_exists():
            return {}
        with self._lock:
            self._reopen_if_replaced()
        return {s: row for s, row in self.index.files().items() if row.status != "deleted"}

    def titles(self, sources: Sequence[str] | None = None) -> dict[str, str]:
        """source → the title to show for it (its own, else its opening words)."""
        if not self.index_exists():
            return {}
        with self._lock:
            self._reopen_if_replaced()
        return self.index.titles(sources)

    def delete(self, sources: Sequence[str]) -> int:
        """Forget these documents (their chunks, vectors and keyword entries); returns the
        number of chunks removed. They stay out: a later ingest of their folder leaves them
        out (`report.excluded`) until a file is ingested by name again."""
        from .store import write_lock

        with write_lock(self.settings.store.index_dir, "deleting documents"), self._lock:
            removed = int(self.index.remove_sources(list(sources), remember=True))
            self.index.rebuild_keyword_index()
            self.index.write_manifest()
        return removed

    def close(self) -> None:
        """Stop what this Rag started (an answerer's llama-server) and close the index."""
        with self._lock:
            if self._answerer is not None:
                self._answerer.close()
            self._answerer = None
            if self._index is not None:
                self._index.close()
            self._index = self._retriever = None

    def __enter__(self) -> Rag:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def status(self) -> dict[str, Any]:
        if not self.index_exists():
            raise IndexMissing(
                f"no index in {self.settings.store.index_dir}/: build one with "
                f"`rag --index {shell(self.settings.store.index_dir)} ingest PATH`"
            )
        from .store import read_manifest

        with self._lock:
            self._reopen_if_replaced()
        index = self.index  # refused as `ask` would refuse it, with the same fix
        # live: another thread or process may have written since
        index.manifest = read_manifest(self.settings.store.index_dir) or index.manifest
        out = index.stats()
        try:
            out["health"] = index.health().to_json()
        except Exception as e:  # status still shows the rest
            out["health"] = {"ok": False, "error": str(e)}
        out["settings"] = {
            "retrieve": vars(self.settings.retrieve),
            "answer": {
                "llm_url": self.settings.answer.llm_url,
                "llm_model": self.settings.answer.llm_model,
                "llm_gguf": str(self.settings.answer.llm_gguf or "") or None,
            },
        }
        return out


def _set_aside_catalog(directory: Path) -> None:
    """Move a damaged catalog out of the way (kept for inspection, never deleted)."""
    from .store import CATALOG

    stamp = time.strftime("%Y%m%d-%H%M%S")
    for suffix in ("", "-wal", "-shm"):
        path = directory / (CATALOG + suffix)
        if path.exists():
            path.replace(directory / f"{CATALOG}{suffix}.damaged-{stamp}")
    log.warning("the damaged catalog was moved aside to %s.damaged-%s", CATALOG, stamp)


def _file_sha(path: Path, limit: int) -> str | None:
    from .loaders import fingerprint

    try:
        if path.stat().st_size > limit:
            return None
        h = fingerprint()  # the bytes and the loader version: either changing re-reads the file
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        return h.hexdigest()
    except OSError:
        return None


def _under(source: str, root: str) -> bool:
    return source == root or source.startswith(root.rstrip("/") + "/")


def _read_in_turn(items: Sequence[T], read: Callable[[T], R]) -> Iterator[tuple[T, R]]:
    """(item, read(item)) for each item, read when asked for: `_read_ahead` without a thread."""
    for item in items:
        yield item, read(item)


def _read_ahead(
    items: Sequence[T], read: Callable[[T], R], depth: int = 8
) -> Iterator[tuple[T, R]]:
    """(item, read(item)) for each item, in order, read on a thread of its own at most
    `depth` items ahead: files are read and chunked while earlier ones are embedded. An
    error in `read` is raised here, at its item. When the consumer stops (an error, Ctrl-C,
    or closing the iterator) the thread stops after the item it is reading."""
    results: queue.Queue[tuple[T, R | None, BaseException | None] | None] = queue.Queue(depth)
    stop = threading.Event()

    def put(value: tuple[T, R | None, BaseException | None] | None) -> bool:
        while not stop.is_set():
            try:
                results.put(value, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        for item in items:
            if stop.is_set():
                return
            try:
                value: tuple[T, R | None, BaseException | None] = (item, read(item), None)
            except BaseException as e:  # raised in the consumer, where it can be handled
                value = (item, None, e)
            if not put(value) or value[2] is not None:
                return
        put(None)

    thread = threading.Thread(target=work, name="rag-read-ahead", daemon=True)
    thread.start()
    try:
        while (got := results.get()) is not None:
            item, value, error = got
            if error is not None:
                raise error
            yield item, value  # type: ignore[misc]
    finally:
        stop.set()
