"""How ingest and search cost grow with the corpus, to more than 100k chunks. Not a test: figures.

    .venv/bin/python bench/scale.py                         # 1x, 2x, 4x the Python docs, embedded
    .venv/bin/python bench/scale.py --backends embedded,server --plot docs/scale.png
    .venv/bin/python bench/scale.py --factors 1 --backends embedded     # a quick look
    .venv/bin/python bench/scale.py --incremental rows.json --plot docs/scale.png
        # after a code change: the incremental rows again, on the indexes a run left

The corpus is the Python 3.11 HTML docs as Debian installs them (`apt-get install
python3.11-doc`: /usr/share/doc/python3.11/html, 530 pages and their 497 `_sources/` copies,
~32k chunks; `rag ingest` leaves the copies out since 2026-12-08, so the figures of
docs/benchmarks.md are reproduced with RAG_SOURCE_COPIES=1), then 2x and 4x it: copy k of
every page has a quarter of its words replaced by others of the same corpus (a different
text, a different hash, and too different for the search-time near-duplicate fold). Each
(backend, size) runs in a fresh process, so peak RSS is that run's. For each it records:
ingest wall time and chunks/s, peak RSS, disk, warm search p50/p95 (hybrid, k=5) without and
with the default rerank, an unchanged re-ingest, an incremental ingest of one changed page,
and the keyword-index rebuild alone.

What is real and what stands in: reading, HTML parsing, chunking (with MiniLM's own
tokenizer), the catalog, Chroma (embedded, or a `chroma run` server on 127.0.0.1), BM25 and the
cross-encoder are the shipped code. The embedding is not: 128k chunks through MiniLM would
take ~3 hours on these 2 cores for each size, so a stand-in (every word hashed to a fixed
random vector, summed: as cheap as arithmetic, and clustered like text) is timed instead, and
the real embedder's chunks/s is measured on a sample of the same chunks. The projected real
ingest = the run's time without the stand-in's embedding + chunks / the real embedder's rate.
Vector search over stand-in vectors costs what it costs over MiniLM's (same dimension, same
HNSW); its *quality* is not measured here (see "Retrieval quality").
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SOURCE = Path("/usr/share/doc/python3.11/html")
TEXT_SUFFIXES = (".html", ".txt")
QUESTIONS = ROOT / "bench/pydocs_qa.jsonl"
_WORD = re.compile(r"(?<![&#\w])[A-Za-z]{3,}(?![\w;])")
_TAGGED = re.compile(r">([^<]+)<")


class HashEmbedder:
    """Stand-in embedder: each word hashed to one of 32,768 fixed random vectors, summed and
    normalised. Tokens and chunk boundaries come from the real embedder's tokenizer."""

    name = "bench-hash-384"
    dim = 384
    query_prefix = ""

    def __init__(self, real: Any) -> None:
        self.max_tokens = real.max_tokens
        self.token_offsets = real.token_offsets
        self._table = np.random.default_rng(0).standard_normal((1 << 15, 384)).astype(np.float32)
        self.seconds = 0.0

    def embed(self, texts: Sequence[str], progress: Any = None) -> np.ndarray:
        t0 = time.perf_counter()
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        for i, text in enumerate(texts):
            ids = [zlib.crc32(w.encode()) & 0x7FFF for w in re.findall(r"\w+", text.lower())]
            out[i] = self._table[ids or [0]].sum(axis=0)
        out /= np.clip(np.linalg.norm(out, axis=1, keepdims=True), 1e-12, None)
        self.seconds += time.perf_counter() - t0
        if progress:
            progress(len(texts))
        return out


def _perturb(text: str, rng: random.Random, vocab: list[str], share: float) -> str:
    return _WORD.sub(lambda m: rng.choice(vocab) if rng.random() < share else m.group(0), text)


