"""Does a hypothetical answer from the bundled LLM help the first stage? Not a test: figures.

    .venv/bin/python bench/hyde.py --model local-small evals/seeds_qa.jsonl evals/heldout_qa.jsonl
    .venv/bin/python bench/hyde.py --model local-small --index .cache/index-pydocs \
        evals/pydocs_qa.jsonl

Issue 12 asks for "query expansion or a hypothetical answer from the local LLM when one is
installed" (HyDE: Gao et al. 2022). For each answerable question with evidence, the model
writes a short passage that would answer it (it may invent the facts; only its words
matter), and the search is run again with the question and that passage as the query:

  - "question" rows: what ships (hybrid, fused, the cross-encoder over the best 10) and the
    fused order alone;
  - "question + hypothesis": the same query text for the embedder and BM25, fused; then
    reranked by the cross-encoder reading the question alone (the hypothesis may be wrong,
    so it is not shown to the judge);
  - "union": the best 10 of both searches, reranked by the cross-encoder on the question
    (20 candidates: twice the rerank cost).

The hypotheses are cached in --cache (one JSON line per model and question), so a second
run measures retrieval only. Paraphrased questions are also reported on their own. A passage
is relevant when it holds an evidence quote (or, in bench/pydocs_qa.jsonl, a quote reviewers
judged to answer), wherever it is: bench.py also asks for the expected page.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rag.answer.llm import LLM  # noqa: E402
from rag.config import Settings  # noqa: E402
from rag.evaluate import metrics as M  # noqa: E402
from rag.evaluate.dataset import load_dataset  # noqa: E402
from rag.expand import hypothesis as write_hypothesis  # noqa: E402
from rag.llamacpp import LlamaServer  # noqa: E402
from rag.models import find_model  # noqa: E402
from rag.pipeline import Rag  # noqa: E402
from rag.rerank import CrossEncoder, bundled_model_files  # noqa: E402


def hypotheses(model: str, questions: list[str], cache: Path) -> dict[str, tuple[str, float]]:
    """question -> (hypothetical passage, seconds to write it), from the cache or the model."""
    have: dict[str, tuple[str, float]] = {}
    if cache.exists():
        for line in cache.read_text().splitlines():
            row = json.loads(line)
            if row["model"] == model:
                have[row["question"]] = (row["hypothesis"], row["seconds"])
    todo = [q for q in questions if q not in have]
    if not todo:
        return have
    with LlamaServer(find_model(model)) as server, cache.open("a") as out:
        llm = LLM(server.url, timeout=300.0)
        for q in todo:
            t0 = time.perf_counter()
            text = write_hypothesis(llm, q)  # what rag/expand.py asks
            sec = time.perf_counter() - t0
            have[q] = (text.strip(), sec)
            out.write(json.dumps({"model": model, "question": q, "hypothesis": text.strip(),
                                  "seconds": round(sec, 2)}) + "\n")  # fmt: skip
            out.flush()
            print(f"  {sec:5.1f} s  {q[:60]!r} -> {text.strip()[:80]!r}", flush=True)
    return have


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("datasets", nargs="+", type=Path)
    ap.add_argument("--index", type=Path, default=ROOT / "index")
    ap.add_argument("--model", default="local-small", help="local-small (0.5B) or local (1.5B)")
    ap.add_argument("--cache", type=Path, default=ROOT / ".cache/hyde.jsonl")
    args = ap.parse_args()
    settings = Settings.from_env().with_(
        store={"index_dir": args.index}, retrieve={"expand": False}
    )
    rag = Rag(settings)
    ce = CrossEncoder(*bundled_model_files(), window=settings.retrieve.rerank_window)
    sets = []
    judged: dict[str, list[str]] = {}  # bench/pydocs_qa.jsonl: quotes reviewers accepted too
    for path in args.datasets:
        for line in path.read_text().splitlines():
            row = json.loads(line) if line.strip() else {}
            judged[row.get("id", "")] = [j["quote"] for j in row.get("judged") or []]
        items = [i for i in load_dataset(path) if i.answerable and i.evidence]
        for split in sorted({i.split for i in items}):
            name = f"{path.name}, {split} split" if split else path.name
            sets.append((name, [i for i in items if i.split == split]))
    every = [i.question for _, items in sets for i in items]
    args.cache.parent.mkdir(parents=True, exist_ok=True)
    hyp = hypotheses(args.model, every, args.cache)
    secs = [hyp[q][1] for q in every]
    print(f"\n{args.model}: a hypothesis took {np.median(secs):.1f} s p50, "
          f"{np.percentile(secs, 95):.1f} s p95 ({len(secs)} questions)")  # fmt: skip

    def reranked(question: str, chunks: list) -> list[str]:  # type: ignore[type-arg]
        """The chunks' texts in the cross-encoder's order for `question` (best window)."""
        s = [max(ce.logits(question, ce.windows(c))) for c in chunks]
        return [chunks[i].text for i in sorted(range(len(chunks)), key=lambda i: -s[i])]

    for set_name, items in sets:
        rows: dict[str, list[tuple[bool, list[bool]]]] = {}
        for it in items:
            para = "paraphrase" in it.tags
            q = it.question
            expanded = q + "\n" + hyp[q][0]

            def add(name: str, texts: list[str]) -> None:
                quotes = [*it.evidence, *judged.get(it.id, [])]  # noqa: B023
                rows.setdefault(name, []).append((para, M.relevance(texts, quotes)))  # noqa: B023

            base = rag.search(q, k=10, rerank=0)
            add("question, fused (no rerank)", [h.chunk.text for h in base])
            add("question, reranked (shipped)", [h.chunk.text for h in rag.search(q, k=10)])
            mine = rag.search(expanded, k=10, rerank=0)
            add("question + hypothesis, fused", [h.chunk.text for h in mine])
            chunks = [h.chunk for h in mine]
            add("question + hypothesis, reranked on the question", reranked(q, chunks))
            add("question + hypothesis, reranked on both", reranked(expanded, chunks))
            add("question + hypothesis, reranked (rag.search)",
                [h.chunk.text for h in rag.search(expanded, k=10)])  # fmt: skip
            pool = {h.chunk.id: h.chunk for h in base}
            for c in chunks:
                pool.setdefault(c.id, c)
            union = list(pool.values())
            add("union of both top 10s, reranked on the question", reranked(q, union))
        n_para = sum(p for p, _ in next(iter(rows.values())))
        print(f"\n{set_name}: {len(items)} answerable questions ({n_para} paraphrased)")
        print("| search | hit@1 | hit@5 | MRR@10 | hit@5 paraphrased |\n|---|---:|---:|---:|---:|")
        for name, got in rows.items():
            rels = [r for _, r in got]
            para = [r for p, r in got if p]
            h1 = np.mean([M.hit_at_k(r, 1) for r in rels])
            h5 = np.mean([M.hit_at_k(r, 5) for r in rels])
            mrr = np.mean([M.reciprocal_rank(r, 10) for r in rels])
            hp = f"{np.mean([M.hit_at_k(r, 5) for r in para]):.3f}" if para else "–"
            print(f"| {name} | {h1:.3f} | {h5:.3f} | {mrr:.3f} | {hp} |")


if __name__ == "__main__":
    main()
