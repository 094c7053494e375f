"""Answer quality over the whole Python docs folder, beside retrieval. Not a test: figures.

    python bench/answers.py --index .cache/index-pyfull    # an index of the whole tree:
    # rag --index .cache/index-pyfull ingest /usr/share/doc/python3.11/html
    RAG_LLM=local RAG_EXPAND=1 python bench/answers.py --index .cache/index-pyfull
    # the same with the bundled 1.5B writing the answers and a guess searched for too

Every question is answered by the real pipeline (`rag.evaluate.run_eval`: hybrid, k=5, the
answerer the settings choose — extractive by default; RAG_LLM, RAG_EXPAND and the other
environment settings of `rag` apply) over an existing index, and scored
by `rag eval`'s metrics, with one change: a passage or citation counts as evidence only
when it comes from the question's expected page (`sources`; its reST source in `_sources/`
too, and a judged passage from its own page), as in bench.py's retrieval tables. `rag eval`
reads no `sources`: it matches an evidence quote in any passage, and over the whole tree the
same quote also turns up in other pages (what's-new notes, tutorials, FAQs).

Questions: `evals/pydocs_qa.jsonl` (written for the 50 pages of evals/corpora/pydocs/, which
are in the tree under the same paths) and `bench/pydocs_qa.jsonl` (30 answerable retrieval
questions written for the whole tree). An "unanswerable" question of the first set is
excluded when the whole tree does answer it: `UNANSWERED` holds, for each, what a passage
answering it would say, and the tree is searched for it (as the index loads it) each run.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(ROOT), str(HERE)]

from bench import PYDOCS, relevant  # noqa: E402  (bench/bench.py)
from rag.config import Settings  # noqa: E402
from rag.evaluate import load_dataset, run_eval  # noqa: E402
from rag.evaluate import metrics as M  # noqa: E402
from rag.evaluate.runner import DEPTH  # noqa: E402
from rag.loaders import discover, load_file  # noqa: E402
from rag.pipeline import Rag  # noqa: E402
from rag.types import Document  # noqa: E402

K = 5
SETS = (ROOT / "evals" / "pydocs_qa.jsonl", ROOT / "bench" / "pydocs_qa.jsonl")

# For each unanswerable question of evals/pydocs_qa.jsonl: what a passage that answers it
# would say (case-insensitive, whitespace folded). A match anywhere in the tree excludes it.
UNANSWERED: dict[str, str] = {
    "d03": r"\bPath\.walk\b",  # pathlib.Path.walk() is new in 3.12
    "d08": r"\bstatistics\.kde\b|kernel density estimat",  # new in 3.13
    "d12": r"_MAXCACHE|cache[sd]? (?:up to |at most )?\d+ (?:compiled |regular expression )*"
    r"(?:patterns|expressions)|\b\d+ (?:most recent |compiled )*patterns are cached",
    "d16": r"\b131,?072\b|128 ?\* ?1024|field_size_limit\(\)[^.]{0,80}defaults? (?:to|is) \d",
    "d22": r"default protocol (?:in the pickle module )?is (?:now )?(?:protocol )?\d",
    "d26": r"match statement[^.]{0,60}(?:new in version|added in (?:python )?)3\.\d+"
    r"|new in version 3\.\d+\.? the match statement|versionadded:: 3\.\d+ the match statement"
    r"|structural pattern matching has been added",
    "d31": r"heapify\(x, ?key ?=",
    "d36": r"\bcache\b[^.]{0,120}\b\d+(?:\.\d+)? ?% faster|\d+(?:\.\d+)? ?% faster than lru_cache",
    "d40": r"RotatingFileHandler\(filename,[^)]{0,40}maxBytes ?= ?\d+",
    "d44": r"\btee\b[^.]{0,120}\b(?:at most|up to|a limit of|more than) \d+ (?:items|values|elem)",
    "d48": r"python 1\.0\b[^.]{0,60}\b(?:19|20)\d\d\b|\b(?:19|20)\d\d\b[^.]{0,60}python 1\.0\b",
    "d52": r"\b(?:\d+|six|eight) random (?:characters|letters)",
    "d56": r"rmtree[^.]{0,150}\b(?:retr(?:y|ies)|attempts?)\b[^.]{0,40}\d|\b\d+ (?:times|retries"
    r"|attempts)[^.]{0,80}rmtree",
    "d60": r"\d+ bytes with `{0,2}__slots__`{0,2} and \d+ bytes without|slots=True[^.]{0,100}"
    r"\d+ bytes",
}


@dataclass(frozen=True)
class Excluded:
    id: str
    source: str  # relative to the tree
    quote: str  # the matched text, with a little context
    also: int  # other files that say it too


def answered_in_tree(
    tree: Path, patterns: dict[str, str], docs: Iterable[Document] | None = None
) -> dict[str, Excluded]:
    """The questions of `patterns` that some file of `tree` answers, as `rag ingest` reads it.

    Rendered pages are preferred over reST sources as the file named.
    """
    compiled = {qid: re.compile(p, re.I) for qid, p in patterns.items()}
    hits: dict[str, list[tuple[str, str]]] = {}
    for doc in tree_documents(tree) if docs is None else docs:
        text = " ".join(doc.text.split())
        for qid, rx in compiled.items():
            m = rx.search(text)
            if m:
                quote = text[max(m.start() - 60, 0) : m.end() + 60]
                hits.setdefault(qid, []).append((_relative(doc.source, tree), quote))
    out = {}
    for qid, found in hits.items():
        found.sort(key=lambda f: (f[0].startswith("_sources/"), f[0]))
        source, quote = found[0]
        out[qid] = Excluded(qid, source, quote, len(found) - 1)
    return out


def tree_documents(tree: Path) -> Iterable[Document]:
    """Every file of `tree` that `rag ingest` would index, loaded as it loads them."""
    files = discover([tree]).files
    for path in files:
        doc = load_file(path)
        if isinstance(doc, Document):
            yield doc


def _relative(source: str, tree: Path) -> str:
    try:
        return Path(source).relative_to(tree.resolve()).as_posix()
    except ValueError:
        return source


def source_checked(q: dict[str, Any], raw: dict[str, Any], texts: dict[str, str]) -> None:
    """Re-score one `run_eval` question: evidence counts only from the expected page, or its
    reST source in `_sources/` (the same page), or a passage judged to answer it, as
    bench.py's `relevant`. `texts`: chunk id → text.

    hit, reciprocal rank and citation precision are recomputed; the metrics that need
    every quote's position (nDCG, evidence and citation recall) become None."""
    if not q["answerable"] or not q["evidence"]:
        return
    expected = {
        **raw,
        "sources": [t for s in raw.get("sources", ()) for t in (s, rest_source(s))],
        "judged": [
            {**j, "source": t}
            for j in raw.get("judged", ())
            for t in (j["source"], rest_source(j["source"]))
        ],
    }

    def ok(entry: dict[str, Any]) -> bool:
        text = texts.get(entry["chunk_id"])
        return text is not None and relevant(expected, entry["source"], text)

    rel = []
    for r in q["retrieved"]:
        r["relevant"] = ok(r)
        rel.append(r["relevant"])
    q["hit"] = M.hit_at_k(rel, K)
    q["rr"] = M.reciprocal_rank(rel, DEPTH)
    q["ndcg"] = q["evidence_recall"] = None
    if "citations" in q:
        for c in q["citations"]:
            c["supports"] = ok(c)
        cited = [c["supports"] for c in q["citations"]]
        q["citation_precision"] = M.mean(cited) if cited else None
        q["citation_recall"] = None