def make_copies(source: Path, work: Path, copies: int, share: float = 0.25) -> list[Path]:
    """copies[0] is the text files of `source` as they are; copy k rewrites a `share` of words."""
    files = sorted(p for p in source.rglob("*") if p.is_file() and p.suffix in TEXT_SUFFIXES)
    vocab = sorted({w for p in files[:200] for w in _WORD.findall(p.read_text(errors="replace"))})
    out = []
    for k in range(copies):
        root = work / f"copy{k}"
        out.append(root)
        if (root / ".done").exists():
            continue
        shutil.rmtree(root, ignore_errors=True)
        for p in files:
            rel = p.relative_to(source)
            dest = root / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            text = p.read_text(errors="replace")
            if k:
                rng = random.Random(f"{k}:{rel}")
                if p.suffix == ".html":
                    text = _TAGGED.sub(
                        lambda m, r=rng: f">{_perturb(m.group(1), r, vocab, share)}<", text
                    )
                else:
                    text = _perturb(text, rng, vocab, share)
            dest.write_text(text)
        (root / ".done").write_text("")
    return out


def _du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(q * (len(xs) - 1)))]


def _hwm_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def search_times(rag: Any, queries: int, rerank_queries: int) -> dict[str, float]:
    """Warm search p50/p95 in ms: hybrid, k=5, without rerank (3 passes over `queries`
    questions) and with the default rerank (`rerank_queries` questions, once)."""
    questions = [json.loads(line)["question"] for line in QUESTIONS.read_text().splitlines()]
    questions = [q for q in questions if q][:queries]
    for q in questions[:5]:  # warm: models loaded, caches filled
        rag.search(q, rerank=0)
    plain = []
    for _ in range(3):
        for q in questions:
            t = time.perf_counter()
            rag.search(q, rerank=0)
            plain.append((time.perf_counter() - t) * 1000)
    rag.search(questions[0])  # the cross-encoder loaded
    reranked = []
    for q in questions[:rerank_queries]:
        t = time.perf_counter()
        rag.search(q)
        reranked.append((time.perf_counter() - t) * 1000)
    return {"search_p50_ms": statistics.median(plain), "search_p95_ms": _pct(plain, 0.95),
            "rerank_p50_ms": statistics.median(reranked),
            "rerank_p95_ms": _pct(reranked, 0.95)}  # fmt: skip


def _rag(index: str, chroma_url: str | None = None) -> tuple[Any, HashEmbedder]:
    """The shipped pipeline over `index`, with the stand-in embedder (returned too: it
    counts its seconds)."""
    from rag.config import Settings
    from rag.embeddings import make_embedder
    from rag.pipeline import Rag

    store: dict[str, Any] = {"index_dir": Path(index)}
    if chroma_url:  # a server (an index reopened later takes it from its manifest)
        store["chroma_url"] = chroma_url
    settings = Settings.from_env().with_(store=store)
    embedder = HashEmbedder(make_embedder(settings.embed))
    return Rag(settings, embedder=embedder), embedder


def one_run(args: argparse.Namespace) -> dict[str, Any]:
    """One (backend, size) in this process: ingest, search, re-ingest; returns the figures."""
    rag, embedder = _rag(args.index, args.chroma_url)
    roots = [Path(p) for p in args.roots]
    t0 = time.perf_counter()
    report = rag.ingest(roots)
    ingest_s = time.perf_counter() - t0
    chunks = rag.index.stats()["chunks"]
    rss_ingest = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    times = search_times(rag, args.queries, args.rerank_queries)
    t = time.perf_counter()
    rag.ingest(roots)
    unchanged_s = time.perf_counter() - t
    page = roots[0] / "library/os.html"
    page.write_text(page.read_text().replace("</body>", "<p>A paragraph added by the scale bench "
                                             "to change this page.</p></body>"))  # fmt: skip
    t = time.perf_counter()
    changed = rag.ingest(roots)
    changed_s = time.perf_counter() - t
    t = time.perf_counter()
    rag.index.rebuild_keyword_index()
    bm25_s = time.perf_counter() - t
    rag.close()
    return {
        "chunks": chunks,
        "documents": len(report.added),
        "ingest_s": ingest_s,
        "stand_in_embed_s": embedder.seconds,
        "rss_mb": rss_ingest / 1024,
        "rss_end_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "disk_mb": _du(Path(args.index)) / 2**20,
        **times,
        "unchanged_s": unchanged_s,
        "one_changed_s": changed_s,
        "one_changed_updated": len(changed.updated),
        "bm25_rebuild_s": bm25_s,
    }


