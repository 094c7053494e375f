"""Could the embedder pick the one window the cross-encoder reads? Not a test: figures.

    .venv/bin/python bench/rerank_preselect.py evals/seeds_qa.jsonl evals/heldout_qa.jsonl
    .venv/bin/python bench/rerank_preselect.py --index .cache/index-pydocs evals/pydocs_qa.jsonl

Reranking reads every window of every candidate (MaxP): 10 candidates of the seeds are ~40
(question, window) pairs at ~11 ms each, ~140x one query embedding (docs/benchmarks.md). The
cost is linear in pairs, so the lever is reading fewer windows. This measures, on answerable
questions with evidence, retrieval quality when the cross-encoder reads only the `m` windows
per candidate that the embedder ranks best, against reading all of them (what ships) and
against no rerank:

  - "pooled": a window's vector is the mean of the chunk's own MiniLM token states over the
    window's tokens. These come out of the forward pass ingest already runs, so storing them
    would cost no embedding at ingest (only disk);
  - "alone": each window embedded as a text of its own (a second embedding pass at ingest).

Here both are computed at query time, for measurement only.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rag.chunking import split_sentences  # noqa: E402
from rag.config import Settings  # noqa: E402
from rag.evaluate import metrics as M  # noqa: E402
from rag.evaluate.dataset import load_dataset  # noqa: E402
from rag.pipeline import Rag  # noqa: E402
from rag.rerank import CrossEncoder, bundled_model_files  # noqa: E402
from rag.types import Chunk  # noqa: E402


def window_spans(ce: CrossEncoder, chunk: Chunk) -> list[tuple[int, int]]:
    """Character spans in chunk.text of the windows `CrossEncoder.windows` makes, in order."""
    sents = split_sentences(chunk.text)
    if not sents:
        return [(0, len(chunk.text))]
    sizes = [
        len(e.ids)
        for e in ce._counter.encode_batch([chunk.text[s.start : s.end] for s in sents], False)
    ]
    groups: list[list[int]] = []
    cur: list[int] = []
    for i, size in enumerate(sizes):
        if cur and sum(sizes[j] for j in cur) + size > ce.window:
            groups.append(cur)
            cur = [cur[-1]]
        cur.append(i)
    groups.append(cur)
    return [(sents[g[0]].start, sents[g[-1]].end) for g in groups]


def pooled_vectors(embedder: Any, chunk: Chunk, spans: list[tuple[int, int]]) -> np.ndarray:
    text = chunk.embedding_text()
    shift = len(text) - len(chunk.text)
    enc = embedder._tok.encode(text)
    ids = np.asarray([enc.ids], dtype=np.int64)
    feed = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
    if "token_type_ids" in embedder._inputs:
        feed["token_type_ids"] = np.zeros_like(ids)
    hidden = embedder._session.run(None, feed)[0][0]
    out = []
    for s, e in spans:
        sel = [
            t for t, (a, b) in enumerate(enc.offsets) if b > a and a >= s + shift and b <= e + shift
        ]
        v = hidden[sel].mean(axis=0) if sel else hidden[0]
        out.append(v / max(np.linalg.norm(v), 1e-12))
    return np.asarray(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("datasets", nargs="+", type=Path)
    ap.add_argument("--index", type=Path, default=ROOT / "index")
    ap.add_argument("--depth", type=int, default=10)
    args = ap.parse_args()
    settings = Settings.from_env().with_(store={"index_dir": args.index})
    rag = Rag(settings)
    ce = CrossEncoder(*bundled_model_files(), window=settings.retrieve.rerank_window)
    emb = rag.embedder
    sets = []
    for path in args.datasets:
        items = [i for i in load_dataset(path) if i.answerable and i.evidence]
        splits = sorted({i.split for i in items})
        for split in splits:
            name = f"{path.name}, {split} split" if split else path.name
            sets.append((name, [i for i in items if i.split == split]))
    for set_name, items in sets:
        rows: dict[str, list[list[bool]]] = {}
        pairs: dict[str, int] = {}
        agree: dict[str, int] = {}
        for it in items:
            hits = rag.search(it.question, k=args.depth, rerank=0)
            chunks = [h.chunk for h in hits]
            q = emb.embed([emb.query_prefix + it.question])[0]
            full, pre = [], {f"{how} m={m}": [] for how in ("pooled", "alone") for m in (1, 2)}
            for c in chunks:
                wins = ce.windows(c)
                logits = ce.logits(it.question, wins)
                full.append(max(logits))
                pairs["all windows (shipped)"] = pairs.get("all windows (shipped)", 0) + len(wins)
                spans = window_spans(ce, c)
                assert len(spans) == len(wins), (len(spans), len(wins))
                vec = {"pooled": pooled_vectors(emb, c, spans), "alone": emb.embed(wins)}
                for how, vs in vec.items():
                    order = np.argsort(-(vs @ q))
                    for m in (1, 2):
                        pick = order[:m]
                        pre[f"{how} m={m}"].append(max(logits[i] for i in pick))
                        key = f"{how} m={m}"
                        pairs[key] = pairs.get(key, 0) + min(m, len(wins))
                        agree[key] = agree.get(key, 0) + int(int(np.argmax(logits)) in pick)
            rel = M.relevance([c.text for c in chunks], it.evidence)
            rows.setdefault("no rerank", []).append(rel)
            for name, scores in {"all windows (shipped)": full, **pre}.items():
                order = sorted(range(len(chunks)), key=lambda i: -scores[i])
                rows.setdefault(name, []).append([rel[i] for i in order])
        n_windows = pairs["all windows (shipped)"]
        n_chunks = sum(len(r) for r in rows["no rerank"])
        print(f"\n{set_name}: {len(items)} answerable questions, depth {args.depth}, "
              f"{n_windows / len(items):.1f} windows a question")  # fmt: skip
        print("| cross-encoder reads | pairs/question | hit@1 | hit@3 | hit@5 | MRR@10 "
              "| best window kept |")  # fmt: skip
        print("|---|---:|---:|---:|---:|---:|---:|")
        for name, rels in rows.items():
            h = [np.mean([M.hit_at_k(r, k) for r in rels]) for k in (1, 3, 5)]
            mrr = np.mean([M.reciprocal_rank(r, 10) for r in rels])
            p = pairs.get(name, 0) / len(items)
            kept = f"{agree[name] / n_chunks:.2f}" if name in agree else ""
            print(
                f"| {name} | {p:.1f} | {h[0]:.3f} | {h[1]:.3f} | {h[2]:.3f} | {mrr:.3f} | {kept} |"
            )


if __name__ == "__main__":
    main()
