"""Saved runs: find them, load them, and say what changed between two of them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import UsageError
from .metrics import lower_is_better
from .runner import EvalRun

EPSILON = 1e-9


def list_runs(runs_dir: Path) -> list[Path]:
    """The saved runs in `runs_dir`, oldest first (run ids start with their timestamp)."""
    d = Path(runs_dir)
    if not d.is_dir():
        return []
    # runs started in the same second: the one written last is the newer
    return sorted(d.glob("*.json"), key=lambda p: (p.name[:15], p.stat().st_mtime, p.name))


def resolve_runs(refs: list[str], runs_dir: Path) -> tuple[Path, Path]:
    """Two run references → (older, newer) paths.

    No reference or "last": the two latest runs; one reference: it against the latest;
    two: those. A reference is a path or a run id in `runs_dir`.
    """
    runs = list_runs(runs_dir)
    if len(refs) > 2:
        raise UsageError("--diff takes at most two runs: RUN_A RUN_B, or `last`")
    if not refs or refs == ["last"]:
        if len(runs) < 2:
            raise UsageError(
                f"--diff last needs two saved runs in {runs_dir}/, found "
                f"{len(runs)}: run `rag eval` (twice)"
            )
        return runs[-2], runs[-1]
    if len(refs) == 1:
        if not runs:
            raise UsageError(f"no saved runs in {runs_dir}/ to compare {refs[0]} with")
        return _resolve(refs[0], runs_dir), runs[-1]
    return _resolve(refs[0], runs_dir), _resolve(refs[1], runs_dir)


def _resolve(ref: str, runs_dir: Path) -> Path:
    for candidate in (Path(ref), Path(runs_dir) / ref, Path(runs_dir) / f"{ref}.json"):
        if candidate.is_file():
            return candidate
    if ref == "last":
        runs = list_runs(runs_dir)
        if runs:
            return runs[-1]
    raise UsageError(
        f"no run {ref!r}: give a run file or an id from {runs_dir}/ "
        "(list them with `ls " + str(runs_dir) + "`)"
    )


def load_run(path: Path) -> EvalRun:
    """A saved run. Raises UsageError when the file is not one."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise UsageError(f"cannot read the run {path}: {getattr(e, 'strerror', None) or e}") from e
    if not isinstance(data, dict) or "metrics" not in data or "questions" not in data:
        raise UsageError(f"{path} is not a saved `rag eval` run")
    return EvalRun.from_json(data, Path(path))


def diff_runs(a: Path, b: Path) -> dict[str, Any]:
    """How run `b` differs from run `a`: each metric's move, questions better and worse."""
    ra, rb = load_run(a), load_run(b)
    metrics = {}
    for name in dict.fromkeys([*ra.metrics, *rb.metrics]):
        va, vb = ra.metrics.get(name), rb.metrics.get(name)
        delta = None if va is None or vb is None else vb - va
        if delta is None:
            change = None
        elif abs(delta) < EPSILON or (
            # times and sizes print as whole numbers and wobble run to run: a move under
            # 1 unit or 5% is no change
            name.startswith(("latency", "context_chars"))
            and abs(delta) < max(1.0, 0.05 * abs(va or 0.0))
        ):
            change = "same"
        else:
            change = "better" if (delta < 0) == lower_is_better(name) else "worse"
        metrics[name] = {"a": va, "b": vb, "delta": delta, "change": change}
    qa = {q["id"]: q for q in ra.questions}
    qb = {q["id"]: q for q in rb.questions}
    better, worse = [], []
    for qid in qa.keys() & qb.keys():
        changes = _question_changes(qa[qid], qb[qid])
        verdict = _verdict(qa[qid], qb[qid])
        if verdict:
            entry = {
                "id": qid,
                "question": qb[qid]["question"],
                "changes": changes,
                "a": _outcome(qa[qid]),
                "b": _outcome(qb[qid]),
            }
            (better if verdict > 0 else worse).append(entry)
    order = {q: i for i, q in enumerate([*qb, *qa])}
    better.sort(key=lambda e: order[e["id"]])
    worse.sort(key=lambda e: order[e["id"]])
    return {
        "a": _header(ra),
        "b": _header(rb),
        "dataset_changed": ra.dataset.get("sha256") != rb.dataset.get("sha256"),
        "metrics": metrics,
        "better": better,
        "worse": worse,
        "only_in_a": [q for q in qa if q not in qb],
        "only_in_b": [q for q in qb if q not in qa],
    }


def _header(run: EvalRun) -> dict[str, Any]:
    return {
        "id": run.id,
        "path": str(run.path),
        "created": run.created,
        "status": run.status,
        "git": run.git,
        "mode": run.mode,
        "k": run.k,
        "dataset": run.dataset,
    }


def _first_rank(q: dict[str, Any]) -> int | None:
    return next((r["rank"] for r in q.get("retrieved", []) if r["relevant"]), None)


def _outcome(q: dict[str, Any]) -> dict[str, Any]:
    return {
        "passed": q.get("passed"),
        "answer": q.get("answer"),
        "refused": q.get("refused"),
        "evidence_rank": _first_rank(q),
        "reasons": q.get("reasons", []),
    }


def _verdict(a: dict[str, Any], b: dict[str, Any]) -> int:
    """+1 when b is better than a, -1 when worse, 0 otherwise: pass first, then retrieval."""
    for field in ("passed", "hit", "rr"):
        va, vb = a.get(field), b.get(field)
        if va is None or vb is None or abs(float(va) - float(vb)) < EPSILON:
            continue
        return 1 if vb > va else -1
    return 0


def _question_changes(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    out = []
    if a.get("passed") != b.get("passed"):
        out.append("now passes" if b.get("passed") else "now fails")
    ra, rb = _first_rank(a), _first_rank(b)
    if ra != rb:
        out.append(f"evidence rank {ra or '-'} → {rb or '-'}")
    if a.get("refused") != b.get("refused") and None not in (a.get("refused"), b.get("refused")):
        out.append("now refuses" if b.get("refused") else "no longer refuses")
    fa, fb = a.get("token_f1"), b.get("token_f1")
    if fa is not None and fb is not None and abs(fa - fb) >= 0.05:
        out.append(f"token F1 {fa:.2f} → {fb:.2f}")
    return out
