"""Retrieval quality and speed, printed as tables. Not a test: figures for the README.

    python bench/bench.py                       # seeds: quality by mode + speed
    python bench/bench.py --pydocs              # + Python's docs (apt-get install python3.11-doc)
    python bench/bench.py --pydocs --index /tmp/pyidx   # reuse an index built earlier
    python bench/bench.py --pydocs --index /tmp/pyidx --quality   # quality tables only

Quality: a question is a hit@k when one of its top-k chunks contains an evidence quote
(whitespace and case folded; for pydocs, from the expected page). Fusion variants are
computed here from the same dense and keyword lists, so they compare like with like.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rag.config import Settings  # noqa: E402
from rag.pipeline import Rag  # noqa: E402
from rag.rerank import CrossEncoder, bundled_model_files  # noqa: E402
from rag.retrieve import rrf, score_fusion, with_neighbours  # noqa: E402

PYDOCS = Path("/usr/share/doc/python3.11/html")


def norm(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().casefold()


def load_questions(path: Path) -> list[dict]:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in rows if r.get("answerable", True) and r.get("evidence")]


def relevant(q: dict, source: str, text: str, judged: bool = True) -> bool:
    """Does this chunk hold the question's evidence quote (from its expected page)?

    With `judged`, also the passages a reader judged to answer the question (`judged`:
    [{"source", "quote"}]), pooled from the top 5 of every variant: one quote per question
    undercounts, since the docs often answer the same question in several places.
    """
    t = norm(text)
    if judged and any(
        source.endswith("/" + j["source"]) and norm(j["quote"]) in t for j in q.get("judged", ())
    ):
        return True
    if q.get("sources") and not any(source.endswith("/" + s) for s in q["sources"]):
        return False
    return any(norm(e) in t for e in q["evidence"])


def rankings(rag: Rag, question: str) -> dict[str, list[str]]:
    """Ranked chunk ids per retrieval variant."""
    index = rag.index
    qvec = rag.embedder.embed([rag.embedder.query_prefix + question])[0]
    dense = index.dense(qvec, 50)
    keyword = index.keyword(question, 50)
    d_ids, k_ids = [i for i, _ in dense], [i for i, _ in keyword]
    out = {"dense": d_ids, "keyword": k_ids}
    for depth in (10, 50):
        fused = rrf([d_ids[:depth], k_ids[:depth]], 60)
        out[f"rrf@{depth}"] = sorted(fused, key=lambda i: -fused[i])
    for alpha in (0.3, 0.5, 0.7):
        score = score_fusion(dense, keyword, alpha)
        out[f"score{int(alpha * 100)}"] = sorted(score, key=lambda i: -score[i])
    # neighbouring chunks: a chunk gains from the two beside it (the default, weight 0.3)
    where = index.positions(list(score_fusion(dense, keyword, 0.5)))
    for weight in (0.2, 0.3):
        score = with_neighbours(score_fusion(dense, keyword, 0.5), where, weight)
        out[f"nb{weight}"] = sorted(score, key=lambda i: -score[i])
    # page-level evidence: a chunk gains from the best chunks of its page (measured: no gain)
    score = score_fusion(dense, keyword, 0.5)
    chunks = index.chunks(list(score))
    page: dict[str, list[float]] = {}
    for i, v in score.items():
        if i in chunks:
            page.setdefault(chunks[i].source, []).append(v)
    top3 = {p: sum(sorted(v, reverse=True)[:3]) / 3 for p, v in page.items()}
    final = {i: v + 0.3 * top3[chunks[i].source] for i, v in score.items() if i in chunks}
    out["page+0.3"] = sorted(final, key=lambda i: -final[i])
    # the cross-encoder over the best nb0.3 candidates: the default (top 10, read in windows
    # of 96 tokens, each chunk scored by its best window), more candidates, whole chunks
    fused = out["nb0.3"]
    out["rerank"] = [h.chunk.id for h in rag.search(question, k=10)] + fused[10:]
    out["rerank@20"] = [h.chunk.id for h in rag.search(question, k=10, rerank=20)] + fused[20:]
    whole = _whole_chunk_reranker()
    top = index.chunks(fused[:10])
    ids = [i for i in fused[:10] if i in top]
    logits = dict(zip(ids, whole.score(question, [top[i] for i in ids]), strict=True))
    out["rr-whole"] = sorted(ids, key=lambda i: -logits[i]) + fused[10:]
    return out


@functools.cache
def _whole_chunk_reranker() -> CrossEncoder:
    """The same cross-encoder reading each chunk whole (one window of up to 512 tokens)."""
    return CrossEncoder(*bundled_model_files(), window=512)


def quality(rag: Rag, questions: list[dict]) -> dict[str, dict[str, float]]:
    table: dict[str, dict[str, list[float]]] = {}
    for q in questions:
        for name, ids in rankings(rag, q["question"]).items():
            chunks = rag.index.chunks(ids[:10])
            ranks = [
                r for r, i in enumerate(ids[:10], start=1)
                if i in chunks and relevant(q, chunks[i].source, chunks[i].text)
            ]  # fmt: skip
            first = ranks[0] if ranks else None
            row = table.setdefault(
                name,
                {"hit@1": [], "hit@3": [], "hit@5": [], "mrr@10": [], "strict@5": [], "page@5": []},
            )
            if any("judged" in x for x in questions):  # the one original quote only
                strict = any(
                    i in chunks and relevant(q, chunks[i].source, chunks[i].text, judged=False)
                    for i in ids[:5]
                )
                row["strict@5"].append(float(strict))
            if q.get("sources"):  # the right page among the top 5, whichever chunk of it
                top = [chunks[i].source for i in ids[:5] if i in chunks]
                row["page@5"].append(float(any(s.endswith("/" + p) for s in top
                                               for p in q["sources"])))  # fmt: skip
            for k in (1, 3, 5):
                row[f"hit@{k}"].append(1.0 if first and first <= k else 0.0)
            row["mrr@10"].append(1.0 / first if first else 0.0)
    return {n: {m: statistics.mean(v) for m, v in row.items() if v} for n, row in table.items()}


def print_quality(title: str, table: dict[str, dict[str, float]], n: int) -> None:
    print(f"\n{title} ({n} questions)")
    cols = [
        c
        for c in ("hit@1", "hit@3", "hit@5", "mrr@10", "strict@5", "page@5")
        if c in table["dense"]
    ]
    print(f"{'variant':<10}" + "".join(f"{c:>9}" for c in cols))
    for name, row in table.items():
        print(f"{name:<10}" + "".join(f"{row[c]:>9.3f}" for c in cols))


def search_latency(
    rag: Rag, questions: list[dict], rerank: int | None = None, repeat: int = 3
) -> tuple[float, float]:
    rag.search("warm up", k=5, rerank=rerank)
    times = []
    for _ in range(repeat):
        for q in questions:
            t = time.perf_counter()
            rag.search(q["question"], k=5, rerank=rerank)
            times.append((time.perf_counter() - t) * 1000)
    times.sort()
    return statistics.median(times), times[int(len(times) * 0.95) - 1]


def rag_cmd(index: Path, *args: str) -> tuple[float, int, str]:
    """Wall seconds, peak RSS (MB) and stdout of one `rag` process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "rag", "--index", str(index), *args],
                       capture_output=True, text=True, cwd=ROOT)  # fmt: skip
    wall = time.perf_counter() - t
    if p.returncode != 0:
        raise SystemExit(f"rag {' '.join(args)} failed: {p.stderr.strip()}")
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return wall, max(peak, before) // 1024, p.stdout


