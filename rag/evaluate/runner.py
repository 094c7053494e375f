"""Run a dataset through the pipeline: per-question scores, run metrics, baselines.

A run is written to `runs_dir/<id>.json` after every question, so an interrupted run
keeps what it finished (its status says "partial").
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from ..config import MODES
from ..errors import UsageError
from ..types import Answer, Hit
from . import metrics as M
from .dataset import EvalItem, dataset_hash

if TYPE_CHECKING:
    from ..pipeline import Rag

Progress = Callable[[int, int], None]  # (done, total)
RUNS_DIR = Path("evals/runs")
DEPTH = 10  # ranks seen by MRR@10 and nDCG@10
BASELINES = (*MODES, "llamaindex")
BASELINE_NOTES = {
    "dense": "retrieval only (dense)",
    "keyword": "retrieval only (BM25)",
    "llamaindex": "llama-index VectorStoreIndex, default SentenceSplitter, same embedder; "
    "answers by rag's extractive answerer over its nodes",
}


class System(Protocol):
    """What the evaluator runs: ranked passages, and answers (None: retrieval only)."""

    def search(self, question: str, n: int) -> list[Hit]: ...

    def ask(self, question: str) -> Answer: ...


@dataclass
class EvalRun:
    id: str
    mode: str  # "hybrid" | "dense" | "keyword" | "llamaindex"
    k: int
    metrics: dict[str, float | None] = field(default_factory=dict)
    questions: list[dict[str, Any]] = field(default_factory=list)
    status: str = "running"  # "running" → "complete", or "partial" when interrupted
    path: Path | None = None
    created: str = ""
    seconds: float = 0.0
    total: int = 0  # questions planned
    git: dict[str, Any] | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    dataset: dict[str, Any] = field(default_factory=dict)
    compare: dict[str, dict[str, float | None]] | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def counts(self) -> dict[str, int]:
        qs = self.questions
        answerable = sum(1 for q in qs if q["answerable"])
        return {
            "questions": len(qs),
            "answerable": answerable,
            "unanswerable": len(qs) - answerable,
            "failed": sum(1 for q in qs if q.get("passed") is False),
            "planned": self.total,
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "status": self.status,
            "created": self.created,
            "seconds": round(self.seconds, 2),
            "git": self.git,
            "mode": self.mode,
            "k": self.k,
            "dataset": self.dataset,
            "settings": self.settings,
            "counts": self.counts,
            "metrics": self.metrics,
            "compare": self.compare,
            "notes": self.notes,
            "questions": self.questions,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], path: Path | None = None) -> EvalRun:
        fields = (
            "id",
            "mode",
            "k",
            "metrics",
            "questions",
            "status",
            "created",
            "seconds",
            "git",
            "settings",
            "dataset",
            "compare",
            "notes",
        )
        run = cls(**{f: data[f] for f in fields if f in data})
        run.path = path
        run.total = data.get("counts", {}).get("planned", len(run.questions))
        return run

    def save(self) -> None:
        """Write the run to its path (atomically: a reader never sees half a file)."""
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.to_json(), ensure_ascii=False, indent=1, default=str))
        os.replace(tmp, self.path)


def score(
    item: EvalItem,
    ranked: Sequence[Hit],
    k: int,
    answer: Answer | None = None,
    timings_ms: dict[str, float | None] | None = None,
) -> dict[str, Any]:
    """One question's result: what was retrieved and answered, and its scores."""
    texts = [h.chunk.text for h in ranked]
    ev = item.evidence
    rel = M.relevance(texts, ev) if ev else [False] * len(texts)
    missed = M.found(ev, texts[:DEPTH]).count(False) if ev else 0
    q: dict[str, Any] = {
        "id": item.id,
        "question": item.question,
        "answerable": item.answerable,
        "tags": list(item.tags),
        "split": item.split,
        "expected": item.answer,
        "keys": [list(g) for g in item.keys],
        "evidence": list(ev),
        "retrieved": [
            {
                "rank": h.rank,
                "source": h.chunk.source,
                "chunk_id": h.chunk.id,
                "start_char": h.chunk.start_char,
                "end_char": h.chunk.end_char,
                "score": round(float(h.score), 6),
                "relevant": r,
                "snippet": M.snippet(h.chunk.text),
            }
            for h, r in zip(ranked, rel, strict=True)
        ],
        "hit": M.hit_at_k(rel, k) if ev else None,
        "rr": M.reciprocal_rank(rel, DEPTH) if ev else None,
        "ndcg": M.ndcg_at_k(rel, sum(rel[:DEPTH]) + missed, DEPTH) if ev else None,
        "evidence_recall": M.evidence_recall(texts[:k], ev),
        "context_chars": sum(len(t) for t in texts[:k]),
        "timings_ms": timings_ms or {},
    }
    reasons = []
    if ev and not q["hit"]:
        reasons.append(f"evidence not in the top {k} passages")
    if answer is None:
        q["passed"] = bool(q["hit"]) if ev else None
        q["reasons"] = reasons
        return q

    text = "" if answer.refused else M.strip_citations(answer.answer)
    cited = [c.hit.chunk.text for c in answer.citations]
    missing = M.missing_keys(text, item.keys)
    q.update(
        answer=answer.answer,
        refused=answer.refused,
        answer_mode=answer.mode,
        evidence_score=answer.evidence,
        judged=answer.judged,
        citations=[
            {
                "n": c.n,
                "source": c.hit.chunk.source,
                "chunk_id": c.hit.chunk.id,
                "supports": any(M.relevance([c.hit.chunk.text], ev)),
                "quote": c.quote,
            }
            for c in answer.citations
        ],
        key_match=(not missing) if item.answerable and item.keys else None,
        missing_keys=missing if item.answerable else [],
        token_f1=M.token_f1(text, item.answer) if item.answerable and item.answer else None,
        citation_precision=M.citation_precision(cited, ev) if item.answerable else None,
        citation_recall=M.citation_recall(cited, ev) if item.answerable else None,
        generated=answer.mode == "llm" and not answer.refused if item.answerable else None,
    )
    if item.answerable:
        if answer.refused:
            reasons.append("refused an answerable question")
        elif missing:
            reasons.append("missing key facts: " + "; ".join(" | ".join(g) for g in missing))
        if q["citation_precision"] == 0:
            reasons.append("no cited passage contains the evidence")
        q["passed"] = not answer.refused and not missing
    else:
        if not answer.refused:
            reasons.append("answered an unanswerable question")
        q["passed"] = answer.refused
    q["reasons"] = reasons
    return q


