"""Runs as text: the terminal summary, failures, diffs, and self-contained HTML/Markdown."""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import UsageError
from .runner import BASELINE_NOTES, EvalRun, failures

MEANING = {
    "hit@": "a top-k passage contains an evidence quote",
    "mrr@10": "1 / rank of the first passage with evidence (0 past rank 10)",
    "ndcg@10": "how well passages with evidence are ranked first",
    "evidence_recall": "evidence quotes found in the top-k passages",
    "context_chars": "characters in the top-k passages (what an answerer must read)",
    "key_acc": "answers containing every key fact",
    "token_f1": "word overlap with the reference answer (SQuAD F1)",
    "citation_precision": "cited passages that contain evidence",
    "citation_recall": "evidence quotes covered by the cited passages",
    "refusal_acc": "unanswerable questions refused",
    "false_refusal_rate": "answerable questions refused (lower is better)",
    "generated": "answerable questions answered by the model (its verified text, not the quote)",
    "latency_p50_ms": "whole question, median (ms)",
    "latency_p95_ms": "whole question, 95th percentile (ms)",
    "latency_retrieve_p50_ms": "retrieval, median (ms)",
    "latency_retrieve_p95_ms": "retrieval, 95th percentile (ms)",
    "latency_answer_p50_ms": "answering, median (ms)",
    "latency_answer_p95_ms": "answering, 95th percentile (ms)",
    "judge_faithfulness": "LLM judge: answers supported by their passages",
    "judge_correctness": "LLM judge: answers agreeing with the reference",
    "judge_parse_failures": "LLM judge replies that were not the JSON asked for",
}


def meaning(metric: str) -> str:
    return MEANING.get(metric) or MEANING.get(metric.split("@")[0] + "@", "")


def fmt(metric: str, value: float | None) -> str:
    """A metric for people: n/a when undefined, whole ms for latencies, else 3 decimals."""
    if value is None:
        return "n/a"
    if metric.startswith("latency_") or metric.endswith(("_failures", "_chars")):
        return f"{value:.0f}"
    return f"{value:.3f}"


def short(source: str) -> str:
    try:
        return str(Path(source).relative_to(Path.cwd()))
    except ValueError:
        return source


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], align: str = "") -> str:
    """A plain-text table; `align` has one l or r per column (default: l, then r)."""
    align = align or "l" + "r" * (len(header) - 1)
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            str(c).ljust(w) if a == "l" else str(c).rjust(w)
            for c, w, a in zip(cells, widths, align, strict=True)
        ).rstrip()

    return "\n".join([line(header), "  ".join("-" * w for w in widths), *map(line, rows)])


# --- terminal --------------------------------------------------------------------------


def summary_text(run: EvalRun) -> str:
    c = run.counts
    head = (
        f"{run.id}: {c['questions']} questions ({c['answerable']} answerable, "
        f"{c['unanswerable']} unanswerable), {run.mode}, k={run.k}, {run.seconds:.1f} s"
        + ("" if run.status == "complete" else f" — {run.status.upper()}")
    )
    rows = [(m, fmt(m, v), meaning(m)) for m, v in run.metrics.items()]
    out = [head, "", _table(("metric", "value", "meaning"), rows, "lrl")]
    out += [f"note: {n}" for n in run.notes]
    return "\n".join(out)


def compare_text(compare: dict[str, dict[str, float | None]]) -> str:
    names = list(compare)
    metrics = [
        m
        for m in dict.fromkeys(m for r in compare.values() for m in r)
        if any(compare[n].get(m) is not None for n in names)
    ]
    rows = [(m, *(fmt(m, compare[n].get(m)) for n in names)) for m in metrics]
    out = [_table(("metric", *names), rows)]
    out += [f"{n}: {BASELINE_NOTES[n]}" for n in names if n in BASELINE_NOTES]
    return "\n".join(out)


def failures_text(run: EvalRun, limit: int = 20) -> str:
    fails = failures(run)
    if not fails:
        return "No failures."
    out = [f"{len(fails)} failure{'s' if len(fails) != 1 else ''}:"]
    for q in fails[:limit]:
        out.append(f"\n[{q['id']}] {q['question']}")
        out.append(f"  expected: {q['expected'] or ('(refusal)' if not q['answerable'] else '-')}")
        if "answer" in q:
            out.append(f"  got:      {q['answer']}")
        out.append(f"  why:      {'; '.join(q['reasons']) or '-'}")
        srcs = [
            f"{r['rank']}:{Path(r['source']).name}{'*' if r['relevant'] else ''}"
            for r in q["retrieved"][: run.k]
        ]
        out.append(f"  retrieved: {' '.join(srcs) or '(nothing)'}   (* has evidence)")
    if len(fails) > limit:
        out.append(f"\n… and {len(fails) - limit} more (see --report or --json)")
    return "\n".join(out)


