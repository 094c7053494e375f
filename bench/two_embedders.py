"""Would two first-stage embedders find more than one? Not a test: figures.

    .venv/bin/rag --index .cache/index-pydocs-bge --embed-model bge-small-int8 \
        ingest evals/corpora/pydocs
    .venv/bin/python bench/two_embedders.py --index .cache/index-pydocs \
        --index-b .cache/index-pydocs-bge evals/pydocs_qa.jsonl

Issue 12 measured bge-small-en-v1.5 against MiniLM as *the* first-stage embedder: on the
pydocs questions it put 5 paraphrases' evidence higher and 5 others lower (docs/benchmarks.md,
"First-stage embedders"). Complementary lists are what fusion is for, so this run fuses
three: MiniLM's cosine, bge-small's cosine (from a second index of the same files, whose
chunk ids are the same) and BM25, each min-max normalised, the two dense lists sharing the
dense weight (`alpha / 2` each). Everything after the fusion is what ships: neighbours,
near-duplicate collapse, the cross-encoder over the best 10, and the extractive answerer,
which still reads MiniLM's similarities (its thresholds were fitted on them).

Both variants run side by side in one process on the same index, so the only difference
is the second dense list. Reported per split: a tuned rule is judged on the held-out one.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rag import retrieve  # noqa: E402
from rag.config import Settings  # noqa: E402
from rag.evaluate.dataset import load_dataset  # noqa: E402
from rag.evaluate.runner import run_eval  # noqa: E402
from rag.pipeline import Rag  # noqa: E402

METRICS = ("hit@5", "mrr@10", "key_acc", "refusal_acc", "false_refusal_rate", "latency_p50_ms")


class SecondList:
    """Wraps the first index's `dense` so that each search also asks the second index (with
    the second embedder's own query vector) and keeps its list for the fusion below."""

    def __init__(self, a: Rag, b: Rag) -> None:
        self.a, self.b = a, b
        self.on = False
        self.query = ""
        self.last: list[tuple[str, float]] = []
        self._dense = a.index.dense
        self._embed_query = a.retriever.embed_query
        a.index.dense = self.dense
        a.retriever.embed_query = self.embed_query

    def embed_query(self, query: str):  # type: ignore[no-untyped-def]
        self.query = query
        return self._embed_query(query)

    def dense(self, vector, n, sources=None):  # type: ignore[no-untyped-def]
        self.last = []
        if self.on:
            qb = self.b.retriever.embed_query(self.query)
            self.last = self.b.index.dense(qb, n, sources)
        return self._dense(vector, n, sources)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("datasets", nargs="+", type=Path)
    ap.add_argument("--index", type=Path, default=ROOT / "index")
    ap.add_argument("--index-b", type=Path, required=True, help="the same files, bge-small")
    ap.add_argument("--model-b", default="bge-small-int8")
    args = ap.parse_args()

    base = Settings.from_env().with_(retrieve={"expand": False})
    a = Rag(base.with_(store={"index_dir": args.index}))
    b = Rag(base.with_(store={"index_dir": args.index_b}, embed={"model": args.model_b}))
    second = SecondList(a, b)
    shipped = retrieve.score_fusion

    def three(dense, keyword, alpha=0.5):  # type: ignore[no-untyped-def]
        if not second.on:
            return shipped(dense, keyword, alpha)
        da, db, kn = (retrieve._minmax(x) for x in (dense, second.last, keyword))
        ids = {*da, *db, *kn}
        half = alpha / 2
        return {i: half * da.get(i, 0.0) + half * db.get(i, 0.0) + (1 - alpha) * kn.get(i, 0.0)
                for i in ids}  # fmt: skip

    retrieve.score_fusion = three
    rows = []
    for path in args.datasets:
        items = load_dataset(path)
        for name, on in (("MiniLM + BM25 (ships)", False), ("MiniLM + bge + BM25", True)):
            second.on = on
            t0 = time.perf_counter()
            run = run_eval(a, items, save=False)
            print(f"{path.name} {name}: {time.perf_counter() - t0:.0f} s", file=sys.stderr)
            splits = sorted({i.split for i in items if i.split})
            for split in ["", *splits]:
                prefix = f"{split}:" if split else ""
                row = [f"{path.stem}{' ' + split if split else ''}", name]
                row += [run.metrics.get(prefix + m) for m in METRICS]
                rows.append(row)
    print("| set | first stage | " + " | ".join(METRICS) + " |")
    print("|---|---|" + "---:|" * len(METRICS))
    for row in rows:
        print("| " + " | ".join(_cell(v) for v in row) + " |")


def _cell(v: object) -> str:
    """A rate to 3 places, a latency in whole ms, n/a as a dash."""
    if isinstance(v, float):
        return f"{v:.3f}" if v <= 1 else f"{v:.0f}"
    return "–" if v is None else str(v)


if __name__ == "__main__":
    main()
