"""The index: a catalog (SQLite), Chroma vectors, a BM25 keyword index, and a manifest.

The catalog is the source of truth for which files and chunks are indexed. Writes go
vectors first, then one catalog transaction, then the removal of replaced vectors, so an
interrupted ingest leaves an index that answers from what it had: Chroma may hold
vectors the catalog does not know (they are filtered out, then swept), never the reverse.
The keyword index records the catalog generation it was built from and is rebuilt when
the two differ.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import re
import shutil
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlparse

import numpy as np

from .config import ChunkSettings, EmbedSettings, StoreSettings
from .errors import (
    ChromaTimeout,
    DiskFull,
    IndexBusy,
    IndexDamaged,
    IndexMismatch,
    IndexMissing,
    ManifestDamaged,
    StoreError,
    shell,
)
from .text import display_title
from .types import Chunk, Document

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
CATALOG = "catalog.sqlite"
DELETED = "deleted by the user; `rag ingest FILE` brings it back"  # a deleted row's reason
LOCK = "write.lock"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
  source TEXT PRIMARY KEY, sha256 TEXT, status TEXT NOT NULL, reason TEXT,
  title TEXT, chunks INTEGER NOT NULL DEFAULT 0, chars INTEGER NOT NULL DEFAULT 0,
  indexed_at REAL
);
CREATE TABLE IF NOT EXISTS chunks (
  id TEXT PRIMARY KEY, source TEXT NOT NULL, position INTEGER NOT NULL, text TEXT NOT NULL,
  start_char INTEGER NOT NULL, end_char INTEGER NOT NULL, page INTEGER,
  title TEXT NOT NULL, heading TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS chunks_source ON chunks(source, position);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
"""
# the keyword index's term cache (rebuild_keyword_index); an older catalog that cannot be
# written (a read-only file) is used without it
_KEYWORD_SCHEMA = """
CREATE TABLE IF NOT EXISTS keyword_vocab (term TEXT PRIMARY KEY, id INTEGER NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS keyword_terms (id TEXT PRIMARY KEY, terms BLOB NOT NULL);
CREATE TRIGGER IF NOT EXISTS keyword_terms_gone AFTER DELETE ON chunks
  BEGIN DELETE FROM keyword_terms WHERE id = OLD.id; END;
CREATE TRIGGER IF NOT EXISTS keyword_terms_stale AFTER UPDATE ON chunks
  BEGIN DELETE FROM keyword_terms WHERE id = OLD.id; END;
"""


@dataclass(frozen=True)
class FileRow:
    source: str
    sha256: str | None
    status: str  # "indexed" | "skipped" | "deleted" (by the user; left out of re-ingests)
    reason: str | None
    title: str | None
    chunks: int


@dataclass(frozen=True)
class Health:
    """Whether the parts of an index agree. `full`: ids compared one by one (`rag doctor`);
    otherwise counts only (cheap enough for every open)."""

    chunks: int  # passages in the catalog
    vectors: int  # vectors in Chroma
    missing: int  # catalog passages without a vector
    orphans: int  # vectors the catalog does not know (an interrupted write; swept by ingest)
    catalog_lost: bool  # the catalog is empty or new while Chroma still holds vectors
    full: bool
    keyword_damaged: bool = False  # bm25/ no longer matches its checksums (`full` only)

    @property
    def ok(self) -> bool:
        return not self.missing and not self.catalog_lost and not self.keyword_damaged

    def problems(self, index_dir: Path | str) -> list[str]:
        """One line per problem, each naming the command that repairs it."""
        fix = f"`rag --index {shell(index_dir)} doctor --repair`"
        out = []
        if self.catalog_lost:
            out.append(
                f"the catalog ({CATALOG}) is missing or empty but Chroma holds {self.vectors} "
                f"vectors: every answer would be 'The documents do not say.'; rebuild the "
                f"catalog from the vectors with {fix}"
            )
        elif self.missing:
            out.append(
                f"{self.missing} of {self.chunks} passages have no vector (the Chroma folder "
                f"was deleted or damaged): search finds them by keyword only until {fix} "
                "re-embeds them (or `rag ingest`, which repairs first)"
            )
        if self.keyword_damaged:
            out.append(
                "the keyword index (bm25/) does not match its checksums (damaged on disk): "
                f"{fix} rebuilds it from the catalog (the next question would too)"
            )
        return out

    def to_json(self) -> dict[str, Any]:
        return {**self.__dict__, "ok": self.ok}


@contextlib.contextmanager
def write_lock(index_dir: Path | str, what: str) -> Iterator[None]:
    """The index's writer lock (a flock on index/write.lock): one writer at a time, across
    processes and threads. A second writer is refused at once, naming the holder."""
    directory = Path(index_dir)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(directory / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise StoreError(
            f"cannot create the index folder {directory}/ ({e.strerror or e}); "
            "choose a writable one with --index DIR"
        ) from e
    try:
        import fcntl
    except ImportError:  # no flock (Windows): one writer is the user's to ensure
        os.close(fd)
        yield
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 300, 0).decode(errors="replace").strip() or "another process"
            raise IndexBusy(
                f"{directory}/ is being written by {holder}; wait for it to finish (or stop "
                "it), then run this again"
            ) from None
        os.ftruncate(fd, 0)
        holder = f"pid {os.getpid()} ({what}, since {time.strftime('%H:%M:%S')})"
        try:
            os.pwrite(fd, holder.encode(), 0)
        except OSError as e:
            fcntl.flock(fd, fcntl.LOCK_UN)
            raise (_disk_full_error(directory, e) or e) from e
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


# Embedded Chroma keeps each folder's vectors in memory, once per process (chromadb's
# SharedSystemClient): after another process writes, that copy is stale ("Error finding id").
# The catalog generation says when: a process remembers the generation its copy matches, and
# reopens the copy when the catalog has moved on. One lock serialises this process's calls.
_CHROMA_LOCK = threading.RLock()
_chroma_seen: dict[str, int] = {}  # folder → catalog generation its open copy matches
_chroma_epoch: dict[str, int] = {}  # folder → times reopened (Index objects refetch)


def _reopen_chroma(path: str, stop: bool = True) -> None:
    """Drop this process's copy of an embedded Chroma; the next call opens a new one.
    `stop=False` after a failed call: chromadb 1.5's compactor wedges after a failed backfill
    (a full disk) and the next call on that copy, `stop()` included, never returns. A new
    copy fails fast, or works once space is freed."""
    from chromadb.api.shared_system_client import SharedSystemClient

    with _CHROMA_LOCK:
        system = SharedSystemClient._identifier_to_system.pop(path, None)
        SharedSystemClient._identifier_to_refcount.pop(path, None)
        if system is not None and stop:
            with contextlib.suppress(Exception):
                system.stop()
        _chroma_epoch[path] = _chroma_epoch.get(path, 0) + 1


T = TypeVar("T")
_CATALOG_SWAP = threading.Lock()
_MAX_STUCK = 4  # Chroma calls left blocked in their threads before this process stops trying
_stuck: set[threading.Thread] = set()