def embed_throughput(rag: Rag, n: int = 512) -> float:
    rows = rag.index._db.execute("SELECT id FROM chunks LIMIT ?", (n,)).fetchall()
    chunks = rag.index.chunks([r[0] for r in rows])
    texts = [c.embedding_text() for c in chunks.values()]
    rag.embedder.embed(texts[:32])
    t = time.perf_counter()
    rag.embedder.embed(texts)
    return len(texts) / (time.perf_counter() - t)


def speed(
    label: str, index: Path, roots: list[Path], questions: list[dict], full: dict | None
) -> None:
    rag = Rag(Settings().with_(store={"index_dir": index}))
    p50, p95 = search_latency(rag, questions)
    fast50, fast95 = search_latency(rag, questions, rerank=0)
    eps = embed_throughput(rag)
    cold = sorted(rag_cmd(index, "ask", questions[0]["question"])[0] for _ in range(3))[1]
    unchanged, _, _ = rag_cmd(index, "ingest", *map(str, roots))
    st = rag.status()
    print(f"\nSpeed: {label} ({st['documents']} documents, {st['chunks']} chunks)")
    print(f"{'warm search p50 / p95 (hybrid, k=5)':<44} {fast50:8.1f} / {fast95:.1f} ms")
    print(f"{'  + reranking the best 10 (the default)':<44} {p50:8.1f} / {p95:.1f} ms")
    print(f"{'embedder raw throughput (batch 32)':<44} {eps:8.1f} chunks/s")
    print(f"{'cold `rag ask` wall (median of 3)':<44} {cold:8.2f} s")
    if full:
        print(f"{'full ingest wall':<44} {full['wall']:8.1f} s")
        print(f"{'full ingest throughput':<44} {full['chunks'] / full['wall']:8.1f} chunks/s")
        print(f"{'full ingest peak RSS':<44} {full['rss']:8.0f} MB")
        print(f"{'unchanged re-ingest wall':<44} {unchanged:8.2f} s "
              f"({100 * unchanged / full['wall']:.1f}% of full)")  # fmt: skip
    else:
        print(f"{'unchanged re-ingest wall':<44} {unchanged:8.2f} s")


