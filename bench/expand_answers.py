"""Do quoted (extractive) answers get better when the search also reads the LLM's
hypothetical answer? Not a test: figures.

    .venv/bin/python bench/expand_answers.py --model local --index .cache/index-pydocs \
        evals/pydocs_qa.jsonl
    .venv/bin/python bench/expand_answers.py --model local evals/seeds_qa.jsonl \
        evals/heldout_qa.jsonl

bench/hyde.py showed that a hypothetical answer from the bundled 1.5B lifts pydocs hit@5 of
the fused order (what answers read) from 0.679 to 0.893 on the tune split and from 0.722 to
0.833 on the held-out one. That is retrieval. This runs the whole eval (`run_eval`, every
question, unanswerable ones included) twice over one index, with the extractive answerer
both times: once as shipped, once with `retrieve.expand` on and the hypothesis taken from
the same cache as hyde.py (one JSON line per model and question; missing ones are written
by the model first). So the only difference between the two rows is the hypothesis.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from hyde import hypotheses  # noqa: E402

from rag.config import Settings  # noqa: E402
from rag.evaluate.dataset import load_dataset  # noqa: E402
from rag.evaluate.runner import run_eval  # noqa: E402
from rag.pipeline import Rag  # noqa: E402

METRICS = ("hit@5", "key_acc", "citation_precision", "refusal_acc", "false_refusal_rate")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("datasets", nargs="+", type=Path)
    ap.add_argument("--index", type=Path, default=ROOT / "index")
    ap.add_argument("--model", default="local", help="local (1.5B) or local-small (0.5B)")
    ap.add_argument("--cache", type=Path, default=ROOT / ".cache/hyde.jsonl")
    args = ap.parse_args()
    base = Settings.from_env().with_(store={"index_dir": args.index})
    plain = Rag(base.with_(retrieve={"expand": False}, answer={"llm_url": None, "llm_gguf": None}))
    expanding = Rag(
        base.with_(retrieve={"expand": True}, answer={"llm_url": None, "llm_gguf": None})
    )
    for path in args.datasets:
        items = load_dataset(path)
        args.cache.parent.mkdir(parents=True, exist_ok=True)
        hyp = hypotheses(args.model, [i.question for i in items], args.cache)

        def cached(question: str, answerer: Any = None) -> str:
            return hyp[question][0]  # noqa: B023

        expanding.hypothesis = cached  # type: ignore[method-assign]
        runs = {
            "question (shipped)": run_eval(plain, items, k=5, save=False).metrics,
            f"question + {args.model}'s hypothesis": run_eval(
                expanding, items, k=5, save=False
            ).metrics,
        }
        splits = sorted({i.split for i in items} - {""})
        print(f"\n{path.name}: {len(items)} questions, extractive answers (hybrid, k=5)")
        head = " | ".join(METRICS)
        print(f"| search | split | {head} |\n|---|---|{'---:|' * len(METRICS)}")
        for name, m in runs.items():
            for split in ["", *splits] if len(splits) > 1 else [""]:
                pre = f"{split}:" if split else ""
                vals = " | ".join(_fmt(m.get(pre + x)) for x in METRICS)
                print(f"| {name} | {split or 'all'} | {vals} |")
    plain.close()
    expanding.close()


def _fmt(v: float | None) -> str:
    return "–" if v is None else f"{v:.3f}"


if __name__ == "__main__":
    main()