def _bounded(
    call: Callable[[], T], timeout: float, what: str, on_fail: Callable[[], None] | None = None
) -> T:
    """`call()`, given up after `timeout` seconds (0: no limit), or at Ctrl-C; then
    `on_fail()` (the caller drops its copy of Chroma) and ChromaTimeout. The call runs in a
    daemon thread: native code that never returns keeps only that thread, and the process
    still exits. Only calls that release the GIL while they wait can be given up: chromadb's
    reads (query, get, count) do; its writes (upsert, delete) hold it until they return."""
    if timeout <= 0:
        return call()
    with _CHROMA_LOCK:
        _stuck.difference_update([t for t in _stuck if not t.is_alive()])
        if len(_stuck) >= _MAX_STUCK:
            raise ChromaTimeout(
                f"{len(_stuck)} Chroma calls never returned in this process: restart it (the "
                "keyword index still answers; a disk that is full is the usual cause)"
            )
    box: dict[str, Any] = {}
    done = threading.Event()

    def run() -> None:
        try:
            box["value"] = call()
        except BaseException as e:  # handed to the caller's thread
            box["error"] = e
        finally:
            done.set()

    worker = threading.Thread(target=run, name=f"chroma {what}", daemon=True)
    worker.start()
    finished = False
    try:
        finished = done.wait(timeout)
    finally:  # a timeout or Ctrl-C: the call goes on in its thread, on a copy now dropped
        if not finished:
            with _CHROMA_LOCK:
                _stuck.add(worker)
            if on_fail is not None:
                on_fail()
    if not finished:
        raise ChromaTimeout(
            f"Chroma did not answer within {timeout:g} s ({what}); is the disk full? "
            "(RAG_CHROMA_TIMEOUT sets the limit)"
        )
    if "error" in box:
        raise box["error"]
    return box["value"]  # type: ignore[no-any-return]


def _still_busy(e: BaseException) -> ChromaTimeout | None:
    """A call given up earlier still runs in this process: an error now (chromadb's own
    KeyError while that call holds half-made state) is that, not damage to repair."""
    with _CHROMA_LOCK:
        if not any(t.is_alive() for t in _stuck):
            return None
    return ChromaTimeout(
        f"Chroma is still busy with a call given up earlier ({type(e).__name__}: {e}): try "
        "again in a moment, or set a larger RAG_CHROMA_TIMEOUT"
    )


class _BoundedCollection:
    """A Chroma collection whose every method call is `_bounded`."""

    def __init__(self, collection: Any, timeout: float, on_fail: Callable[[], None]) -> None:
        self._collection, self._timeout, self._on_fail = collection, timeout, on_fail

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._collection, name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            return _bounded(lambda: attr(*args, **kwargs), self._timeout, name, self._on_fail)

        return call