def incremental_run(args: argparse.Namespace) -> dict[str, Any]:
    """On an index a full run left (its documents copied back): with this checkout's code,
    an ingest that brings it in line (the page the full run changed is changed back, and an
    older keyword cache is filled), then one changed page, an unchanged ingest, and the
    keyword-index rebuild alone."""
    rag, _ = _rag(args.index)
    roots = [Path(p) for p in args.roots]
    t = time.perf_counter()
    rag.ingest(roots)
    first_s = time.perf_counter() - t
    times = search_times(rag, args.queries, args.rerank_queries)
    page = roots[0] / "library/json.html"
    page.write_text(
        page.read_text().replace("</body>", "<p>Changed by the scale bench.</p></body>")
    )
    t = time.perf_counter()
    changed = rag.ingest(roots)
    changed_s = time.perf_counter() - t
    t = time.perf_counter()
    rag.ingest(roots)
    unchanged_s = time.perf_counter() - t
    t = time.perf_counter()
    rag.index.rebuild_keyword_index()
    bm25_s = time.perf_counter() - t
    rag.close()
    return {"in_line_s": first_s, "one_changed_s": changed_s, "unchanged_s": unchanged_s,
            "one_changed_updated": len(changed.updated), "bm25_rebuild_s": bm25_s,
            **times}  # fmt: skip


def real_embedder_rate(roots: list[Path], sample: int = 256) -> float:
    """Chunks/s of the shipped embedder on `sample` chunks of the corpus (its real lengths)."""
    from rag.chunking import chunk_document
    from rag.config import Settings
    from rag.embeddings import make_embedder
    from rag.loaders import discover, load_file
    from rag.types import Skipped

    settings = Settings.from_env()
    embedder = make_embedder(settings.embed)
    files = discover(roots, keep_copies=settings.load.source_copies).files
    rng = random.Random(0)
    texts: list[str] = []
    for p in rng.sample(files, min(60, len(files))):
        doc = load_file(p, settings.load)
        if not isinstance(doc, Skipped):
            texts += [c.embedding_text() for c in chunk_document(doc, embedder.token_offsets,
                                                                 settings.chunk)]  # fmt: skip
    texts = rng.sample(texts, min(sample, len(texts)))
    embedder.embed(texts[:16])
    t = time.perf_counter()
    embedder.embed(texts)
    return len(texts) / (time.perf_counter() - t)


