"""Metric functions: pure, small, tested against hand-computed values.

Per-question scores are None where they are undefined (no evidence to find, no keys to
match, a refusal has no citations to judge); averages skip None, and an average over
nothing is None, which prints as "n/a" and is null in JSON.
"""

from __future__ import annotations

import math
import re
import string
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

_CITATION = re.compile(r"\s*\[\d+\]")
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = set(string.punctuation) | set("“”‘’–—…")


def norm(text: str) -> str:
    """Whitespace collapsed and casefolded: how evidence quotes are found in passages."""
    return " ".join(text.split()).casefold()


def snippet(text: str, n: int = 160) -> str:
    """The start of a passage on one line, for reports."""
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"


def strip_citations(answer: str) -> str:
    """The answer without its [n] markers."""
    return _CITATION.sub("", answer).strip()


def found(quotes: Sequence[str], passages: Sequence[str]) -> list[bool]:
    """For each evidence quote: does any of the passages contain it?"""
    texts = [norm(p) for p in passages]
    return [any(norm(q) in t for t in texts) for q in quotes]


def relevance(passages: Sequence[str], quotes: Sequence[str]) -> list[bool]:
    """For each passage (in rank order): does it contain any evidence quote?"""
    qs = [norm(q) for q in quotes]
    return [any(q in norm(p) for q in qs) for p in passages]


# --- retrieval -------------------------------------------------------------------------


def hit_at_k(rel: Sequence[bool], k: int) -> float:
    """1.0 when a relevant passage is among the first k, else 0.0."""
    return 1.0 if any(rel[:k]) else 0.0


def reciprocal_rank(rel: Sequence[bool], k: int = 10) -> float:
    """1 / rank of the first relevant passage within the first k, 0.0 when there is none."""
    for i, r in enumerate(rel[:k], start=1):
        if r:
            return 1.0 / i
    return 0.0


def ndcg_at_k(rel: Sequence[bool], n_relevant: int, k: int = 10) -> float:
    """Binary-relevance nDCG@k; the ideal ranking puts `n_relevant` relevant passages first.

    The evaluator passes the relevant passages it saw plus one per evidence quote it did
    not find (the fewest relevant passages the index must hold).
    """
    dcg = sum(1.0 / math.log2(i + 1) for i, r in enumerate(rel[:k], start=1) if r)
    ideal = sum(1.0 / math.log2(i + 1) for i in range(1, min(n_relevant, k) + 1))
    return dcg / ideal if ideal else 0.0


def evidence_recall(passages: Sequence[str], quotes: Sequence[str]) -> float | None:
    """The fraction of evidence quotes that some passage contains (None without quotes)."""
    if not quotes:
        return None
    hits = found(quotes, passages)
    return sum(hits) / len(hits)


# --- answers ---------------------------------------------------------------------------


def missing_keys(answer: str, keys: Sequence[Sequence[str]]) -> list[list[str]]:
    """The key groups none of whose alternatives the answer contains (case-insensitive)."""
    text = norm(answer)
    return [list(g) for g in keys if not any(norm(alt) in text for alt in g)]


def squad_normalize(text: str) -> str:
    """SQuAD's answer normalisation: lower case, no punctuation, no articles, single spaces."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCT)
    return " ".join(_ARTICLES.sub(" ", text).split())


def token_f1(prediction: str, reference: str) -> float:
    """SQuAD token F1 between the normalised prediction and reference."""
    pred = squad_normalize(prediction).split()
    ref = squad_normalize(reference).split()
    if not pred or not ref:
        return float(pred == ref)
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def citation_precision(cited: Sequence[str], quotes: Sequence[str]) -> float | None:
    """The fraction of cited passages that contain an evidence quote.

    None when nothing is cited or there is no evidence to check against.
    """
    if not cited or not quotes:
        return None
    rel = relevance(cited, quotes)
    return sum(rel) / len(rel)


def citation_recall(cited: Sequence[str], quotes: Sequence[str]) -> float | None:
    """The fraction of evidence quotes that a cited passage contains (None without quotes)."""
    return evidence_recall(cited, quotes)


# --- aggregates ------------------------------------------------------------------------


def mean(values: Iterable[float | bool | None]) -> float | None:
    """The mean of the values that are not None; None when there are none."""
    xs = [float(v) for v in values if v is not None]
    return sum(xs) / len(xs) if xs else None


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0–100) by linear interpolation, as numpy's default; None if empty."""
    xs = sorted(values)
    if not xs:
        return None
    pos = (len(xs) - 1) * q / 100
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


LOWER_IS_BETTER_PREFIXES = ("latency_",)
LOWER_IS_BETTER_SUFFIXES = ("_rate", "_failures", "_chars")


def lower_is_better(metric: str) -> bool:
    return metric.startswith(LOWER_IS_BETTER_PREFIXES) or metric.endswith(LOWER_IS_BETTER_SUFFIXES)