def diff_text(d: dict[str, Any]) -> str:
    a, b = d["a"], d["b"]
    out = [
        f"A: {a['id']} ({a['created']}, {_commit(a)}, {a['mode']}, k={a['k']}, {a['status']})",
        f"B: {b['id']} ({b['created']}, {_commit(b)}, {b['mode']}, k={b['k']}, {b['status']})",
    ]
    if d["dataset_changed"]:
        out.append("warning: the runs used different question sets; compare with care")
    rows = []
    for m, v in d["metrics"].items():
        delta = "" if v["delta"] is None else f"{v['delta']:+.3f}".replace("+0.000", "0")
        if v["delta"] is not None and m.startswith("latency_"):
            delta = f"{v['delta']:+.0f}"
        rows.append((m, fmt(m, v["a"]), fmt(m, v["b"]), delta, v["change"] or ""))
    out += ["", _table(("metric", "A", "B", "delta", "change"), rows, "lrrrl")]
    for label, entries in (("Better", d["better"]), ("Worse", d["worse"])):
        out.append(f"\n{label} ({len(entries)}):")
        for e in entries:
            out.append(f"  [{e['id']}] {e['question']}")
            out.append(f"      {'; '.join(e['changes']) or 'ranks moved'}")
    for label, ids in (("Only in A", d["only_in_a"]), ("Only in B", d["only_in_b"])):
        if ids:
            more = f" … and {len(ids) - 20} more" if len(ids) > 20 else ""
            out.append(f"\n{label} ({len(ids)}): {', '.join(ids[:20])}{more}")
    return "\n".join(out)


def _commit(h: dict[str, Any]) -> str:
    git = h.get("git") or {}
    if not git.get("commit"):
        return "no git"
    return git["commit"][:8] + ("+dirty" if git.get("dirty") else "")


# --- files -----------------------------------------------------------------------------