def start_chroma(data: Path, port: int = 0) -> tuple[subprocess.Popen[bytes], str]:
    exe = Path(sys.executable).parent / "chroma"
    if not port:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
    data.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        [str(exe), "run", "--path", str(data / "db"), "--host", "127.0.0.1", "--port", str(port)],
        stdout=(data / "server.log").open("w"), stderr=subprocess.STDOUT,
        env={"ANONYMIZED_TELEMETRY": "False", "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    deadline = time.time() + 60
    while time.time() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return proc, f"http://127.0.0.1:{port}"
        time.sleep(0.2)
    proc.kill()
    raise SystemExit(f"chroma run did not start: {(data / 'server.log').read_text()[-2000:]}")


def plot(rows: list[dict[str, Any]], out: Path) -> None:
    """Three panels against corpus size; a backend one colour, today's code (the
    --incremental rows, when there are any) solid and the full run's dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    for colour, backend in zip(("C0", "C1"), sorted({r["backend"] for r in rows}), strict=False):
        rs = sorted((r for r in rows if r["backend"] == backend), key=lambda r: r["chunks"])
        n = [r["chunks"] / 1000 for r in rs]

        after = "_after" if all("search_p50_ms_after" in r for r in rs) else ""
        lines = [(0, f"search_p50_ms{after}", "p50", "o-"),
                 (0, f"search_p95_ms{after}", "p95", "^:"),
                 (1, "one_changed_s_after", "1 page changed (term cache)", "o-"),
                 (1, "bm25_rebuild_s_after", "keyword rebuild (term cache)", "s-"),
                 (1, "one_changed_s", "1 page changed (before)", "o--"),
                 (1, "bm25_rebuild_s", "keyword rebuild (before)", "s--"),
                 (2, "rss_mb", "peak RSS of rag, MB", "o-"),
                 (2, "disk_mb", "disk, MB", "s--")]  # fmt: skip
        for panel, key, label, style in lines:
            if all(key in r for r in rs):
                axes[panel].plot(n, [r[key] for r in rs], style, color=colour,
                                 label=f"{backend}: {label}")  # fmt: skip
    titles = ("warm search, ms (hybrid, k=5, no rerank)", "incremental ingest, s",
              "memory and disk")  # fmt: skip
    for ax, title in zip(axes, titles, strict=True):
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("chunks (thousands)")
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--source", type=Path, default=SOURCE)
    ap.add_argument("--factors", default="1,2,4")
    ap.add_argument("--backends", default="embedded", help="embedded,server")
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "rag-scale")
    ap.add_argument("--queries", type=int, default=40)
    ap.add_argument("--rerank-queries", type=int, default=15)
    ap.add_argument("--json", type=Path, help="also write the rows here")
    ap.add_argument("--plot", type=Path, help="a PNG of cost against size")
    ap.add_argument("--incremental", type=Path, metavar="ROWS_JSON",
                    help="reuse the indexes a full run left in --work (its --json rows): measure "
                         "only the incremental ingest and keyword rebuild, with this code, "
                         "and add them to the rows as *_after")  # fmt: skip
    # one run, in a child process
    ap.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--index", help=argparse.SUPPRESS)
    ap.add_argument("--chroma-url", help=argparse.SUPPRESS)
    ap.add_argument("--roots", nargs="*", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(incremental_run(args) if args.incremental else one_run(args)))
        return
    if args.incremental:
        rows = json.loads(args.incremental.read_text())
        for row in rows:
            run_dir = args.work / f"{row['backend']}-{row['factor']}x"
            copies = [args.work / "corpus" / f"copy{k}" for k in range(row["factor"])]
            roots = [run_dir / "docs" / c.name for c in copies]
            shutil.rmtree(run_dir / "docs", ignore_errors=True)
            for c, r in zip(copies, roots, strict=True):
                shutil.copytree(c, r)
            server = None
            if row["backend"] == "server":
                manifest = json.loads((run_dir / "index/manifest.json").read_text())
                port = int(manifest["chroma_url"].rsplit(":", 1)[1])
                server, _ = start_chroma(run_dir / "chroma-server", port)
            cmd = [sys.executable, __file__, "--one", "--incremental", str(args.incremental),
                   "--index", str(run_dir / "index"), "--queries", str(args.queries),
                   "--rerank-queries", str(args.rerank_queries),
                   "--roots", *map(str, roots)]  # fmt: skip
            out = subprocess.run(cmd, capture_output=True, text=True,
                                 env=dict(os.environ, ANONYMIZED_TELEMETRY="False"))  # fmt: skip
            if server:
                server.terminate()
                server.wait(30)
            if out.returncode:
                raise SystemExit(f"{run_dir.name} failed:\n{out.stderr[-3000:]}")
            after = json.loads(out.stdout.splitlines()[-1])
            row.update({f"{k}_after": v for k, v in after.items()})
            print(json.dumps(row), file=sys.stderr)
            shutil.rmtree(run_dir / "docs", ignore_errors=True)
        args.incremental.write_text(json.dumps(rows, indent=1) + "\n")
        print_table(rows, rows[0]["real_embedder_chunks_s"])
        if args.plot:
            plot(rows, args.plot)
        return
    if not args.source.is_dir():
        raise SystemExit(f"{args.source} not found: apt-get install python3.11-doc, or --source")
    factors = [int(f) for f in args.factors.split(",")]
    t0 = time.perf_counter()
    copies = make_copies(args.source, args.work / "corpus", max(factors))
    print(f"corpus: {max(factors)} copies in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    rate = real_embedder_rate(copies[:1])
    print(f"real embedder (MiniLM int8): {rate:.1f} chunks/s", file=sys.stderr)
    rows = []
    for backend in args.backends.split(","):
        for f in factors:
            run_dir = args.work / f"{backend}-{f}x"
            shutil.rmtree(run_dir, ignore_errors=True)
            roots = [run_dir / "docs" / c.name for c in copies[:f]]
            for c, r in zip(copies[:f], roots, strict=True):  # fresh copies: the run edits one
                shutil.copytree(c, r)
            server, url = None, ""
            if backend == "server":
                server, url = start_chroma(run_dir / "chroma-server")
            cmd = [sys.executable, __file__, "--one", "--index", str(run_dir / "index"),
                   "--queries", str(args.queries), "--rerank-queries", str(args.rerank_queries),
                   "--chroma-url", url, "--roots", *map(str, roots)]  # fmt: skip
            env = dict(os.environ, ANONYMIZED_TELEMETRY="False")
            out = subprocess.run(cmd, capture_output=True, text=True, env=env)
            if out.returncode:
                raise SystemExit(f"{backend} {f}x failed:\n{out.stderr[-3000:]}")
            row = {"backend": backend, "factor": f, **json.loads(out.stdout.splitlines()[-1])}
            if server:
                row["server_rss_mb"] = _hwm_kb(server.pid) / 1024
                row["disk_mb"] += _du(run_dir / "chroma-server") / 2**20
                server.terminate()
                server.wait(30)
            own = row["ingest_s"] - row["stand_in_embed_s"]
            row["ingest_chunks_s"] = row["chunks"] / row["ingest_s"]
            row["projected_real_ingest_s"] = own + row["chunks"] / rate
            row["real_embedder_chunks_s"] = rate
            rows.append(row)
            print(json.dumps(row), file=sys.stderr)
            shutil.rmtree(run_dir / "docs", ignore_errors=True)
    print_table(rows, rate)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")
    if args.plot:
        plot(rows, args.plot)


def print_table(rows: list[dict[str, Any]], rate: float) -> None:
    full = [("backend", "{}"), ("chunks", "{:,}"), ("ingest_s", "{:.0f}"),
            ("stand_in_embed_s", "{:.0f}"), ("projected_real_ingest_s", "{:,.0f}"),
            ("rss_mb", "{:,.0f}"), ("server_rss_mb", "{:,.0f}"), ("disk_mb", "{:,.0f}"),
            ("search_p50_ms", "{:.1f}"), ("search_p95_ms", "{:.1f}"),
            ("rerank_p50_ms", "{:,.0f}"), ("unchanged_s", "{:.1f}"),
            ("one_changed_s", "{:.1f}"), ("bm25_rebuild_s", "{:.1f}")]  # fmt: skip
    print(f"real embedder: {rate:.1f} chunks/s (MiniLM int8, this machine, this run)")
    _table(rows, full)
    after = [("backend", "{}"), ("chunks", "{:,}")] + [
        (f"{c}_after", f) for c, f in full if f"{c}_after" in rows[0]
    ] + [("in_line_s_after", "{:.1f}")]  # fmt: skip
    if len(after) > 3:
        print("\nagain, with this checkout (--incremental):")
        _table(rows, after)


def _table(rows: list[dict[str, Any]], cols: list[tuple[str, str]]) -> None:
    print("| " + " | ".join(c for c, _ in cols) + " |")
    print("|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(fmt.format(r[c]) if c in r else "" for c, fmt in cols) + " |")


if __name__ == "__main__":
    main()