def summarize(questions: Sequence[dict[str, Any]], k: int) -> dict[str, float | None]:
    """The run's metrics from its per-question results (see `score` in runner.py)."""
    answerable = [q for q in questions if q["answerable"]]
    unanswerable = [q for q in questions if not q["answerable"]]
    answered = [q for q in questions if q.get("refused") is not None]
    m: dict[str, float | None] = {
        f"hit@{k}": mean(q["hit"] for q in questions),
        "mrr@10": mean(q["rr"] for q in questions),
        "ndcg@10": mean(q["ndcg"] for q in questions),
        "evidence_recall": mean(q["evidence_recall"] for q in questions),
        "context_chars": mean(q.get("context_chars") for q in questions),
        "key_acc": mean(q.get("key_match") for q in answerable),
        "token_f1": mean(q.get("token_f1") for q in answerable),
        "citation_precision": mean(q.get("citation_precision") for q in answerable),
        "citation_recall": mean(q.get("citation_recall") for q in answerable),
        "refusal_acc": mean(q.get("refused") for q in unanswerable),
        "false_refusal_rate": mean(q.get("refused") for q in answerable),
        # answerable questions whose shown answer a model wrote (not the quote it fell back
        # to); n/a unless a model answerer was asked (0 when its model never answered)
        "generated": mean(q.get("generated") for q in answerable)
        if any(q.get("answer_mode") == "llm" or q.get("model_asked") for q in questions)
        else None,
    }
    for stage in ("total", "retrieve", "answer"):
        times = [
            q["timings_ms"][stage] for q in questions if q["timings_ms"].get(stage) is not None
        ]
        if stage == "answer" and not answered:
            times = []
        name = "latency" if stage == "total" else f"latency_{stage}"
        m[f"{name}_p50_ms"] = percentile(times, 50)
        m[f"{name}_p95_ms"] = percentile(times, 95)
    splits = sorted({q.get("split") or "" for q in questions} - {""})
    for split in splits if len(splits) > 1 else ():
        part = summarize([q for q in questions if q.get("split") == split], k)
        m.update({f"{split}:{name}": part[name] for name in SPLIT_METRICS(k)})
    judged = [q for q in questions if "judge" in q]
    if judged:
        m["judge_faithfulness"] = mean(q["judge"]["faithful"] for q in judged)
        m["judge_correctness"] = mean(q["judge"]["correct"] for q in judged if q["answerable"])
        m["judge_parse_failures"] = float(sum(1 for q in judged if q["judge"].get("error")))
    return m


def SPLIT_METRICS(k: int) -> tuple[str, ...]:
    """The metrics reported for each split of a dataset too (as "split:metric")."""
    return (
        f"hit@{k}",
        "mrr@10",
        "evidence_recall",
        "key_acc",
        "citation_precision",
        "refusal_acc",
        "false_refusal_rate",
        "generated",
    )


# --- gates -----------------------------------------------------------------------------

Gate = tuple[str, str, float]  # (metric, "min" | "max", bar)


def parse_gates(mins: Sequence[str], maxes: Sequence[str], known: Sequence[str]) -> list[Gate]:
    """`METRIC=VALUE` bars → gates. --min is for higher-is-better metrics, --max for the rest."""
    from ..errors import UsageError

    gates: list[Gate] = []
    for kind, specs in (("min", mins), ("max", maxes)):
        for spec in specs:
            name, sep, value = spec.partition("=")
            name = name.strip()
            split, colon, base = name.rpartition(":")
            if colon and split and base in SPLIT_METRICS(k_of(known)):
                name_known = True
            else:
                name_known, base = name in known, name
            try:
                bar = float(value)
            except ValueError:
                bar = math.nan
            if not sep or math.isnan(bar):
                raise UsageError(f"--{kind} {spec!r}: write METRIC=VALUE, e.g. --{kind} hit@5=0.9")
            if not name_known:
                raise UsageError(
                    f"--{kind} {name}: unknown metric; use one of {', '.join(known)} "
                    "(or SPLIT:METRIC for one split of the dataset, e.g. heldout:key_acc)"
                )
            if (kind == "min") == lower_is_better(base):
                other = "max" if kind == "min" else "min"
                better = "lower" if kind == "min" else "higher"
                raise UsageError(f"--{kind} {name}: {better} is better for {name}; use --{other}")
            gates.append((name, kind, bar))
    return gates


def k_of(known: Sequence[str]) -> int:
    """The k of the hit@k among metric names."""
    return next((int(n[4:]) for n in known if n.startswith("hit@")), 5)


def check_gates(metrics: dict[str, float | None], gates: Sequence[Gate]) -> list[str]:
    """The gates a run misses, as 'metric value < bar'; an undefined metric misses its gate."""
    missed = []
    for name, kind, bar in gates:
        value = metrics.get(name)
        if value is None:
            missed.append(f"{name} is n/a (nothing to measure it on)")
        elif kind == "min" and value < bar:
            missed.append(f"{name} {value:.3f} < {bar:g}")
        elif kind == "max" and value > bar:
            missed.append(f"{name} {value:.3f} > {bar:g}")
    return missed


def metric_names(k: int, judge: bool = False) -> list[str]:
    """Every metric a run reports, in order (the ones --min and --max accept)."""
    names = [
        f"hit@{k}",
        "mrr@10",
        "ndcg@10",
        "evidence_recall",
        "context_chars",
        "key_acc",
        "token_f1",
        "citation_precision",
        "citation_recall",
        "refusal_acc",
        "false_refusal_rate",
        "generated",
    ]
    for stage in ("", "_retrieve", "_answer"):
        names += [f"latency{stage}_p50_ms", f"latency{stage}_p95_ms"]
    if judge:
        names += ["judge_faithfulness", "judge_correctness", "judge_parse_failures"]
    return names