class _Ours:
    def __init__(self, rag: Rag, k: int, mode: str) -> None:
        self.rag, self.k, self.mode = rag, k, mode

    def search(self, question: str, n: int) -> list[Hit]:
        # with --expand, the hypothesis the answer was searched with (Rag keeps it)
        if self.rag.settings.retrieve.expand:
            hyp = self.rag.hypothesis(question)
            return self.rag.search(question, k=n, mode=self.mode, hypothesis=hyp)  # type: ignore[arg-type]
        return self.rag.search(question, k=n, mode=self.mode)  # type: ignore[arg-type]

    def ask(self, question: str) -> Answer:
        return self.rag.ask(question, k=self.k, mode=self.mode)

    def warm_up(self, question: str) -> None:
        self.rag.search(question, k=1, mode=self.mode)  # type: ignore[arg-type]


def run_eval(
    rag: Rag,
    items: Sequence[EvalItem],
    *,
    k: int = 5,
    mode: str = "hybrid",
    progress: Progress | None = None,
    save: bool = True,
    runs_dir: Path = RUNS_DIR,
    dataset_path: Path | None = None,
    judge: bool = False,
    answers: bool = True,
) -> EvalRun:
    """Ask every question, score it, and (with `save`) keep the run under `runs_dir`.

    `mode` is a retrieval mode or "llamaindex"; `answers=False` measures retrieval only.
    Ctrl-C stops the run after saving what it finished (status "partial"), then re-raises.
    """
    if mode not in BASELINES:
        raise UsageError(f"unknown mode {mode!r}: use one of {', '.join(BASELINES)}")
    if k < 1:
        raise UsageError("k must be at least 1")
    grader = None
    if judge:
        from .judge import Judge

        a = rag.settings.answer
        answerer = getattr(rag, "answerer", None)
        llm = answerer.llm if answerer is not None else None  # a GGUF's server starts here
        grader = Judge(replace(a, llm_url=llm.url) if llm is not None else a)
    if mode == "llamaindex":
        from .baselines import LlamaIndexBaseline

        system: System = LlamaIndexBaseline(rag, k)
    else:
        system = _Ours(rag, k, mode)
    # a model answerer was asked: `generated` is measured (0 when its model never answered)
    writes = answers and mode != "llamaindex" and getattr(
        getattr(rag, "answerer", None), "name", None) == "llm"  # fmt: skip
    run = _new_run(rag, items, k, mode, runs_dir if save else None, dataset_path)
    if mode == "llamaindex":
        run.notes.append(BASELINE_NOTES[mode])
    if not answers:
        run.notes.append("retrieval only: no answers were generated")
    if items:
        # load the models now: latency is per question (a plain search: with --expand, the
        # first question's hypothesis is written, and timed, when it is asked)
        warm = getattr(system, "warm_up", None)
        warm(items[0].question) if warm else system.search(items[0].question, 1)
    started = time.perf_counter()
    try:
        for n, item in enumerate(items, start=1):
            run.questions.append(_one(system, item, k, answers, grader, writes))
            run.seconds = time.perf_counter() - started
            run.metrics = M.summarize(run.questions, k)
            run.save()
            if progress:
                progress(n, len(items))
    except BaseException:
        run.status = "partial"
        run.save()
        raise
    run.status = "complete"
    run.metrics = M.summarize(run.questions, k)
    run.save()
    return run