def write_report(
    run: EvalRun, path: Path, compare: dict[str, dict[str, float | None]] | None = None
) -> None:
    """A self-contained report (.html or .md): metrics, comparison, failures, every question."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in (".html", ".htm"):
        text = _html(run, compare)
    elif suffix in (".md", ".markdown"):
        text = _markdown(run, compare)
    else:
        raise UsageError(f"--report {path}: name an .html or .md file")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def _about(run: EvalRun) -> list[tuple[str, str]]:
    c = run.counts
    return [
        ("run", f"{run.id} ({run.status})"),
        ("created", run.created),
        ("commit", _commit({"git": run.git})),
        (
            "dataset",
            f"{run.dataset.get('path') or '-'} ({c['questions']} questions: "
            f"{c['answerable']} answerable, {c['unanswerable']} unanswerable)",
        ),
        ("index", str(run.settings.get("index", "-"))),
        ("retrieval", f"{run.mode}, k={run.k}"),
        ("time", f"{run.seconds:.1f} s"),
    ]


def _compare_rows(compare: dict[str, dict[str, float | None]]) -> tuple[list[str], list[list[str]]]:
    names = list(compare)
    metrics = [
        m
        for m in dict.fromkeys(m for r in compare.values() for m in r)
        if any(compare[n].get(m) is not None for n in names)
    ]
    return names, [[m, *(fmt(m, compare[n].get(m)) for n in names)] for m in metrics]


def _md_cell(text: Any) -> str:
    text = str(text if text is not None else "").replace("|", "\\|").replace("\n", " ")
    return text.replace("<", "&lt;").replace(">", "&gt;")  # shown as text, not as HTML


def _md_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(_md_cell(c) for c in r) + " |" for r in rows]
    return out


def _markdown(run: EvalRun, compare: dict[str, dict[str, float | None]] | None) -> str:
    out = [f"# rag eval — {run.id}", ""]
    out += [f"- **{k}**: {_md_cell(v)}" for k, v in _about(run)]
    out += ["", "## Metrics", ""]
    out += _md_table(
        ("metric", "value", "meaning"), [(m, fmt(m, v), meaning(m)) for m, v in run.metrics.items()]
    )
    out += [f"\n_{n}_" for n in run.notes]
    if compare:
        names, rows = _compare_rows(compare)
        out += ["", "## Compare", "", *_md_table(("metric", *names), rows), ""]
        out += [f"- **{n}**: {BASELINE_NOTES[n]}" for n in names if n in BASELINE_NOTES]
    fails = failures(run)
    out += ["", f"## Failures ({len(fails)})", ""]
    for q in fails:
        out += [
            f"### {q['id']}: {_md_cell(q['question'])}",
            "",
            f"- expected: {_md_cell(q['expected'] or '-')}",
            f"- got: {_md_cell(q.get('answer', '-'))}",
            f"- why: {_md_cell('; '.join(q['reasons']))}",
            "- retrieved: "
            + ", ".join(
                f"{r['rank']}. {_md_cell(short(r['source']))}"
                f"{' (evidence)' if r['relevant'] else ''}"
                for r in q["retrieved"][: run.k]
            ),
            "",
        ]
    out += ["## All questions", ""]
    out += _md_table(
        ("id", "result", "question", "answer", "evidence rank"),
        [
            (q["id"], _result(q), q["question"], q.get("answer", "-"), _rank(q))
            for q in run.questions
        ],
    )
    return "\n".join(out) + "\n"


def _result(q: dict[str, Any]) -> str:
    return {True: "pass", False: "FAIL", None: "-"}[q.get("passed")]


def _rank(q: dict[str, Any]) -> str:
    if not q["evidence"]:
        return "-"
    rank = next((r["rank"] for r in q["retrieved"] if r["relevant"]), None)
    return str(rank) if rank else "not found"


_CSS = """
body { font: 15px/1.45 system-ui, sans-serif; max-width: 72rem; margin: 2rem auto;
  padding: 0 1rem; color: #222 }
table { border-collapse: collapse; margin: .5rem 0 1.5rem }
td, th { border: 1px solid #ccc; padding: .3rem .6rem; vertical-align: top; text-align: left }
th { background: #f3f3f3 }
td.num { text-align: right; font-variant-numeric: tabular-nums }
.fail { color: #b00020; font-weight: 600 }
.pass { color: #1b7f3b }
.ev { background: #e8f5e9 }
small { color: #666 }
summary { cursor: pointer }
"""


def _html(run: EvalRun, compare: dict[str, dict[str, float | None]] | None) -> str:
    e = html.escape
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>rag eval {e(run.id)}</title>"
        f"<style>{_CSS}</style></head><body><h1>rag eval — {e(run.id)}</h1><table>"
    ]
    parts += [f"<tr><th>{e(k)}</th><td>{e(v)}</td></tr>" for k, v in _about(run)]
    parts.append(
        "</table><h2>Metrics</h2><table><tr><th>metric</th><th>value</th><th>meaning</th></tr>"
    )
    parts += [
        f"<tr><td>{e(m)}</td><td class='num'>{fmt(m, v)}</td><td>{e(meaning(m))}</td></tr>"
        for m, v in run.metrics.items()
    ]
    parts.append("</table>" + "".join(f"<p><small>{e(n)}</small></p>" for n in run.notes))
    if compare:
        names, rows = _compare_rows(compare)
        parts.append(
            "<h2>Compare</h2><table><tr><th>metric</th>"
            + "".join(f"<th>{e(n)}</th>" for n in names)
            + "</tr>"
        )
        parts += [
            "<tr><td>"
            + e(r[0])
            + "</td>"
            + "".join(f"<td class='num'>{c}</td>" for c in r[1:])
            + "</tr>"
            for r in rows
        ]
        parts.append(
            "</table><ul>"
            + "".join(
                f"<li><b>{e(n)}</b>: {e(BASELINE_NOTES[n])}</li>"
                for n in names
                if n in BASELINE_NOTES
            )
            + "</ul>"
        )
    fails = failures(run)
    parts.append(f"<h2>Failures ({len(fails)})</h2>")
    for q in fails:
        parts.append(_html_question(q, run.k, open_=True))
    parts.append(f"<h2>All questions ({len(run.questions)})</h2>")
    parts += [_html_question(q, run.k) for q in run.questions]
    parts.append("</body></html>\n")
    return "\n".join(parts)


def _html_question(q: dict[str, Any], k: int, open_: bool = False) -> str:
    e = html.escape
    res = _result(q)
    cls = "fail" if res == "FAIL" else "pass" if res == "pass" else ""
    rows = [
        ("expected", q["expected"] or ("(a refusal)" if not q["answerable"] else "-")),
        ("got", q.get("answer", "(retrieval only)")),
        ("why", "; ".join(q["reasons"]) or "-"),
        ("keys", " ; ".join(" | ".join(g) for g in q["keys"]) or "-"),
        ("evidence", " / ".join(q["evidence"]) or "-"),
    ]
    body = "".join(f"<tr><th>{e(k_)}</th><td>{e(str(v))}</td></tr>" for k_, v in rows)
    retrieved = "".join(
        f"<tr class='{'ev' if r['relevant'] else ''}'><td class='num'>{r['rank']}</td>"
        f"<td>{e(short(r['source']))}</td><td class='num'>{r['start_char']}–{r['end_char']}</td>"
        f"<td>{'evidence' if r['relevant'] else ''}</td>"
        f"<td><small>{e(r.get('snippet', ''))}</small></td></tr>"
        for r in q["retrieved"][:k]
    )
    return (
        f"<details{' open' if open_ else ''}><summary><span class='{cls}'>{res}</span> "
        f"<b>{e(q['id'])}</b> {e(q['question'])}</summary><table>{body}</table>"
        "<table><tr><th>rank</th><th>source</th><th>chars</th><th></th><th>passage</th></tr>"
        f"{retrieved}"
        "</table></details>"
    )
