"""Can a bundled LLM tell an answer from a near miss? Not a test: figures.

    .venv/bin/python bench/llm_judge.py --model local        # the 1.5B (~8 min)
    .venv/bin/python bench/llm_judge.py --model local-small  # the 0.5B (~4 min)

Every question of the shipped sets is answered by the default extractive pipeline (seeds
sets over `index/`, the pydocs set over `.cache/index-pydocs/`, both built by `make eval`).
For each answer that was not refused, the model is asked once, with max_tokens=1 and
logprobs, whether the quoted sentences state the answer; P(yes) = p(yes) / (p(yes) + p(no))
over its top 10 first tokens. The table then sweeps a refusal threshold on P(yes): how many
unanswerable questions it would refuse, how many answerable ones it would refuse, and how
many of those had every key fact, for the tune splits (seeds_qa + pydocs tune, where a
threshold would be fitted) and the held-out ones (heldout_qa + pydocs heldout).
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rag.config import Settings  # noqa: E402
from rag.llamacpp import LlamaServer  # noqa: E402
from rag.models import find_model  # noqa: E402
from rag.pipeline import Rag  # noqa: E402

SETS = [
    ("index", "evals/seeds_qa.jsonl"),
    ("index", "evals/heldout_qa.jsonl"),
    (".cache/index-pydocs", "evals/pydocs_qa.jsonl"),
]
SYSTEM = "You check whether a text answers a question. Reply with one word: yes or no."
THRESHOLDS = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6)


def p_yes(client, question: str, text: str) -> float:  # type: ignore[no-untyped-def]
    user = (f"Question: {question}\n\nText: {text}\n\n"
            "Does the text state the answer to the question? Reply yes or no.")  # fmt: skip
    r = client.chat.completions.create(
        model="m",
        messages=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}],
        max_tokens=1,
        temperature=0,
        logprobs=True,
        top_logprobs=10,
    )
    tops = r.choices[0].logprobs.content[0].top_logprobs
    yes = sum(math.exp(t.logprob) for t in tops if t.token.strip().lower() == "yes")
    no = sum(math.exp(t.logprob) for t in tops if t.token.strip().lower() == "no")
    return yes / (yes + no) if yes + no else 0.5


def has_keys(answer: str, keys: list[list[str]]) -> bool:
    a = answer.lower()
    return all(any(k.lower() in a for k in alts) for alts in keys)


def main() -> None:
    from openai import OpenAI

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="local", help="local or local-small")
    ap.add_argument("--json", type=Path, help="keep every question's P(yes) here")
    args = ap.parse_args()
    rows = []
    with LlamaServer(find_model(args.model), ctx_size=2048) as server:
        client = OpenAI(base_url=server.url, api_key="none")
        for index, path in SETS:
            rag = Rag(Settings().with_(store={"index_dir": ROOT / index}))
            for line in (ROOT / path).read_text().splitlines():
                q = json.loads(line)
                a = rag.ask(q["question"])
                if a.refused:
                    continue
                split = q.get("split") or ("heldout" if "heldout" in path else "tune")
                text = re.sub(r"\s*\[\d+\]", "", a.answer)
                rows.append({
                    "id": q["id"], "split": split, "answerable": q["answerable"],
                    "right": q["answerable"] and has_keys(a.answer, q.get("keys") or []),
                    "p": p_yes(client, q["question"], text),
                })  # fmt: skip
            rag.close()
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    print(f"{args.model}: P(yes) of answers not refused by the extractive answerer\n")
    print("| threshold | tune: unans. refused | answerable refused | right lost "
          "| heldout: unans. refused | answerable refused | right lost |")  # fmt: skip
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for t in THRESHOLDS:
        cells = []
        for split in ("tune", "heldout"):
            rs = [r for r in rows if r["split"] == split]
            un = [r for r in rs if not r["answerable"]]
            an = [r for r in rs if r["answerable"]]
            cells += [
                f"{sum(r['p'] < t for r in un)}/{len(un)}",
                f"{sum(r['p'] < t for r in an)}/{len(an)}",
                f"{sum(r['p'] < t and r['right'] for r in an)}",
            ]
        print(f"| {t} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
