"""Ingest, incremental re-ingest, removal, bad files, manifests: through the Rag object."""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
from pathlib import Path

import pytest

from rag.errors import IndexMismatch, IndexMissing, ManifestDamaged, UsageError
from rag.pipeline import Rag
from rag.store import MANIFEST
from rag.types import Skipped

from .conftest import settings_for


def test_ingest_then_reingest_is_incremental(tmp_path: Path, corpus: Path) -> None:
    index = tmp_path / "idx"
    rag = Rag(settings_for(index))
    r1 = rag.ingest([corpus])
    assert sorted(Path(s).name for s in r1.added) == ["alpha.md", "beta.txt"]
    assert r1.chunks_added == r1.chunks_total > 0 and r1.documents_total == 2

    r2 = Rag(settings_for(index)).ingest([corpus])
    assert r2.added == [] and r2.updated == [] and r2.chunks_added == 0
    assert len(r2.unchanged) == 2

    (corpus / "beta.txt").write_text("Beta now has 2,000 bikes at 120 stations across Ghent.\n")
    (corpus / "alpha.md").unlink()
    (corpus / "gamma.txt").write_text("Gamma is a tram line opened in 2015 in Porto.\n")
    rag3 = Rag(settings_for(index))
    r3 = rag3.ingest([corpus])
    assert [Path(s).name for s in r3.updated] == ["beta.txt"]
    assert [Path(s).name for s in r3.removed] == ["alpha.md"]
    assert [Path(s).name for s in r3.added] == ["gamma.txt"]
    assert r3.documents_total == 2

    # the index answers from the new content only, in every mode
    for mode in ("dense", "keyword", "hybrid"):
        hits = rag3.search("How many bikes does Beta have?", k=3, mode=mode)  # type: ignore[arg-type]
        texts = " ".join(h.chunk.text for h in hits)
        assert "2,000 bikes" in texts and "1,200" not in texts
        assert all("Alpha" not in h.chunk.text for h in hits)
    # Chroma holds exactly the catalog's chunks: nothing stale left behind
    assert rag3.index.collection.count() == rag3.index.count_chunks()