def rest_source(page: str) -> str:
    """Where Sphinx puts a page's reST source: library/x.html → _sources/library/x.rst.txt."""
    return f"_sources/{page.removesuffix('.html')}.rst.txt"


def table_row(name: str, questions: list[dict[str, Any]]) -> dict[str, Any]:
    """One row of the printed table, from scored questions."""
    m = M.summarize(questions, K)
    answerable = [q for q in questions if q["answerable"]]
    unanswerable = [q for q in questions if not q["answerable"]]
    return {
        "set": name,
        "questions": f"{len(answerable)} + {len(unanswerable)}",
        f"hit@{K}": m[f"hit@{K}"],
        "MRR@10": m["mrr@10"],
        "key-fact acc": m["key_acc"],
        "citation prec": m["citation_precision"],
        "refused (unans.)": _count(unanswerable),
        "false refusals": _count(answerable),
        "p50 ms": m["latency_p50_ms"],
    }


def _count(questions: list[dict[str, Any]]) -> str:
    return f"{sum(1 for q in questions if q.get('refused'))}/{len(questions)}"


def print_table(rows: list[dict[str, Any]]) -> None:
    """A Markdown table (it pastes into docs/benchmarks.md as it is)."""
    cols = list(rows[0])
    print("| " + " | ".join(cols) + " |")
    print("|---|" + "---:|" * (len(cols) - 1))
    for row in rows:
        print("| " + " | ".join(_cell(row[c]) for c in cols) + " |")


def _cell(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.0f}" if value > 1.5 else f"{value:.3f}"
    return str(value)


def raw_rows(path: Path) -> dict[str, dict[str, Any]]:
    """The dataset's lines as written (load_dataset keeps no `sources` or `judged`)."""
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return {str(r["id"]): r for r in rows}


