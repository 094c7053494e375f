"""Refusal calibration: how often each evidence signal refuses, by threshold, on every set.

    python bench/calibrate.py                    # builds the two indexes it needs in .cache/
    python bench/calibrate.py --plot docs/calibration.png

Each question is answered once by the extractive answerer with no refusal threshold, the
cross-encoder judging the chosen sentences. Two signals are then swept: `evidence` (the
similarity + word-overlap score that `min_evidence` gates, the default) and `judged` (the
cross-encoder's best logit over the chosen sentences, which `min_judge` gates when
AnswerSettings.judge is on). For each threshold: the share of unanswerable questions
refused, of answerable ones refused (false refusals), and of answerable ones answered with
every key fact. A threshold is fitted on the tune sets (seeds_qa and pydocs' tune split) and
reported on the held-out ones (heldout_qa and pydocs' heldout split), which it never saw.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rag.config import Settings  # noqa: E402
from rag.evaluate import load_dataset  # noqa: E402
from rag.evaluate.metrics import missing_keys  # noqa: E402
from rag.pipeline import Rag  # noqa: E402

CACHE = ROOT / ".cache"
SETS = {  # name: (dataset, corpus, split or None)
    "seeds": ("evals/seeds_qa.jsonl", "seeds", None),
    "pydocs-tune": ("evals/pydocs_qa.jsonl", "evals/corpora/pydocs", "tune"),
    "heldout": ("evals/heldout_qa.jsonl", "seeds", None),
    "pydocs-heldout": ("evals/pydocs_qa.jsonl", "evals/corpora/pydocs", "heldout"),
}
TUNE = ("seeds", "pydocs-tune")
SIGNALS = {"evidence": [i / 20 for i in range(0, 15)], "judged": list(range(-10, 7))}


@dataclass
class Row:
    answerable: bool
    refused: bool  # refused whatever the threshold (no sentence holds the asked fact)
    correct: bool  # answerable, answered with every key fact
    evidence: float
    judged: float


def answer_all(name: str) -> list[Row]:
    dataset, corpus, split = SETS[name]
    index = CACHE / ("index-" + Path(corpus).name)
    settings = Settings().with_(
        store={"index_dir": index},
        answer={"judge": True, "min_judge": -math.inf, "min_evidence": 0.0},
    )
    rows = []
    with Rag(settings) as rag:
        rag.ingest([ROOT / corpus])  # only what changed
        for item in load_dataset(ROOT / dataset):
            if split and item.split != split:
                continue
            a = rag.ask(item.question)
            text = "" if a.refused else a.answer
            correct = item.answerable and not a.refused and not missing_keys(text, item.keys)
            rows.append(Row(item.answerable, a.refused, correct, a.evidence or 0.0,
                            a.judged if a.judged is not None else -99.0))  # fmt: skip
    return rows


def at(rows: list[Row], signal: str, t: float) -> dict[str, float]:
    ans = [r for r in rows if r.answerable]
    un = [r for r in rows if not r.answerable]

    def refused(r: Row) -> bool:
        return r.refused or getattr(r, signal) < t

    return {
        "refusal": sum(map(refused, un)) / max(len(un), 1),
        "false_refusal": sum(map(refused, ans)) / max(len(ans), 1),
        "key_acc": sum(r.correct and not refused(r) for r in ans) / max(len(ans), 1),
    }


def fit(results: dict[str, list[Row]], signal: str) -> float:
    """The threshold that maximises refusals minus false refusals on the tune sets."""

    def gain(t: float) -> float:
        return sum(at(results[s], signal, t)["refusal"] - at(results[s], signal, t)["false_refusal"]
                   for s in TUNE)  # fmt: skip

    return max(SIGNALS[signal], key=lambda t: (round(gain(t), 6), -t))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--plot", type=Path, help="write the calibration curves to this PNG")
    ap.add_argument("--json", type=Path, help="write the per-threshold figures to this file")
    args = ap.parse_args()
    results = {name: answer_all(name) for name in SETS}
    table: dict[str, dict[str, dict[str, dict[str, float]]]] = {}
    for signal, thresholds in SIGNALS.items():
        table[signal] = {s: {str(t): at(rows, signal, t) for t in thresholds}
                         for s, rows in results.items()}  # fmt: skip
        t = fit(results, signal)
        print(f"\n{signal}: fitted on {' + '.join(TUNE)} -> threshold {t}")
        print(f"{'set':16} {'refused (unans.)':>17} {'false refusals':>15} {'key facts':>10}")
        for s, rows in results.items():
            base = at(rows, signal, -math.inf)
            m = at(rows, signal, t)
            print(f"{s:16} {base['refusal']:7.3f} -> {m['refusal']:5.3f} "
                  f"{base['false_refusal']:6.3f} -> {m['false_refusal']:5.3f} "
                  f"{base['key_acc']:5.3f} -> {m['key_acc']:5.3f}")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(table, indent=1))
    if args.plot:
        plot(table, args.plot)
        print(f"\nwrote {args.plot}")


def plot(table: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 5.2))
    colours = dict(zip(SETS, ("tab:blue", "tab:orange", "tab:green", "tab:red"), strict=True))
    for ax, (signal, per_set) in zip(axes, table.items(), strict=True):
        for s, points in per_set.items():
            ts = [float(t) for t in points]
            ax.plot(ts, [p["refusal"] for p in points.values()], "-", color=colours[s],
                    label=f"{s}: unanswerable refused")  # fmt: skip
            ax.plot(ts, [p["false_refusal"] for p in points.values()], "--", color=colours[s],
                    label=f"{s}: answerable refused")  # fmt: skip
        ax.set_xlabel(f"threshold on {signal}")
        ax.set_ylabel("share of questions")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        ax.set_title({"evidence": "similarity + overlap (min_evidence)",
                      "judged": "cross-encoder logit (min_judge)"}[signal])  # fmt: skip
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=8, loc="lower center", ncol=4, frameon=False)
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
