"""Does reading files while embedding earlier ones pay? Not a test: figures.

    .venv/bin/python bench/ingest_overlap.py [FOLDER] [--rounds 2]

Ingests FOLDER (default: evals/corpora/pydocs) into fresh temp indexes with the bundled
embedder, alternating how files are read:
  - "read ahead": on a thread, while others are embedded (shipped for --embed-url only);
  - "in turn": each group's files read when it is embedded (shipped for local embedders);
  - "read first": every file read and chunked before the first is embedded (before 2026-12-03);
and, once, times reading + chunking alone and embedding alone, the two parts the overlap
can hide one behind the other. Same process, same models, rounds interleaved.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rag import pipeline  # noqa: E402
from rag.chunking import chunk_document  # noqa: E402
from rag.config import Settings  # noqa: E402
from rag.embeddings import make_embedder  # noqa: E402
from rag.loaders import discover, load_file  # noqa: E402
from rag.types import Skipped  # noqa: E402

AHEAD, IN_TURN = pipeline._read_ahead, pipeline._read_in_turn


def read_first(items, read):  # type: ignore[no-untyped-def]
    done = [(item, read(item)) for item in items]  # everything read before anything is embedded
    yield from done


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", nargs="?", type=Path, default=ROOT / "evals/corpora/pydocs")
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    settings = Settings.from_env()
    embedder = make_embedder(settings.embed)

    t0 = time.perf_counter()
    files = discover([args.folder], keep_copies=settings.load.source_copies).files
    docs = [d for d in (load_file(p, settings.load) for p in files) if not isinstance(d, Skipped)]
    chunks = [c for d in docs for c in chunk_document(d, embedder.token_offsets, settings.chunk)]
    read_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    embedder.embed([c.embedding_text() for c in chunks])
    embed_s = time.perf_counter() - t0

    readers = {"read ahead (a thread)": AHEAD, "in turn (shipped, local embedder)": IN_TURN,
               "read first (before 2026-12-03)": read_first}  # fmt: skip
    times: dict[str, list[float]] = {name: [] for name in readers}
    for _ in range(args.rounds):
        for name, reader in readers.items():
            pipeline._read_in_turn = reader  # what a local embedder uses
            with tempfile.TemporaryDirectory() as tmp:
                s = settings.with_(store={"index_dir": Path(tmp) / "index"})
                rag = pipeline.Rag(s, embedder=embedder)
                t0 = time.perf_counter()
                report = rag.ingest([args.folder])
                times[name].append(time.perf_counter() - t0)
                rag.close()
    pipeline._read_in_turn = IN_TURN

    n = report.chunks_total
    print(f"{args.folder}: {len(files)} files, {n} chunks, {args.rounds} rounds interleaved\n")
    print("| | seconds (median) | chunks/s | vs read first |\n|---|---:|---:|---:|")
    base = statistics.median(times["read first (before 2026-12-03)"])
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"| ingest, {name} | {med:.1f} | {n / med:.1f} | {base / med:.2f}× |")
    print(f"| reading + chunking alone | {read_s:.1f} | | |")
    print(f"| embedding alone | {embed_s:.1f} | {n / embed_s:.1f} | |")


if __name__ == "__main__":
    main()