def _one(
    system: System, item: EvalItem, k: int, answers: bool, grader: Any, writes: bool = False
) -> dict[str, Any]:
    answer = None
    t0 = time.perf_counter()
    if answers:
        answer = system.ask(item.question)
        total = time.perf_counter() - t0
        retrieve = answer.timings.get("retrieve")
        # answering is all that follows retrieval: extraction, or an LLM and its verification;
        # a hypothesis written for the search (--expand) is a stage of its own
        expand = answer.timings.get("expand")
        before = (retrieve or 0.0) + (expand or 0.0) + answer.timings.get("condense", 0.0)
        answering = None if retrieve is None else max(total - before, 0.0)
        timings = {"retrieve": retrieve, "answer": answering, "total": total}
        if expand is not None:
            timings["expand"] = expand
        ranked = system.search(item.question, max(k, DEPTH))
    else:
        ranked = system.search(item.question, max(k, DEPTH))
        total = time.perf_counter() - t0
        timings = {"retrieve": total, "answer": None, "total": total}
    ms = {s: None if t is None else round(t * 1000, 1) for s, t in timings.items()}
    q = score(item, ranked, k, answer, ms)
    if writes:
        q["model_asked"] = True
    if grader is not None and answer is not None and not answer.refused:
        passages = [c.hit.chunk.text for c in answer.citations] or [
            h.chunk.text for h in answer.hits
        ]
        q["judge"] = grader(item.question, item.answer, M.strip_citations(answer.answer), passages)
    return q