def _file_id(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def _disk_full(e: BaseException) -> bool:
    text = str(e).lower()
    return (isinstance(e, OSError) and e.errno == errno.ENOSPC) or any(
        m in text for m in ("disk is full", "no space left", "database or disk is full")
    )


def _free_bytes(directory: Path) -> int:
    try:
        return shutil.disk_usage(directory).free
    except OSError:
        return 1 << 62


def _disk_full_error(directory: Path, e: BaseException, below: int = 1 << 20) -> DiskFull | None:
    """The error to show when `e` came from a full disk (or one with under `below` bytes free;
    Chroma and SQLite do not always say "full"), else None."""
    free = _free_bytes(directory)
    if not (_disk_full(e) or free < below):
        return None
    return DiskFull(
        f"the disk holding {directory}/ is full ({free / 1e6:.1f} MB free): free some space, "
        "then run the same command again (the index still answers from what it had before)"
    )


def _digests(folder: Path) -> dict[str, str]:
    """sha256 of each file a saved keyword index holds (its own rag_meta.json aside)."""
    out = {}
    for p in sorted(folder.iterdir()):
        if p.is_file() and p.name != "rag_meta.json":
            out[p.name] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("rag", "chromadb", "bm25s", "onnxruntime"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "unknown"
    return out


def _no_embedding_function() -> Any:
    """Chroma must never embed (its default downloads an ONNX model): a guard that refuses."""
    from chromadb.api.types import Documents, EmbeddingFunction, Embeddings

    class RefuseToEmbed(EmbeddingFunction[Documents]):
        def __init__(self) -> None:
            pass

        def __call__(self, input: Documents) -> Embeddings:
            raise StoreError("internal error: Chroma was asked to embed text; rag supplies vectors")

        @staticmethod
        def name() -> str:
            return "rag-supplies-vectors"

        def get_config(self) -> dict[str, Any]:
            return {}

        @staticmethod
        def build_from_config(config: dict[str, Any]) -> RefuseToEmbed:
            return RefuseToEmbed()

    return RefuseToEmbed()


class Index:
    """One index folder. Open with `Index.open(...)` (existing) or `Index.create(...)`."""

    def __init__(self, settings: StoreSettings, manifest: dict[str, Any]) -> None:
        self.settings = settings
        self.dir = Path(settings.index_dir)
        self.manifest = manifest
        # a catalog that is not there when the manifest is: deleted (vectors may remain)
        self.catalog_was_missing = not (self.dir / CATALOG).exists()
        # one connection shared by the threads of a server (the UI); `Rag` serialises writes
        # True while the disk is full: the catalog is read as it is on disk, writes fail
        self.read_only = False
        try:
            self._db = self._open_catalog()
        except sqlite3.DatabaseError as e:
            if _disk_full_error(self.dir, e) is None:
                raise self.damaged(e) from e
            self._db = self._open_read_only(e)
        self._catalog_id = _file_id(self.dir / CATALOG)
        self._collection: Any = None
        self._collection_epoch = -1
        self._bm25: Any = None
        self._bm25_ids: list[str] = []
        self._bm25_gen = -1

    # --- opening and the manifest ------------------------------------------------------

    @classmethod
    def open(
        cls,
        settings: StoreSettings,
        *,
        embedder_name: str,
        dim: int,
        chunk: ChunkSettings | None = None,
        rebuild_hint: str = "rag ingest --rebuild PATH",
    ) -> Index:
        """An existing index; refuses one built with another embedder (or chunking, if given)."""
        manifest = read_manifest(settings.index_dir)
        if manifest is None and _has_parts(Path(settings.index_dir)):
            raise ManifestDamaged(
                f"{Path(settings.index_dir) / MANIFEST} is missing: restore it with "
                f"`rag --index {shell(settings.index_dir)} doctor --repair` (nothing is embedded "
                "again)"
            )
        if manifest is None:
            raise IndexMissing(
                f"no index in {settings.index_dir}/: build one with "
                f"`rag --index {shell(settings.index_dir)} ingest PATH`"
            )
        built = manifest.get("embedding", {})
        problems = []
        same = "use the settings it was built with"
        if built.get("model") != embedder_name or built.get("dim") != dim:
            # "openai:NAME@URL": embedded by an endpoint, which the run must name again
            if remote := re.fullmatch(r"openai:(.+?)@(https?://\S+)", str(built.get("model"))):
                model = f" --embed-model {remote[1]}" if remote[1] != EmbedSettings().model else ""
                same = (f"run it as `rag --index {shell(settings.index_dir)} --embed-url "
                        f"{remote[2]}{model} COMMAND …`")  # fmt: skip
            problems.append(
                f"embedding model {built.get('model')} ({built.get('dim')}d), "
                f"this run uses {embedder_name} ({dim}d)"
            )
        flags = ""
        if chunk is not None:
            got = manifest.get("chunk", {})
            if got.get("size") != chunk.size or got.get("overlap") != chunk.overlap:
                problems.append(
                    f"chunks of {got.get('size')}/{got.get('overlap')} tokens, "
                    f"this run uses {chunk.size}/{chunk.overlap}"
                )
                flags = f" --chunk-size {chunk.size} --chunk-overlap {chunk.overlap}"
        if manifest.get("format") != FORMAT_VERSION:
            problems.append(
                f"index format {manifest.get('format')}, this rag reads {FORMAT_VERSION}"
            )
        index = cls(settings, manifest)
        copy = index._check_against_copy()  # a hand edit, not another build: restore it
        if problems:
            index.close()
            roots = shell(*manifest.get("roots", [])) or "PATH"
            raise IndexMismatch(
                f"{settings.index_dir}/ was built with {'; '.join(problems)}: rebuild it with "
                f"`rag --index {shell(settings.index_dir)} ingest --rebuild{flags} {roots}` or "
                f"{same}"
            )
        if copy is None and not index.read_only:
            # an index from before the copy was kept gets one now, before it is ever needed
            with contextlib.suppress(sqlite3.DatabaseError, OSError):
                index._db.execute(_PUT_COPY, (json.dumps(manifest, indent=2, sort_keys=True),))
        chroma_url = manifest.get("chroma_url")
        if chroma_url and not settings.chroma_url:
            # an index made against a server keeps using it
            index.settings = replace(settings, chroma_url=chroma_url)
        return index

    @classmethod
    def create(
        cls, settings: StoreSettings, *, embedder_name: str, dim: int, chunk: ChunkSettings
    ) -> Index:
        """A new, empty index (the folder may exist but must hold no manifest)."""
        directory = Path(settings.index_dir)
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StoreError(
                f"cannot create the index folder {directory}/ ({e.strerror or e}); "
                "choose a writable one with --index DIR"
            ) from e
        index = cls(settings, _new_manifest(settings, embedder_name, dim, chunk))
        index.catalog_was_missing = False  # made now, with the index: nothing was lost
        if settings.chroma_url:
            # a server collection of the same name left by an earlier index would mix vectors
            index._drop_collection()
        index.write_manifest()
        return index

    @classmethod
    def restore_manifest(
        cls, settings: StoreSettings, *, embedder_name: str, dim: int, chunk: ChunkSettings
    ) -> None:
        """Write manifest.json again from the catalog's copy of it; an index older than that
        copy gets this run's settings, refused when its vectors are of another size."""
        directory = Path(settings.index_dir)
        copy: dict[str, Any] | None = None
        with contextlib.suppress(sqlite3.DatabaseError, ValueError, ManifestDamaged):
            uri = (directory / CATALOG).resolve().as_uri()
            with contextlib.closing(sqlite3.connect(f"{uri}?mode=ro", uri=True)) as db:
                copy = _manifest_copy(db, directory)
        if copy is None and not settings.chroma_url and not (directory / "chroma").is_dir():
            raise ManifestDamaged(
                f"{directory / MANIFEST} is lost, the catalog keeps no copy of it (an index "
                "from before copies were kept) and no vectors are here: if they are on a "
                f"Chroma server, run `rag --index {shell(directory)} --chroma-url URL doctor "
                f"--repair`; else rebuild with `rag --index {shell(directory)} ingest --rebuild "
                "PATH`"
            )
        index = cls(settings, copy or _new_manifest(settings, embedder_name, dim, chunk))
        try:
            if copy is None:
                # no copy to trust: this run's settings, if the vectors are of their size
                log.warning(
                    "%s/ kept no copy of its manifest: restoring it with this run's settings "
                    "(%s, chunks of %d/%d tokens; if it was built with others, run the repair "
                    "again with those flags)", directory, embedder_name, chunk.size,
                    chunk.overlap,
                )  # fmt: skip
                got = index.fresh().get(limit=1, include=["embeddings"])["embeddings"]
                if got is not None and len(got) and len(got[0]) != dim:
                    raise IndexMismatch(
                        f"{directory}/ holds vectors of {len(got[0])} dimensions, this run's "
                        f"embedder {embedder_name} makes {dim}: run it with the embedder it "
                        "was built with, or rebuild it with "
                        f"`rag --index {shell(directory)} ingest --rebuild PATH`"
                    )
                index.manifest["roots"] = index._roots_from_catalog()
            index.write_manifest()
        finally:
            index.close()
        log.warning("restored %s", directory / MANIFEST)

    def _check_against_copy(self) -> dict[str, Any] | None:
        """The catalog's copy of the manifest (None: it keeps none); ManifestDamaged when
        manifest.json says other than the copy about how the index was built (a hand edit:
        those fields never change after a build)."""
        try:
            copy = _manifest_copy(self._db, self.dir)
        except (sqlite3.DatabaseError, ValueError, ManifestDamaged):
            return {}  # unreadable: the catalog's own checks report it
        for key in ("format", "embedding", "chunk", "collection", "chroma_url"):
            if copy is not None and self.manifest.get(key) != copy.get(key):
                self.close()
                raise ManifestDamaged(
                    f'{self.dir / MANIFEST} has "{key}": '
                    f"{json.dumps(self.manifest.get(key))[:60]}, the catalog was built with "
                    f"{json.dumps(copy.get(key))[:60]}: restore it with "
                    f"`rag --index {shell(self.dir)} doctor --repair` (nothing is embedded again)"
                )
        return copy

    def _roots_from_catalog(self) -> list[str]:
        """The folders the catalog's files are in (the best guess when no manifest is left)."""
        parents = {str(Path(r[0]).parent) for r in self._db.execute("SELECT source FROM files")}
        return sorted(p for p in parents if not any(p.startswith(q + os.sep) for q in parents))

    def replaced(self) -> bool:
        """Was the catalog file deleted or replaced (a rebuild, a repair) by another process
        since this Index opened it? Its connection then reads the old, unlinked file."""
        return _file_id(self.dir / CATALOG) != self._catalog_id

    def set_aside_vectors(self) -> Path | None:
        """Move an unreadable Chroma folder aside (never deleted); a new, empty one is made
        on next use and the repair re-embeds every passage from the catalog."""
        folder = self.dir / "chroma"
        if not folder.exists():
            return None
        aside = self.dir / f"chroma.damaged-{time.strftime('%Y%m%d-%H%M%S')}"
        _reopen_chroma(self._chroma_path())
        folder.replace(aside)
        self._collection = None
        log.warning("the unreadable vectors were moved aside to %s", aside.name)
        return aside

    def _open_catalog(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.dir / CATALOG, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("PRAGMA recursive_triggers=ON")  # INSERT OR REPLACE fires the delete trigger
        db.executescript(_SCHEMA)
        try:
            db.executescript(_KEYWORD_SCHEMA)
        except sqlite3.OperationalError as e:  # read-only: keyword terms are not cached
            log.info("the keyword term cache cannot be made here (%s)", e)
        return db

    def _writable(self) -> None:
        """Back to the normal catalog once the full disk that made it read-only has room
        (the read-only connection is left to the threads still using it)."""
        if self.read_only and _free_bytes(self.dir) >= 1 << 20:
            with _CATALOG_SWAP, contextlib.suppress(sqlite3.DatabaseError):
                if self.read_only:
                    self._db, self.read_only = self._open_catalog(), False
                    log.warning("the disk holding %s/ has room again: the index is writable",
                                self.dir)  # fmt: skip

    def _open_read_only(self, e: BaseException) -> sqlite3.Connection:
        """The catalog on a disk too full for SQLite's WAL files: read as it is on disk."""
        uri = (self.dir / CATALOG).resolve().as_uri()
        wal = self.dir / (CATALOG + "-wal")
        # read-only with the WAL when its files are there (what another process committed is
        # seen); else the file as it is on disk, which is all of it once no WAL is left
        for mode in ("mode=ro", "immutable=1"):
            try:
                db = sqlite3.connect(f"{uri}?{mode}", uri=True, isolation_level=None,
                                     check_same_thread=False)  # fmt: skip
                db.execute("SELECT count(*) FROM chunks").fetchone()
                break
            except sqlite3.DatabaseError:
                continue
        else:
            raise (_disk_full_error(self.dir, e) or self.damaged(e)) from e
        if mode == "immutable=1" and wal.is_file() and wal.stat().st_size:
            log.warning(
                "the catalog's write-ahead log (%s) cannot be read on this full disk: the "
                "latest writes are not seen until space is freed",
                wal.name,
            )
        self.read_only = True
        log.warning(
            "the disk holding %s/ is full (%.1f MB free): the index answers read-only until "
            "space is freed",
            self.dir,
            _free_bytes(self.dir) / 1e6,
        )
        return db

    def damaged(self, e: BaseException) -> IndexDamaged:
        """The error for an unreadable catalog, naming the repair."""
        return IndexDamaged(
            f"the catalog {self.dir / CATALOG} is damaged ({e}): rebuild it from the vectors "
            f"with `rag --index {shell(self.dir)} doctor --repair`"
        )

    def write_manifest(self) -> None:
        """manifest.json, and a copy in the catalog that `restore_manifest` trusts."""
        self.manifest["chunks"] = self.count_chunks()
        if not self.catalog_was_missing:
            # the files the user deleted, kept here too: a catalog rebuilt from the vectors
            # (which deleted files no longer have) would otherwise forget them, and the next
            # ingest of their folder would bring them back
            self.manifest["deleted"] = [r[0] for r in self._db.execute(
                "SELECT source FROM files WHERE status = 'deleted' ORDER BY source")]  # fmt: skip
        self.manifest["updated"] = time.time()
        self.manifest["versions"] = versions()
        text = json.dumps(self.manifest, indent=2, sort_keys=True)
        self._writable()
        try:  # one statement, committed by itself (not a write that moves the generation)
            self._db.execute(_PUT_COPY, (text,))
        except sqlite3.DatabaseError as e:
            raise self._write_failed(e, "writing the catalog") from e
        tmp = self.dir / (MANIFEST + ".tmp")
        try:
            tmp.write_text(text)
            tmp.replace(self.dir / MANIFEST)
        except OSError as e:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise self._write_failed(e, f"writing {self.dir / MANIFEST}") from e

    def add_roots(self, roots: Iterable[str]) -> None:
        merged = list(dict.fromkeys([*self.manifest.get("roots", []), *roots]))
        self.manifest["roots"] = merged
        self.write_manifest()

    # --- Chroma ------------------------------------------------------------------------

    def _client(self) -> Any:
        import chromadb
        from chromadb.config import Settings as ChromaSettings

        chroma_settings = ChromaSettings(anonymized_telemetry=False)
        url = self.settings.chroma_url

        def connect() -> Any:
            if url:
                u = urlparse(url if "://" in url else f"http://{url}")
                return chromadb.HttpClient(
                    host=u.hostname or "127.0.0.1",
                    port=u.port or (443 if u.scheme == "https" else 8000),
                    ssl=u.scheme == "https",
                    settings=chroma_settings,
                )
            return chromadb.PersistentClient(path=self._chroma_path(), settings=chroma_settings)

        try:
            return _bounded(connect, self.settings.chroma_timeout, "open", self._chroma_failed)
        except ChromaTimeout:
            raise
        except Exception as e:
            if known := self._known_failure(e):
                raise known from e
            where = url or self._chroma_path()
            raise StoreError(
                f"cannot open Chroma at {where} ({type(e).__name__}: {e}); "
                + ("is `chroma run` up at that address?" if url else "is the folder writable?")
            ) from e

    def _chroma_path(self) -> str:
        return str(self.dir / "chroma")

    @property
    def collection(self) -> Any:
        epoch = _chroma_epoch.get(self._chroma_path(), 0)
        if self._collection_epoch != epoch:
            self._collection, self._collection_epoch = None, epoch
        if self._collection is None:
            try:
                client = self._client()
                found = _bounded(
                    lambda: client.get_or_create_collection(
                        self.manifest.get("collection", self.settings.collection),
                        embedding_function=_no_embedding_function(),
                        configuration={"hnsw": {"space": "cosine"}},
                    ),
                    self.settings.chroma_timeout,
                    "open collection",
                    self._chroma_failed,
                )
                self._collection = _BoundedCollection(
                    found, self.settings.chroma_timeout, self._chroma_failed
                )
            except StoreError:
                raise
            except Exception as e:
                if known := self._known_failure(e):
                    raise known from e
                raise StoreError(
                    f"cannot open the Chroma collection ({type(e).__name__}: {e}); "
                    "check --chroma-url, or rebuild the index with `rag ingest --rebuild PATH`"
                ) from e
        return self._collection

    def fresh(self) -> Any:
        """The collection, reopened first if another process wrote since this process's copy
        of the vectors was loaded (embedded Chroma only: a server is always current)."""
        if not self.settings.chroma_url:
            path, gen = self._chroma_path(), self.generation()
            with _CHROMA_LOCK:
                seen = _chroma_seen.get(path)
                if seen is not None and seen != gen:
                    log.info("the index changed in another process; reopening its vectors")
                    _reopen_chroma(path)
                _chroma_seen[path] = gen
        return self.collection

    def _chroma_failed(self) -> None:
        if not self.settings.chroma_url:
            _reopen_chroma(self._chroma_path(), stop=False)

    def _known_failure(self, e: BaseException) -> StoreError | None:
        """After a failed Chroma call (this copy is dropped): the error when it is not damage
        (a given-up call still running, a full disk), else None."""
        self._chroma_failed()
        if busy := _still_busy(e):
            return busy
        return None if self.settings.chroma_url else _disk_full_error(self.dir, e)

    def _written(self) -> None:
        """After this process committed: its copy of the vectors matches the catalog."""
        if not self.settings.chroma_url:
            _chroma_seen[self._chroma_path()] = self.generation()

    def _write_failed(self, e: BaseException, what: str) -> StoreError:
        # Chroma reports a full disk as a failed compaction: a write that fails with under
        # 32 MB free is taken for one
        return _disk_full_error(self.dir, e, below=32 << 20) or StoreError(
            f"{what} failed ({type(e).__name__}: {e})"
        )

    def _drop_collection(self) -> None:
        name = self.manifest.get("collection", self.settings.collection)
        client = self._client()
        if name in {getattr(c, "name", c) for c in client.list_collections()}:
            client.delete_collection(name)
        self._collection = None

    # --- writing -----------------------------------------------------------------------

    def files(self) -> dict[str, FileRow]:
        rows = self._db.execute(
            "SELECT source, sha256, status, reason, title, chunks FROM files"
        ).fetchall()
        return {r[0]: FileRow(*r) for r in rows}

    def titles(self, sources: Iterable[str] | None = None) -> dict[str, str]:
        """source → the title to show people (`text.display_title`): a document without a
        title of its own is named by its opening words (its first chunk's), not only by its
        file name. Every file's, or those of `sources`."""
        query = (
            "SELECT f.source, f.title, c.text FROM files f "
            "LEFT JOIN chunks c ON c.source = f.source AND c.position = 0"
        )
        if sources is None:
            rows = self._db.execute(query).fetchall()
        else:
            wanted, rows = list(dict.fromkeys(sources)), []
            for i in range(0, len(wanted), 500):  # SQLite's limit on ? parameters
                part = wanted[i : i + 500]
                where = f" WHERE f.source IN ({','.join('?' * len(part))})"
                rows += self._db.execute(query + where, part).fetchall()
        return {src: display_title(src, title, text or "") for src, title, text in rows}

    def put_documents(
        self, items: Sequence[tuple[Document, Sequence[Chunk]]], vectors: np.ndarray
    ) -> None:
        """Index (or re-index) whole documents: their chunks with one row of `vectors` each."""
        chunks = [c for _, cs in items for c in cs]
        if len(chunks) != len(vectors):
            raise ValueError("one vector per chunk")
        sources = [d.source for d, _ in items]
        old_ids = self._chunk_ids(sources)
        if chunks:
            self._upsert_vectors(chunks, vectors)
        with self._tx() as db:
            db.executemany("DELETE FROM chunks WHERE source = ?", [(s,) for s in sources])
            db.executemany(
                "INSERT OR REPLACE INTO chunks VALUES (?,?,?,?,?,?,?,?,?)",
                [
                    (c.id, c.source, c.position, c.text, c.start_char, c.end_char, c.page,
                     c.title, c.heading)
                    for c in chunks
                ],
            )  # fmt: skip
            db.executemany(
                "INSERT OR REPLACE INTO files VALUES (?,?,?,?,?,?,?,?)",
                [
                    (
                        d.source,
                        d.sha256,
                        "indexed",
                        None,
                        d.title,
                        len(cs),
                        len(d.text),
                        time.time(),
                    )
                    for d, cs in items
                ],
            )
            self._bump(db)
        stale = set(old_ids) - {c.id for c in chunks}
        if stale:
            self._delete_vectors(sorted(stale))

    def mark_skipped(self, source: str, reason: str, sha256: str | None = None) -> None:
        """Record a skipped file; any chunks it had before are removed."""
        old = self._chunk_ids([source])
        with self._tx() as db:
            db.execute("DELETE FROM chunks WHERE source = ?", (source,))
            db.execute(
                "INSERT OR REPLACE INTO files VALUES (?,?,?,?,?,?,?,?)",
                (source, sha256, "skipped", reason, None, 0, 0, time.time()),
            )
            self._bump(db)
        if old:
            self._delete_vectors(old)

    def remove_sources(self, sources: Sequence[str], remember: bool = False) -> int:
        """Forget files (`remember`: keep a "deleted" row, so that re-ingesting their folder
        leaves them out). Returns the number of chunks removed."""
        old = self._chunk_ids(sources)
        with self._tx() as db:
            db.executemany("DELETE FROM chunks WHERE source = ?", [(s,) for s in sources])
            db.executemany("DELETE FROM files WHERE source = ?", [(s,) for s in sources])
            if remember:
                _mark_deleted(db, sources)
            self._bump(db)
        if old:
            self._delete_vectors(old)
        return len(old)

    def sweep_orphans(self) -> int:
        """Delete vectors the catalog does not know (left by an interrupted ingest)."""
        known = self._catalog_ids()
        orphans = [i for i in self.vector_ids() if i not in known]
        if orphans:
            self._delete_vectors(orphans)
        return len(orphans)

    def _catalog_ids(self) -> set[str]:
        return {r[0] for r in self._db.execute("SELECT id FROM chunks")}

    def vector_ids(self) -> list[str]:
        """Every id Chroma holds."""
        try:
            with _CHROMA_LOCK:
                return list(self.fresh().get(include=[])["ids"])
        except Exception as e:
            self._chroma_failed()
            raise self._write_failed(e, "listing Chroma ids") from e

    def vector_count(self) -> int:
        try:
            with _CHROMA_LOCK:
                return int(self.fresh().count())
        except sqlite3.DatabaseError as e:  # the catalog (its generation), not the vectors
            raise self.damaged(e) from e
        except ChromaTimeout:
            raise
        except Exception as e:
            if known := self._known_failure(e):
                raise known from e
            raise StoreError(
                f"cannot read the vectors in {self._chroma_path()} ({type(e).__name__}: {e}); "
                f"repair the index with `rag --index {shell(self.dir)} doctor --repair`"
            ) from e

    # --- integrity ---------------------------------------------------------------------

    def health(self, full: bool = False) -> Health:
        """Do catalog and vectors agree? Counts only, unless `full` (every id compared, and
        the catalog file checked page by page: IndexDamaged when it is not whole)."""
        if full:
            try:
                check = [r[0] for r in self._db.execute("PRAGMA quick_check").fetchall()]
            except sqlite3.DatabaseError as e:
                raise self.damaged(e) from e
            if check != ["ok"]:
                raise self.damaged(Exception("; ".join(check[:3])))
        chunks, vectors = self.count_chunks(), self.vector_count()
        # vectors and a catalog that knows nothing at all (no file, not even a skipped or
        # deleted one): the catalog was lost (deleted, or made anew after a kill), and is
        # recovered from the vectors; deleting them as orphans would lose every passage
        lost = (
            chunks == 0
            and vectors > 0
            and (
                self.catalog_was_missing
                or int(self.manifest.get("chunks") or 0) > 0
                or self._db.execute("SELECT 1 FROM files LIMIT 1").fetchone() is None
            )
        )
        if full and not lost:
            known, have = self._catalog_ids(), set(self.vector_ids())
            missing, orphans = len(known - have), len(have - known)
        else:
            # counts: vectors beyond the catalog are orphans, a shortfall is missing vectors
            missing, orphans = max(chunks - vectors, 0), max(vectors - chunks, 0)
            if lost:
                missing, orphans = 0, vectors
        return Health(chunks, vectors, missing, orphans, lost, full,
                      keyword_damaged=full and self._keyword_damaged())  # fmt: skip

    def _keyword_damaged(self) -> bool:
        """The saved keyword index of this generation is there but not as it was written."""
        meta = self.dir / "bm25" / "rag_meta.json"
        try:
            info = json.loads(meta.read_text())
        except FileNotFoundError:
            return False  # none saved yet: built on the next question
        except (OSError, ValueError):
            return True
        if not isinstance(info, dict) or info.get("generation") != self.generation():
            return False  # stale, not damaged: rebuilt on the next question
        return "files" in info and _digests(self.dir / "bm25") != info["files"]

    def missing_vectors(self) -> list[Chunk]:
        """The catalog's passages that Chroma has no vector for."""
        have = set(self.vector_ids())
        missing = sorted(self._catalog_ids() - have)
        found = self.chunks(missing)
        return [found[i] for i in missing]

    def put_vectors(self, chunks: Sequence[Chunk], vectors: np.ndarray) -> None:
        """Write vectors for passages the catalog already holds (a repair)."""
        self._upsert_vectors(chunks, vectors)

    def existing_vectors(self, ids: Sequence[str]) -> dict[str, np.ndarray]:
        """The vectors Chroma already holds for any of these ids (reused, not re-embedded)."""
        if not ids:
            return {}
        try:
            with _CHROMA_LOCK:
                res = self.fresh().get(ids=list(ids), include=["embeddings"])
        except Exception as e:
            self._chroma_failed()
            log.warning("could not look up existing vectors (%s); embedding again", e)
            return {}
        return {
            i: np.asarray(v, dtype=np.float32)
            for i, v in zip(res["ids"], res["embeddings"], strict=True)
        }

    def recover_catalog(self) -> int:
        """Rebuild the catalog's passages from Chroma's copies (text and position are stored
        with every vector). Files come back with no fingerprint, so the next ingest reads
        them again, reusing these vectors where the text is unchanged. Returns passages."""
        rows: list[tuple[Any, ...]] = []
        offset = 0
        try:
            while True:
                with _CHROMA_LOCK:
                    res = self.fresh().get(
                        include=["documents", "metadatas"], limit=1000, offset=offset
                    )
                if not res["ids"]:
                    break
                for i, text, m in zip(res["ids"], res["documents"], res["metadatas"], strict=True):
                    m = m or {}
                    page = m.get("page", -1)
                    rows.append((i, str(m.get("source", "")), int(m.get("position", 0)), text or "",
                                 int(m.get("start_char", 0)), int(m.get("end_char", 0)),
                                 None if page in (-1, None) else int(page),
                                 str(m.get("title", "")), str(m.get("heading", ""))))  # fmt: skip
                offset += len(res["ids"])
        except Exception as e:
            self._chroma_failed()
            raise self._write_failed(e, "reading the vectors back from Chroma") from e
        files: dict[str, list[tuple[Any, ...]]] = {}
        for r in rows:
            files.setdefault(r[1], []).append(r)
        with self._tx() as db:
            db.execute("DELETE FROM chunks")
            db.execute("DELETE FROM files")
            db.executemany("INSERT OR REPLACE INTO chunks VALUES (?,?,?,?,?,?,?,?,?)", rows)
            db.executemany(
                "INSERT OR REPLACE INTO files VALUES (?,?,?,?,?,?,?,?)",
                [
                    (src, None, "indexed", None, rs[0][7], len(rs), max(r[5] for r in rs),
                     time.time())
                    for src, rs in files.items()
                ],
            )  # fmt: skip
            _mark_deleted(db, self.manifest.get("deleted", []))
            self._bump(db)
        self.catalog_was_missing = False
        return len(rows)

    def remember_deletions(self) -> None:
        """A catalog made anew with no vectors to recover from (the old one lost) learns the
        files the user had deleted from the manifest's list."""
        with self._tx() as db:
            _mark_deleted(db, self.manifest.get("deleted", []))
            self._bump(db)
        self.catalog_was_missing = False

    def _upsert_vectors(self, chunks: Sequence[Chunk], vectors: np.ndarray) -> None:
        step = 1000  # below Chroma's max batch size
        try:
            for i in range(0, len(chunks), step):
                part = chunks[i : i + step]
                with _CHROMA_LOCK:
                    collection = self.fresh()
                collection.upsert(
                    ids=[c.id for c in part],
                    embeddings=np.asarray(vectors[i : i + step], dtype=np.float32),
                    documents=[c.text for c in part],
                    metadatas=[
                        {"source": c.source, "start_char": c.start_char, "end_char": c.end_char,
                         "page": c.page if c.page is not None else -1, "title": c.title,
                         "heading": c.heading, "position": c.position}
                        for c in part
                    ],
                )  # fmt: skip
        except StoreError:
            raise
        except Exception as e:
            self._chroma_failed()
            raise self._write_failed(e, "writing to Chroma") from e

    def _delete_vectors(self, ids: Sequence[str]) -> None:
        try:
            for i in range(0, len(ids), 1000):
                with _CHROMA_LOCK:
                    self.fresh().delete(ids=list(ids[i : i + 1000]))
        except Exception as e:
            self._chroma_failed()
            raise self._write_failed(e, "deleting from Chroma") from e

    def _chunk_ids(self, sources: Sequence[str]) -> list[str]:
        out: list[str] = []
        for s in sources:
            out.extend(r[0] for r in self._db.execute("SELECT id FROM chunks WHERE source=?", (s,)))
        return out

    def _tx(self) -> _Transaction:
        self._writable()
        return _Transaction(self)

    @staticmethod
    def _bump(db: sqlite3.Connection) -> None:
        db.execute(
            "INSERT INTO meta VALUES ('generation', '1') ON CONFLICT(key) DO UPDATE "
            "SET value = CAST(value AS INTEGER) + 1"
        )

    def bump_generation(self) -> None:
        """Tell other processes the index changed (they reopen their copy of the vectors)."""
        with self._tx() as db:
            self._bump(db)

    def generation(self) -> int:
        self._writable()
        row = self._db.execute("SELECT value FROM meta WHERE key='generation'").fetchone()
        return int(row[0]) if row else 0

    # --- reading -----------------------------------------------------------------------

    def chunks(self, ids: Sequence[str]) -> dict[str, Chunk]:
        out: dict[str, Chunk] = {}
        for i in range(0, len(ids), 500):
            part = list(ids[i : i + 500])
            marks = ",".join("?" * len(part))
            for r in self._db.execute(
                "SELECT id, source, text, start_char, end_char, title, heading, page, position "
                f"FROM chunks WHERE id IN ({marks})",
                part,
            ):
                out[r[0]] = Chunk(*r)
        return out

    def positions(self, ids: Sequence[str]) -> dict[str, tuple[str, int]]:
        """(source, position in its document) of each chunk, without its text."""
        out: dict[str, tuple[str, int]] = {}
        for i in range(0, len(ids), 500):
            part = list(ids[i : i + 500])
            marks = ",".join("?" * len(part))
            for r in self._db.execute(
                f"SELECT id, source, position FROM chunks WHERE id IN ({marks})", part
            ):
                out[r[0]] = (r[1], r[2])
        return out

    def dense(
        self, vector: np.ndarray, n: int, sources: Sequence[str] | None = None
    ) -> list[tuple[str, float]]:
        """(chunk id, cosine similarity), best first, only chunks the catalog knows;
        `sources`: only chunks of these documents."""
        total = self.count_chunks()
        if total == 0 or (sources is not None and not sources):
            return []
        where = None
        if sources is not None:
            where = {"source": {"$in": list(sources)}}
        try:
            with _CHROMA_LOCK:
                res = self.fresh().query(
                    query_embeddings=np.asarray(vector, dtype=np.float32).reshape(1, -1),
                    n_results=min(n + 10, total),
                    include=["distances"],
                    where=where,
                )
        except Exception as e:
            self._chroma_failed()
            raise StoreError(f"Chroma query failed ({type(e).__name__}: {e})") from e
        ids, dists = res["ids"][0], res["distances"][0]
        known = self.chunks(ids)
        return [(i, 1.0 - float(d)) for i, d in zip(ids, dists, strict=True) if i in known][:n]

    def vectors(self, ids: Sequence[str]) -> dict[str, np.ndarray]:
        """The stored vectors of these chunks."""
        try:
            with _CHROMA_LOCK:
                res = self.fresh().get(ids=list(ids), include=["embeddings"])
        except Exception as e:
            self._chroma_failed()
            raise StoreError(f"Chroma get failed ({type(e).__name__}: {e})") from e
        return {
            i: np.asarray(v, dtype=np.float32)
            for i, v in zip(res["ids"], res["embeddings"], strict=True)
        }

    def keyword(
        self, query: str, n: int, sources: Sequence[str] | None = None
    ) -> list[tuple[str, float]]:
        """(chunk id, BM25 score > 0), best first; `sources`: only chunks of these documents."""
        retriever = self._keyword_index()
        if retriever is None or not self._bm25_ids or (sources is not None and not sources):
            return []
        from . import keyword

        terms = [t for t in keyword.query_terms(query) if t in retriever.vocab_dict]
        if not terms:
            return []
        k = min(n, len(self._bm25_ids))
        mask = None
        if sources is not None:
            wanted = set(sources)
            owner = self._bm25_owner()
            mask = np.fromiter((owner.get(i) in wanted for i in self._bm25_ids), dtype=bool,
                               count=len(self._bm25_ids)).astype(np.float32)  # fmt: skip
            k = min(k, int(mask.sum()))
            if k == 0:
                return []
        docs, scores = retriever.retrieve([terms], k=k, show_progress=False, n_threads=1,
                                          weight_mask=mask)  # fmt: skip
        return [
            (self._bm25_ids[int(d)], float(s))
            for d, s in zip(docs[0], scores[0], strict=True)
            if s > 0
        ]

    def _bm25_owner(self) -> dict[str, str]:
        """chunk id → its source, for the keyword index's current generation."""
        if getattr(self, "_owner_gen", None) != self._bm25_gen:
            self._owner = dict(self._db.execute("SELECT id, source FROM chunks").fetchall())
            self._owner_gen = self._bm25_gen
        return self._owner

    def _keyword_index(self) -> Any:
        gen = self.generation()
        if self._bm25 is not None and self._bm25_gen == gen:
            return self._bm25
        folder = self.dir / "bm25"
        meta = folder / "rag_meta.json"
        if meta.is_file():
            try:
                info = json.loads(meta.read_text())
                if info.get("generation") == gen:
                    import bm25s

                    if "files" in info and _digests(folder) != info["files"]:
                        raise ValueError("its files do not match their checksums")

                    self._bm25 = bm25s.BM25.load(str(folder), mmap=False)
                    self._bm25_ids = info["ids"]
                    self._bm25_gen = gen
                    return self._bm25
            except Exception as e:  # a damaged keyword index is rebuilt, never fatal
                log.warning("keyword index unreadable (%s); rebuilding", e)
        try:  # saved only by the index's writer: a reader beside an ingest keeps it in memory
            with write_lock(self.dir, "saving the keyword index"):
                self.rebuild_keyword_index()
        except (IndexBusy, StoreError, OSError):  # busy, or a full disk: kept in memory
            self.rebuild_keyword_index(save=False)
        return self._bm25

    def rebuild_keyword_index(self, save: bool = True) -> None:
        """BM25 over every chunk. Each chunk's terms are cached in the catalog as ids into
        `keyword_vocab` (`keyword_terms`; triggers drop an entry when its chunk is deleted or
        changed), so only chunks new since the last build are tokenized. The cache is used
        only when it was made by this tokenizer (`keyword.fingerprint`) and is consistent;
        else every chunk is tokenized again and the cache replaced. `save`: the caller holds
        the write lock, and the cache and bm25/ are written."""
        from . import keyword

        gen = self.generation()
        tables = self._has_table("keyword_terms")
        use = tables and self._meta("keyword_format") == keyword.fingerprint()
        try:
            ids, retriever, terms, cache = self._build_keyword(use)
        except ValueError as problem:
            if not use:
                raise
            log.warning("the keyword term cache is inconsistent (%s): tokenizing every chunk "
                        "again", problem)  # fmt: skip
            use = False
            ids, retriever, terms, cache = self._build_keyword(use)
        if save and tables and not self.read_only and (cache or not use):
            self._cache_terms(terms, cache, reset=not use)
        self._bm25_ids = ids
        self._bm25_gen = gen
        if retriever is None:
            self._bm25 = None
            return
        self._bm25 = retriever
        if save:
            folder = self.dir / "bm25"
            tmp = self.dir / "bm25.tmp"
            try:
                import shutil

                shutil.rmtree(tmp, ignore_errors=True)
                retriever.save(str(tmp))
                (tmp / "rag_meta.json").write_text(
                    json.dumps({"generation": gen, "ids": self._bm25_ids, "files": _digests(tmp)})
                )
                shutil.rmtree(folder, ignore_errors=True)
                tmp.replace(folder)
            except OSError as e:  # a read-only index still answers from memory
                log.warning("could not save the keyword index (%s)", e)

    def _has_table(self, name: str) -> bool:
        q = "SELECT 1 FROM sqlite_master WHERE type='table' AND name=?"
        return self._db.execute(q, (name,)).fetchone() is not None

    def _meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def _build_keyword(
        self, cached: bool
    ) -> tuple[list[str], Any, list[tuple[str, int]], list[tuple[str, bytes]]]:
        """The keyword index's chunk ids (in its order) and retriever (None: no chunks), and
        what to add to the cache: new terms with their ids, and the chunks tokenized now.
        `cached`: use the catalog's cached terms (ValueError when they are inconsistent)."""
        from . import keyword

        if cached:
            rows = self._db.execute(
                "SELECT c.id, t.terms, CASE WHEN t.terms IS NULL THEN c.title || char(10) || "
                "c.heading || char(10) || c.text END FROM chunks c "
                "LEFT JOIN keyword_terms t ON t.id = c.id ORDER BY c.source, c.position"
            ).fetchall()  # the text only of chunks not cached
            vocab = dict(self._db.execute("SELECT term, id FROM keyword_vocab"))
        else:
            rows = self._db.execute(
                "SELECT id, NULL, title || char(10) || heading || char(10) || text FROM chunks "
                "ORDER BY source, position"
            ).fetchall()
            vocab = {}
        known = len(vocab)
        blobs: list[bytes] = [r[1] for r in rows]
        todo = [n for n, b in enumerate(blobs) if b is None]
        for n, entry in zip(todo, keyword.terms([rows[n][2] for n in todo]), strict=True):
            blobs[n] = keyword.encode(entry, vocab)
        retriever = keyword.build_from_ids(blobs, vocab) if rows else None
        added = [(t, i) for t, i in vocab.items() if i >= known]
        return [r[0] for r in rows], retriever, added, [(rows[n][0], blobs[n]) for n in todo]

    def _cache_terms(
        self, terms: list[tuple[str, int]], rows: list[tuple[str, bytes]], *, reset: bool
    ) -> None:
        """Remember new terms and chunks' term ids; `reset`: the cache so far is dropped
        first (another tokenizer's, or inconsistent). A full disk only loses the cache."""
        from . import keyword

        try:
            with self._db:  # one transaction
                self._db.execute("BEGIN")
                if reset:
                    self._db.execute("DELETE FROM keyword_terms")
                    self._db.execute("DELETE FROM keyword_vocab")
                    self._db.execute(
                        "INSERT OR REPLACE INTO meta (key, value) VALUES ('keyword_format', ?)",
                        (keyword.fingerprint(),),
                    )
                self._db.executemany("INSERT INTO keyword_vocab (term, id) VALUES (?, ?)", terms)
                self._db.executemany(
                    "INSERT OR REPLACE INTO keyword_terms (id, terms) VALUES (?, ?)", rows
                )
        except sqlite3.Error as e:
            log.warning("could not cache the keyword terms (%s): the next build tokenizes "
                        "them again", e)  # fmt: skip

    # --- status ------------------------------------------------------------------------

    def count_chunks(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM chunks").fetchone()[0])

    def stats(self) -> dict[str, Any]:
        files = self.files()
        indexed = [f for f in files.values() if f.status == "indexed"]
        skipped = [f for f in files.values() if f.status == "skipped"]
        return {
            "index": str(self.dir),
            "chroma": self.settings.chroma_url or str(self.dir / "chroma"),
            "documents": len(indexed),
            "chunks": self.count_chunks(),
            "skipped": [{"source": f.source, "reason": f.reason} for f in skipped],
            "embedding": self.manifest.get("embedding"),
            "chunking": self.manifest.get("chunk"),
            "roots": self.manifest.get("roots", []),
            "versions": self.manifest.get("versions"),
            "created": self.manifest.get("created"),
            "updated": self.manifest.get("updated"),
        }

    def close(self) -> None:
        self._db.close()


class _Transaction:
    """One catalog transaction; a failed commit (a full disk) is a one-line StoreError."""

    def __init__(self, index: Index) -> None:
        self.index = index
        self.db = index._db

    def __enter__(self) -> sqlite3.Connection:
        self.db.execute("BEGIN IMMEDIATE")
        return self.db

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is not None:
            with contextlib.suppress(sqlite3.Error):
                self.db.execute("ROLLBACK")
            if isinstance(exc, sqlite3.DatabaseError):
                raise self.index._write_failed(exc, "writing the catalog") from exc
            return
        try:
            self.db.execute("COMMIT")
        except sqlite3.DatabaseError as e:
            with contextlib.suppress(sqlite3.Error):
                self.db.execute("ROLLBACK")
            raise self.index._write_failed(e, "writing the catalog") from e
        self.index._written()


_PUT_COPY = (
    "INSERT INTO meta VALUES ('manifest', ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value"
)


def _manifest_copy(db: sqlite3.Connection, index_dir: Path) -> dict[str, Any] | None:
    """The catalog's copy of the manifest (written by `write_manifest`), None if it has none."""
    row = db.execute("SELECT value FROM meta WHERE key='manifest'").fetchone()
    return _checked_manifest(json.loads(row[0]), index_dir) if row else None


def _new_manifest(
    settings: StoreSettings, embedder_name: str, dim: int, chunk: ChunkSettings
) -> dict[str, Any]:
    return {
        "format": FORMAT_VERSION,
        "embedding": {"model": embedder_name, "dim": dim},
        "chunk": {"size": chunk.size, "overlap": chunk.overlap},
        "chroma_url": settings.chroma_url,
        "collection": settings.collection,
        "versions": versions(),
        "created": time.time(),
        "updated": time.time(),
        "roots": [],
    }


# what each manifest field must hold when it is there (older manifests may lack some)
def _mark_deleted(db: sqlite3.Connection, sources: Iterable[str]) -> None:
    """A "deleted" row for each of `sources` the catalog does not hold (a file with passages
    was brought back, whatever the manifest's list says)."""
    db.executemany(
        "INSERT OR IGNORE INTO files VALUES (?,?,?,?,?,?,?,?)",
        [(s, None, "deleted", DELETED, None, 0, 0, time.time()) for s in sources],
    )


_FIELDS: dict[str, tuple[type, ...]] = {
    "format": (int,), "embedding": (dict,), "chunk": (dict,), "roots": (list,),
    "collection": (str,), "chroma_url": (str, type(None)), "chunks": (int,),
    "deleted": (list,),
}  # fmt: skip
_SUBFIELDS = {"embedding": ("model", "dim"), "chunk": ("size", "overlap")}


def _checked_manifest(data: Any, index_dir: Path) -> dict[str, Any]:
    """`data` if it is a manifest this rag can read; else ManifestDamaged naming the field."""
    bad = _bad_field(data)
    if bad is not None:
        raise ManifestDamaged(
            f"{Path(index_dir) / MANIFEST} {bad}: restore it with `rag --index {shell(index_dir)} "
            "doctor --repair` (nothing is embedded again)"
        )
    return data


def _bad_field(data: Any) -> str | None:
    """What is wrong with a manifest, as "has "key": value"; None when nothing is."""
    if not isinstance(data, dict):
        return f"holds a {type(data).__name__}, not an object"

    def wrong(value: Any, types: tuple[type, ...]) -> bool:
        return not isinstance(value, types) or isinstance(value, bool)

    for key, types in _FIELDS.items():
        if key in data and wrong(data[key], types):
            return f'has "{key}": {json.dumps(data[key])[:40]}'
    for key, subs in _SUBFIELDS.items():
        for sub in subs:
            got = data.get(key, {}).get(sub)
            if wrong(got, (str,) if sub == "model" else (int,)):
                return f'has "{key}.{sub}": {json.dumps(got)[:40]}'
    for key in ("roots", "deleted"):
        if not all(isinstance(r, str) for r in data.get(key, [])):
            return f'"{key}" that are not all paths'
    return None


def _has_parts(directory: Path) -> bool:
    """A catalog or vectors are there (with or without their manifest)."""
    return (directory / CATALOG).is_file() or (directory / "chroma").is_dir()


def read_manifest(index_dir: Path) -> dict[str, Any] | None:
    path = Path(index_dir) / MANIFEST
    if path.is_dir():
        raise ManifestDamaged(
            f"{path} is a folder, not the index's manifest: move it out of the way, then "
            f"run `rag --index {shell(index_dir)} doctor --repair` (nothing is embedded again)"
        )
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:  # ValueError: bad JSON, bad UTF-8
        raise ManifestDamaged(
            f"{path} is unreadable ({type(e).__name__}): restore it with "
            f"`rag --index {shell(index_dir)} doctor --repair` (nothing is embedded again)"
        ) from e
    return _checked_manifest(data, Path(index_dir))