def full_ingest(index: Path, roots: list[Path]) -> dict:
    shutil.rmtree(index, ignore_errors=True)
    wall, rss, out = rag_cmd(index, "ingest", "--json", *map(str, roots))
    report = json.loads(out)
    return {"wall": wall, "rss": rss, "chunks": report["chunks_added"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--pydocs", action="store_true", help="also benchmark Python's HTML docs")
    ap.add_argument("--index", type=Path, help="existing pydocs index to reuse")
    ap.add_argument("--corpus", type=Path, default=PYDOCS, help="pydocs folder")
    ap.add_argument("--quality", action="store_true", help="retrieval quality only, no timings")
    args = ap.parse_args()
    os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")

    with tempfile.TemporaryDirectory() as tmp:
        seeds_index = Path(tmp) / "seeds"
        full = full_ingest(seeds_index, [ROOT / "seeds"])
        seeds_q = load_questions(ROOT / "evals" / "seeds_qa.jsonl")
        rag = Rag(Settings().with_(store={"index_dir": seeds_index}))
        print_quality("Retrieval on seeds/", quality(rag, seeds_q), len(seeds_q))
        held_q = load_questions(ROOT / "evals" / "heldout_qa.jsonl")
        print_quality("Retrieval on the held-out questions", quality(rag, held_q), len(held_q))
        if not args.quality:
            speed("seeds/", seeds_index, [ROOT / "seeds"], seeds_q, full)

        if args.pydocs:
            if not args.corpus.is_dir():
                raise SystemExit(f"{args.corpus} is missing: apt-get install python3.11-doc")
            py_q = load_questions(ROOT / "bench" / "pydocs_qa.jsonl")
            index = args.index or Path(tmp) / "pydocs"
            full_py = None if args.index else full_ingest(index, [args.corpus])
            rag = Rag(Settings().with_(store={"index_dir": index}))
            print_quality("Retrieval on Python docs", quality(rag, py_q), len(py_q))
            if not args.quality:
                roots = [Path(r) for r in rag.status()["roots"]]
                speed("Python docs", index, roots, py_q, full_py)


if __name__ == "__main__":
    main()