def _new_run(
    rag: Rag,
    items: Sequence[EvalItem],
    k: int,
    mode: str,
    runs_dir: Path | None,
    dataset_path: Path | None,
) -> EvalRun:
    now = datetime.now(UTC).astimezone()
    run_id = f"{now:%Y%m%d-%H%M%S}-{mode}"
    path = None
    if runs_dir is not None:
        path = Path(runs_dir) / f"{run_id}.json"
        n = 2
        while path.exists():
            path = Path(runs_dir) / f"{run_id}-{n}.json"
            n += 1
        run_id = path.stem
    s = rag.settings
    settings = {
        "index": str(s.store.index_dir),
        "chunk": rag.index.manifest.get("chunk"),
        "embed": {"model": rag.embedder.name, "url": s.embed.url},
        "retrieve": {**vars(s.retrieve), "mode": mode, "k": k},
        "answer": {k: v for k, v in vars(s.answer).items() if k != "api_key"},
    }
    dataset = {
        "path": str(dataset_path) if dataset_path else None,
        "sha256": dataset_hash(list(items)),
        "questions": len(items),
    }
    return EvalRun(
        id=run_id,
        mode=mode,
        k=k,
        path=path,
        created=now.isoformat(timespec="seconds"),
        total=len(items),
        git=_git(),
        settings=settings,
        dataset=dataset,
    )


def _git() -> dict[str, Any] | None:
    """The checked-out commit and whether tracked files differ from it, if in a git repo."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10
        )
        if head.returncode != 0:
            return None
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        return {"commit": head.stdout.strip(), "dirty": bool(status.stdout.strip())}
    except (OSError, subprocess.SubprocessError):
        return None


def compare(
    rag: Rag,
    items: Sequence[EvalItem],
    names: Sequence[str],
    k: int = 5,
    progress: Progress | None = None,
    *,
    mode: str | None = None,
    main: EvalRun | None = None,
) -> dict[str, dict[str, float | None]]:
    """Metrics of each named system over the same items: {name: metrics}.

    The retrieval mode `mode` (default: the settings' mode) is answered in full, other
    retrieval modes are measured on retrieval only, "llamaindex" in full. A complete
    `main` run of one of the names is reused instead of run again.
    """
    unknown = [n for n in names if n not in BASELINES]
    if unknown or not names:
        raise UsageError(
            f"unknown baseline {', '.join(unknown) or '(none)'}: use any of {','.join(BASELINES)}"
        )
    mode = mode or rag.settings.retrieve.mode
    reuse = {main.mode: main} if main and main.status == "complete" and main.k == k else {}
    todo = [n for n in dict.fromkeys(names) if n not in reuse]
    total, offset = len(items) * len(todo), 0

    def tick(done: int, _: int) -> None:
        if progress:
            progress(offset + done, total)

    out: dict[str, dict[str, float | None]] = {}
    for name in dict.fromkeys(names):
        if name in reuse:
            out[name] = reuse[name].metrics
            continue
        answers = name == mode or name == "llamaindex"
        run = run_eval(rag, items, k=k, mode=name, progress=tick, save=False, answers=answers)
        out[name] = run.metrics
        offset += len(items)
    return out


def failures(run: EvalRun) -> list[dict[str, Any]]:
    """The questions the run got wrong, with what was expected, what came back and why."""
    return [q for q in run.questions if q.get("passed") is False]


def evidence_in_index(rag: Any, items: Sequence[EvalItem], sample: int = 5) -> tuple[int, int]:
    """(found, tried): of the first `sample` questions with evidence, how many have an
    evidence quote in some passage of this index (a keyword search for the quote). None
    found means the set was written for other documents: its run would score 0."""
    tried = found = 0
    for item in items:
        if not item.evidence:
            continue
        tried += 1
        quote = " ".join(item.evidence[0].split())
        hits = rag.search(quote, k=5, mode="keyword")
        if any(quote in " ".join(h.chunk.text.split()) for h in hits):
            found += 1
        if tried >= sample:
            break
    return found, tried