def run_set(
    rag: Rag,
    path: Path,
    drop: set[str],
    progress: Callable[[int, int], None],
    limit: int | None = None,
) -> tuple[list[dict[str, Any]], dict[str, float | None]]:
    """Answer and score one set over the index: the source-checked questions, and the
    metrics `rag eval` itself gives them (an evidence quote in any passage)."""
    raw = raw_rows(path)
    items = [i for i in load_dataset(path) if i.id not in drop][:limit]
    run = run_eval(rag, items, k=K, mode="hybrid", save=False, progress=progress)
    ids = {e["chunk_id"] for q in run.questions for e in q["retrieved"] + q.get("citations", [])}
    texts = {i: c.text for i, c in rag.index.chunks(sorted(ids)).items()}
    for q in run.questions:
        source_checked(q, raw[q["id"]], texts)
    return run.questions, run.metrics


def coverage(rag: Rag, path: Path, tree: Path) -> tuple[int, int, int]:
    """(expected pages the index holds, of them only as their reST source, expected pages)
    of a set. On a partial index the source-checked figures count a page not indexed yet
    as a miss."""
    indexed = {_relative(s, tree) for s, row in rag.files().items() if row.status == "indexed"}
    pages = {s for r in raw_rows(path).values() for s in r.get("sources", ())}
    rest = {p for p in pages if p not in indexed and rest_source(p) in indexed}
    return len(pages & indexed) + len(rest), len(rest), len(pages)


def _answerer(settings: Settings) -> str:
    a = settings.answer
    who = a.llm_url or (a.llm_gguf and Path(a.llm_gguf).name) or "extractive"
    return who + (", expanded search" if settings.retrieve.expand else "")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--index", type=Path, required=True, help="an index of the whole --corpus")
    ap.add_argument("--corpus", type=Path, default=PYDOCS, help="the docs folder it indexes")
    ap.add_argument("--json", type=Path, help="also write every scored question here")
    ap.add_argument("--limit", type=int, help="only the first N questions of each set")
    args = ap.parse_args()
    os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")
    if not args.corpus.is_dir():
        raise SystemExit(f"{args.corpus} is missing: apt-get install python3.11-doc")

    t = time.perf_counter()
    excluded = answered_in_tree(args.corpus, UNANSWERED)
    print(f"Searched {args.corpus} for the answers of the {len(UNANSWERED)} unanswerable "
          f"questions in {time.perf_counter() - t:.0f} s; excluded {len(excluded)}:")  # fmt: skip
    for e in sorted(excluded.values(), key=lambda e: e.id):
        also = f" (and {e.also} more files)" if e.also else ""
        print(f"  {e.id}: answered by {e.source}{also}: “…{e.quote}…”")

    rag = Rag(Settings.from_env().with_(store={"index_dir": args.index}))
    st = rag.status()
    roots = [Path(r).resolve() for r in st["roots"]]
    if args.corpus.resolve() not in roots:
        print(f"warning: the index's roots are {', '.join(map(str, roots))}, not {args.corpus}")
    print(f"Index {args.index}: {st['documents']} documents, {st['chunks']} chunks; "
          f"answers: {_answerer(rag.settings)}")  # fmt: skip

    rows, everything = [], {}
    for path in SETS:
        drop = set(excluded) if path == SETS[0] else set()
        name = path.relative_to(ROOT).as_posix()

        def tick(done: int, total: int, name: str = name) -> None:
            print(f"\r  {name}: {done}/{total}", end="", file=sys.stderr, flush=True)

        questions, text_only = run_set(rag, path, drop, tick, args.limit)
        print(file=sys.stderr)
        checked = table_row(name, questions)
        rows.append(checked)
        splits = sorted({q["split"] for q in questions} - {""}, key=lambda s: s != "tune")
        rows += [table_row(f"  {s}", [q for q in questions if q["split"] == s]) for s in splits]
        a, b = text_only, checked
        print(
            f"{name}: hit@{K} / MRR@10 / citation precision with `rag eval`'s matching (an "
            f"evidence quote in any passage): {_cell(a[f'hit@{K}'])} / {_cell(a['mrr@10'])} / "
            f"{_cell(a['citation_precision'])}; from the expected page (or its reST source, or a "
            f"judged passage): {_cell(b[f'hit@{K}'])} / {_cell(b['MRR@10'])} / "
            f"{_cell(b['citation prec'])}"
        )
        cited = [c["source"] for q in questions for c in q.get("citations", [])]
        rest = sum(1 for c in cited if "/_sources/" in c)
        held, only_rest, pages = coverage(rag, path, args.corpus)
        print(f"{name}: {rest} of {len(cited)} citations are reST sources (_sources/); the "
              f"index holds {held} of the {pages} expected pages ({only_rest} of them only as "
              "their reST source)")  # fmt: skip
        everything[name] = questions
    print()
    print_table(rows)
    if args.json:
        args.json.write_text(json.dumps(everything, ensure_ascii=False, indent=1, default=str))


if __name__ == "__main__":
    main()