def test_a_new_loader_version_rereads_unchanged_files(
    tmp_path: Path, corpus: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When a loader starts extracting different text from the same bytes (LOADER_VERSION
    bumped), the next ingest re-reads every file instead of keeping the old text."""
    from rag import loaders

    index = tmp_path / "idx"
    Rag(settings_for(index)).ingest([corpus])
    assert Rag(settings_for(index)).ingest([corpus]).updated == []
    monkeypatch.setattr(loaders, "LOADER_VERSION", loaders.LOADER_VERSION + 1)
    r = Rag(settings_for(index)).ingest([corpus])
    assert sorted(Path(s).name for s in r.updated) == ["alpha.md", "beta.txt"]
    assert r.documents_total == 2 and r.chunks_total == r.chunks_added
    again = Rag(settings_for(index)).ingest([corpus])
    assert again.updated == [] and len(again.unchanged) == 2


def test_a_text_file_without_a_title_line_is_listed_by_its_opening_words(tmp_path: Path) -> None:
    """The display title comes from the text; the title embedded with each chunk stays the
    file's stem, so search ranks exactly as before (measured: titling the chunks by their
    opening words cost MRR on both seed sets)."""
    docs = tmp_path / "docs"
    docs.mkdir()
    long_opening = (
        "Darcy Drought-Behares, a research fellow, holds an MA in Korean Studies "
        "and a PhD in Political Science, and serves as a nonresident scholar. "
    )
    (docs / "003_bfe5.txt").write_text(long_opening * 2 + "\n\nThe interview follows.\n")
    rag = Rag(settings_for(tmp_path / "idx"))
    rag.ingest([docs])
    (source,) = rag.files()
    assert rag.titles() == {source: "Darcy Drought-Behares, a research fellow, holds an MA in…"}
    assert rag.titles([source, "/not/indexed.txt"]) == rag.titles()
    assert {h.chunk.title for h in rag.search("PhD", k=3)} == {"003_bfe5"}


def test_ingest_of_one_folder_keeps_others(tmp_path: Path, corpus: Path) -> None:
    other = tmp_path / "other"
    other.mkdir()
    (other / "delta.txt").write_text("Delta is a ferry between Tallinn and Helsinki.\n")
    rag = Rag(settings_for(tmp_path / "idx"))
    rag.ingest([corpus])
    rag.ingest([other])
    report = rag.ingest([other])
    assert report.removed == [] and report.documents_total == 3


def test_bad_files_are_reported_and_do_not_stop_ingest(tmp_path: Path, corpus: Path) -> None:
    (corpus / "empty.txt").write_text("")
    (corpus / "broken.pdf").write_bytes(b"%PDF-1.7 garbage")
    (corpus / "image.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    (corpus / "tiny-binary.txt").write_bytes(bytes(range(256)) * 10)
    rag = Rag(settings_for(tmp_path / "idx"))
    report = rag.ingest([corpus])
    reasons = {Path(s.source).name: s.reason for s in report.skipped}
    assert set(reasons) == {"empty.txt", "broken.pdf", "tiny-binary.txt"}
    assert "empty" in reasons["empty.txt"] and "binary" in reasons["tiny-binary.txt"]
    assert [Path(u).name for u in report.unsupported] == ["image.png"]
    assert report.documents_total == 2
    # a skipped file is remembered: unchanged, it is reported again without re-reading
    again = rag.ingest([corpus])
    assert {Path(s.source).name for s in again.skipped} == set(reasons)
    status = rag.status()
    assert {Path(s["source"]).name for s in status["skipped"]} == set(reasons)


def test_file_that_turns_bad_loses_its_chunks(tmp_path: Path, corpus: Path) -> None:
    rag = Rag(settings_for(tmp_path / "idx"))
    rag.ingest([corpus])
    (corpus / "beta.txt").write_bytes(b"")
    report = rag.ingest([corpus])
    assert [Path(s.source).name for s in report.skipped] == ["beta.txt"]
    assert all("Ghent" not in h.chunk.text for h in rag.search("bicycle Ghent", k=5))


def test_missing_index_and_missing_path(tmp_path: Path) -> None:
    rag = Rag(settings_for(tmp_path / "none"))
    with pytest.raises(IndexMissing, match=r"rag --index .* ingest PATH"):
        rag.search("anything")
    with pytest.raises(UsageError, match="no such file"):
        rag.ingest([tmp_path / "missing"])


def test_manifest_mismatch_is_refused_with_the_fix(
    tmp_path: Path, corpus: Path, caplog: pytest.LogCaptureFixture
) -> None:
    index = tmp_path / "idx"
    Rag(settings_for(index)).ingest([corpus])
    other_chunking = settings_for(index, chunk={"size": 128})
    with pytest.raises(IndexMismatch, match=r"ingest --rebuild"):
        Rag(other_chunking).ingest([corpus])
    # a query does not depend on chunking: it still answers
    assert Rag(other_chunking).search("solar pumps", k=1)
    # an index built with another model: its manifest and the catalog's copy both say so
    # (the manifest alone saying so is a hand edit, restored by doctor --repair)
    manifest = json.loads((index / MANIFEST).read_text())
    manifest["embedding"]["model"] = "some-other-model"
    (index / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(ManifestDamaged, match=r'"embedding".*doctor --repair'):
        Rag(settings_for(index)).search("solar pumps")
    with contextlib.closing(sqlite3.connect(index / "catalog.sqlite")) as db, db:
        db.execute("UPDATE meta SET value = ? WHERE key = 'manifest'", (json.dumps(manifest),))
    with pytest.raises(IndexMismatch, match=r"some-other-model.*rebuild it with `rag --index"):
        Rag(settings_for(index)).search("solar pumps")
    # --rebuild starts over with this run's settings
    with caplog.at_level(logging.WARNING):
        report = Rag(other_chunking).ingest([corpus], rebuild=True)
    assert report.documents_total == 2 and len(report.added) == 2
    assert "restor" not in caplog.text  # a rebuild is a new index, not a repaired one
    assert json.loads((index / MANIFEST).read_text())["chunk"]["size"] == 128


def test_keyword_index_rebuilds_when_behind(tmp_path: Path, corpus: Path) -> None:
    """An ingest killed before the keyword index was rebuilt still answers by keyword."""
    index = tmp_path / "idx"
    rag = Rag(settings_for(index))
    rag.ingest([corpus])
    # simulate a crash right after a catalog commit: keyword index from an older generation
    meta = index / "bm25" / "rag_meta.json"
    info = json.loads(meta.read_text())
    info["generation"] -= 1
    meta.write_text(json.dumps(info))
    hits = Rag(settings_for(index)).search("Horizon programme funding", k=2, mode="keyword")
    assert hits and "Horizon" in hits[0].chunk.text
    assert json.loads(meta.read_text())["generation"] == info["generation"] + 1


def test_reindexing_a_document_removes_its_old_vectors(tmp_path: Path, corpus: Path) -> None:
    from dataclasses import replace

    from rag.chunking import chunk_document
    from rag.loaders import load_file

    rag = Rag(settings_for(tmp_path / "idx"))
    rag.ingest([corpus])
    before = rag.index.collection.count()
    doc = load_file(corpus / "beta.txt")
    assert not isinstance(doc, Skipped)
    changed = replace(doc, text=doc.text + "It opened in 2012.", sha256="f" * 64)
    chunks = chunk_document(changed, rag.embedder.token_offsets)
    vectors = rag.embedder.embed([c.embedding_text() for c in chunks])
    rag.index.put_documents([(changed, chunks)], vectors)
    # without any sweep: the replaced chunks' vectors are gone, the new ones are there
    assert rag.index.collection.count() == before == rag.index.count_chunks()
    assert set(rag.index.vectors([c.id for c in chunks])) == {c.id for c in chunks}


def test_orphan_vectors_are_ignored_and_swept(tmp_path: Path, corpus: Path) -> None:
    import numpy as np

    index = tmp_path / "idx"
    rag = Rag(settings_for(index))
    rag.ingest([corpus])
    # a vector written by an ingest that died before its catalog commit
    rag.index.collection.upsert(
        ids=["orphan"],
        embeddings=np.ones((1, rag.embedder.dim), dtype=np.float32),
        documents=["orphan text"],
    )
    hits = rag.search("orphan text", k=10, mode="dense")
    assert "orphan" not in {h.chunk.id for h in hits}
    assert rag.index.sweep_orphans() == 1
    assert rag.index.collection.count() == rag.index.count_chunks()


def test_a_deleted_document_stays_out_until_ingested_by_name(tmp_path: Path, corpus: Path) -> None:
    """ "Re-index all" used to bring a deleted document back silently."""
    rag = Rag(settings_for(tmp_path / "idx"))
    rag.ingest([corpus])
    beta = str((corpus / "beta.txt").resolve())
    assert rag.delete([beta]) > 0
    assert beta not in rag.files()
    again = rag.ingest([corpus])  # the folder again: beta is left out, and said so
    assert again.excluded == [beta] and beta not in again.added and beta not in rag.files()
    assert all(h.chunk.source != beta for h in rag.search("bicycle sharing Ghent", k=5))
    back = rag.ingest([corpus / "beta.txt"])  # by name: it comes back
    assert back.added == [beta] and rag.files()[beta].status == "indexed"
    assert rag.search("bicycle sharing Ghent", k=1)[0].chunk.source == beta
    # a deleted file that is then removed from disk is forgotten quietly
    rag.delete([beta])
    (corpus / "beta.txt").unlink()
    final = rag.ingest([corpus])
    assert final.removed == [] and final.excluded == []
    rag.close()


def test_files_are_read_ahead_on_a_thread_in_order_and_stop_with_the_reader() -> None:
    """Ingest reads and chunks files on a thread of their own while earlier ones are
    embedded; results come in order, an error at its item, and a reader that stops early
    stops the thread within `depth` items."""
    import threading
    import time

    from rag.pipeline import _read_ahead

    where: list[str] = []

    def read(n: int) -> int:
        where.append(threading.current_thread().name)
        if n == 7:
            raise ValueError("file 7 is bad")
        return n * n

    got = []
    with pytest.raises(ValueError, match="file 7 is bad"):
        for n, sq in _read_ahead(range(10), read, depth=3):
            got.append((n, sq))
    assert got == [(n, n * n) for n in range(7)]
    assert set(where) == {"rag-read-ahead"}

    calls: list[int] = []

    def slow(n: int) -> int:
        calls.append(n)
        time.sleep(0.01)
        return n

    reader = _read_ahead(range(1000), slow, depth=2)
    assert next(reader) == (0, 0)
    reader.close()  # the consumer stops: Ctrl-C, an error, or done with what it needed
    time.sleep(0.3)
    stopped_at = len(calls)
    time.sleep(0.3)
    assert len(calls) == stopped_at <= 5  # 1 taken + 2 queued + 1 being read (+1 racing)
    assert "rag-read-ahead" not in {t.name for t in threading.enumerate()}  # it ended


def test_files_are_read_on_a_thread_only_beside_a_remote_embedder(
    tmp_path: Path, corpus: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A local embedder keeps both cores busy (reading beside it was slower), so files are
    read in turn; with one elsewhere (--embed-url) they are read meanwhile, on a thread."""
    import threading

    from rag import loaders
    from rag.config import EmbedSettings
    from rag.embeddings import make_embedder

    readers: list[str] = []
    load = loaders.load_file

    def spy(*args: object, **kwargs: object) -> object:
        readers.append(threading.current_thread().name)
        return load(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(loaders, "load_file", spy)
    local = make_embedder(EmbedSettings())
    Rag(settings_for(tmp_path / "a"), embedder=local).ingest([corpus])
    assert readers and set(readers) == {threading.current_thread().name}

    class Remote:  # the bundled model, as if behind an endpoint
        runs_here = False
        name, dim, max_tokens, query_prefix = local.name, local.dim, local.max_tokens, ""
        token_offsets, embed = local.token_offsets, local.embed

    readers.clear()
    report = Rag(settings_for(tmp_path / "b"), embedder=Remote()).ingest([corpus])
    assert set(readers) == {"rag-read-ahead"} and report.chunks_total > 0


# --- Sphinx `_sources/` copies ------------------------------------------------------------


def _docs_with_copies(root: Path) -> dict[str, Path]:
    """Two pages and their reST copies, as Sphinx lays them out."""
    paths = {}
    for name, topic in (("alpha", "tide pools hold anemones"), ("beta", "glaciers carve fjords")):
        page = root / "library" / f"{name}.html"
        copy = root / "_sources" / "library" / f"{name}.rst.txt"
        for p in (page, copy):
            p.parent.mkdir(parents=True, exist_ok=True)
        page.write_text(
            f"<html><body><h1>{name}</h1><p>The {name} page: {topic}.</p></body></html>"
        )
        copy.write_text(f"{name}\n=====\n\nThe ``{name}`` page: {topic}.\n")
        paths[name], paths[f"{name}-copy"] = page, copy
    return paths


def test_a_copy_is_left_out_only_when_its_page_is_indexed(tmp_path: Path) -> None:
    docs = tmp_path / "html"
    p = _docs_with_copies(docs)
    src = {k: str(v.resolve()) for k, v in p.items()}
    rag = Rag(settings_for(tmp_path / "idx"))
    report = rag.ingest([docs])
    assert sorted(report.added) == [src["alpha"], src["beta"]]
    assert report.copies == [src["alpha-copy"], src["beta-copy"]]

    # a page that cannot be indexed (here: too large) leaves its copy the only one of its text
    p["beta"].write_text("<p>" + "glaciers carve fjords. " * 400 + "</p>")
    small = Rag(settings_for(tmp_path / "idx", load={"max_file_mb": 0.005}))
    report = small.ingest([docs])
    assert [s.source for s in report.skipped] == [src["beta"]]
    assert report.added == [src["beta-copy"]] and report.copies == [src["alpha-copy"]]
    assert small.search("glaciers carve fjords", k=1)[0].chunk.source == src["beta-copy"]
    small.close()

    # a page the user deleted takes its copy with it
    rag = Rag(settings_for(tmp_path / "idx"))
    rag.ingest([docs])
    rag.delete([src["alpha"]])
    report = rag.ingest([docs])
    assert report.excluded == [src["alpha"]] and src["alpha-copy"] in report.copies
    assert src["alpha-copy"] not in rag.files()
    rag.close()


def test_a_copy_given_by_name_stays_and_a_deleted_one_stays_deleted(tmp_path: Path) -> None:
    docs = tmp_path / "html"
    p = _docs_with_copies(docs)
    src = {k: str(v.resolve()) for k, v in p.items()}
    rag = Rag(settings_for(tmp_path / "idx"))
    rag.ingest([docs])
    assert rag.ingest([p["alpha-copy"]]).added == [src["alpha-copy"]]
    report = rag.ingest([docs])  # the folder again: the copy named once is a file of its own
    assert src["alpha-copy"] in report.unchanged and report.copies == [src["beta-copy"]]
    assert rag.files()[src["alpha-copy"]].status == "indexed"
    rag.close()

    both = Rag(settings_for(tmp_path / "idx2", load={"source_copies": True}))
    both.ingest([docs])
    both.delete([src["beta-copy"]])
    both.close()
    plain = Rag(settings_for(tmp_path / "idx2"))
    assert plain.ingest([docs]).copies == [src["alpha-copy"], src["beta-copy"]]
    assert plain.index.files()[src["beta-copy"]].status == "deleted"  # not purged as gone
    plain.close()
    both = Rag(settings_for(tmp_path / "idx2", load={"source_copies": True}))
    report = both.ingest([docs])
    assert report.excluded == [src["beta-copy"]] and src["alpha-copy"] in report.added
    both.close()


def test_a_link_loop_where_a_page_would_be_does_not_stop_discovery(tmp_path: Path) -> None:
    from rag.loaders import discover

    docs = tmp_path / "html"
    p = _docs_with_copies(docs)
    p["alpha"].unlink()
    p["alpha"].symlink_to(p["alpha"].name)  # library/alpha.html -> itself
    (docs / "library" / "alpha").symlink_to("alpha")  # the dirhtml place, a loop too
    found = discover([docs])
    assert p["alpha-copy"] in found.files and p["alpha-copy"] not in found.copies
    assert found.copies == {p["beta-copy"]: p["beta"]}


def test_deletions_are_in_the_manifest_and_survive_a_catalog_lost_with_no_vectors(
    tmp_path: Path,
) -> None:
    """In one process (a UI or API server on a new index) and after the catalog is lost
    when nothing is left to recover it from."""
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "only.txt").write_text("Tide pools hold anemones and small crabs at low tide.")
    only = str((docs / "only.txt").resolve())
    rag = Rag(settings_for(tmp_path / "idx"))
    rag.ingest([docs])
    rag.delete([only])
    assert json.loads((tmp_path / "idx" / MANIFEST).read_text())["deleted"] == [only]
    rag.close()
    for f in (tmp_path / "idx").glob("catalog.sqlite*"):
        f.unlink()
    rag = Rag(settings_for(tmp_path / "idx"))
    report = rag.ingest([docs])
    assert report.excluded == [only] and not report.added
    assert rag.index.files()[only].status == "deleted"
    rag.close()
