"""Eval datasets: JSONL (one object per line) or CSV, validated before anything runs.

A question is `{"id", "question", "answer", "keys", "evidence", "answerable", "tags",
"split"}`; only `id` and `question` are required. `split` names the part of the set a
question belongs to ("tune", "heldout", …): `rag eval` reports each metric per split
too. See docs/evaluation.md for the CSV columns.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..errors import UsageError

FIELDS = ("id", "question", "answer", "keys", "evidence", "answerable", "tags", "split")
_TRUE = {"true", "yes", "y", "1"}
_FALSE = {"false", "no", "n", "0"}


@dataclass(frozen=True)
class EvalItem:
    """One question with what a correct answer must contain and where the documents say it."""

    id: str
    question: str
    answer: str = ""  # the reference answer, for token F1
    keys: tuple[tuple[str, ...], ...] = ()  # every group must match one of its alternatives
    evidence: tuple[str, ...] = ()  # exact quotes from the documents
    answerable: bool = True
    tags: tuple[str, ...] = ()
    split: str = ""  # e.g. "tune" or "heldout": metrics are reported per split

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["keys"] = [list(g) for g in self.keys]
        d["evidence"] = list(self.evidence)
        d["tags"] = list(self.tags)
        return d


class _Invalid(Exception):
    """A problem in one record; load_dataset adds the file and line."""


def load_dataset(path: Path) -> list[EvalItem]:
    """Read and validate a .jsonl or .csv dataset. Raises UsageError naming file and line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError as e:
        raise UsageError(
            f"no dataset at {path}: give a .jsonl or .csv file (see docs/evaluation.md)"
        ) from e
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"cannot read {path}: {getattr(e, 'strerror', None) or e}") from e
    suffix = path.suffix.lower()
    if suffix == ".csv":
        records = _csv_records(path, text)
    elif suffix in (".jsonl", ".ndjson", ".json"):
        records = _jsonl_records(path, text)
    else:
        raise UsageError(f"{path}: unknown dataset type {suffix or '(none)'}: use .jsonl or .csv")
    items: list[EvalItem] = []
    seen: dict[str, int] = {}
    for line, record in records:
        try:
            item = _item(record)
        except _Invalid as e:
            raise UsageError(f"{path}:{line}: {e}") from None
        if item.id in seen:
            raise UsageError(
                f"{path}:{line}: duplicate id {item.id!r} (first on line {seen[item.id]})"
            )
        seen[item.id] = line
        items.append(item)
    if not items:
        raise UsageError(f"{path}: no questions in it (see docs/evaluation.md for the format)")
    return items


def dataset_hash(items: list[EvalItem]) -> str:
    """A hash of the questions themselves: the same for the same set in JSONL or CSV."""
    canon = json.dumps([i.to_json() for i in items], sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(canon.encode()).hexdigest()


def jsonl_values(path: Path, text: str) -> list[tuple[int, Any]]:
    """(line number, parsed value) of each non-blank line; a line that is not JSON is a
    UsageError naming it. Shared by datasets and `--batch` files."""
    out = []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            out.append((n, json.loads(line)))
        except json.JSONDecodeError as e:
            raise UsageError(f"{path}:{n}: not valid JSON ({e.msg}); one object per line") from e
    return out


def _jsonl_records(path: Path, text: str) -> list[tuple[int, dict[str, Any]]]:
    out = []
    for n, obj in jsonl_values(path, text):
        if not isinstance(obj, dict):
            raise UsageError(f"{path}:{n}: expected a JSON object, got {type(obj).__name__}")
        out.append((n, obj))
    return out


def _csv_records(path: Path, text: str) -> list[tuple[int, dict[str, Any]]]:
    reader = csv.DictReader(io.StringIO(text, newline=""))
    header = reader.fieldnames or []
    missing = [f for f in ("id", "question") if f not in header]
    if missing:
        raise UsageError(
            f"{path}:1: the header needs the columns id, question (and optionally "
            f"{', '.join(FIELDS[2:])}); missing: {', '.join(missing)}"
        )
    unknown = [h for h in header if h not in FIELDS]
    if unknown:
        raise UsageError(
            f"{path}:1: unknown column(s) {', '.join(unknown)}; use {', '.join(FIELDS)}"
        )
    out = []
    start = 2
    try:
        for row in reader:
            line, start = start, reader.line_num + 1  # a quoted cell may span lines
            if None in row:
                raise UsageError(f"{path}:{line}: more cells than columns in the header")
            if not any((v or "").strip() for v in row.values()):
                continue
            try:
                out.append((line, _csv_row(row)))
            except _Invalid as e:
                raise UsageError(f"{path}:{line}: {e}") from None
    except csv.Error as e:
        raise UsageError(f"{path}:{reader.line_num}: not valid CSV ({e})") from e
    return out


def _csv_row(row: dict[str, str | None]) -> dict[str, Any]:
    """CSV cells → the JSON record: lists as JSON, or `a|b;c` (keys) and `a|b` (others)."""
    rec: dict[str, Any] = {}
    for name, raw in row.items():
        value = (raw or "").strip()
        if name in ("id", "question", "answer", "split"):
            rec[name] = value
        elif not value:
            continue
        elif name == "answerable":
            low = value.lower()
            if low not in _TRUE | _FALSE:
                raise _Invalid(f"answerable must be true or false, got {value!r}")
            rec[name] = low in _TRUE
        elif value.startswith("["):
            try:
                rec[name] = json.loads(value)
            except json.JSONDecodeError as e:
                raise _Invalid(f"the {name} cell starts with [ but is not JSON ({e.msg})") from e
        elif name == "keys":
            rec[name] = [[a.strip() for a in g.split("|")] for g in value.split(";") if g.strip()]
        else:
            rec[name] = [p.strip() for p in value.split("|") if p.strip()]
    return rec


def _item(rec: dict[str, Any]) -> EvalItem:
    qid = rec.get("id")
    if isinstance(qid, bool) or not isinstance(qid, str | int) or str(qid).strip() == "":
        raise _Invalid('missing "id" (a string or number that names the question)')
    question = rec.get("question")
    if not isinstance(question, str) or not question.strip():
        raise _Invalid(f'question {qid}: missing "question" (a non-empty string)')
    answer = rec.get("answer", "")
    if answer is None:
        answer = ""
    if not isinstance(answer, str):
        raise _Invalid(f'question {qid}: "answer" must be a string')
    answerable = rec.get("answerable", True)
    if not isinstance(answerable, bool):
        raise _Invalid(f'question {qid}: "answerable" must be true or false')
    keys = _keys(rec.get("keys", []), qid)
    evidence = _strings(rec.get("evidence", []), "evidence", qid)
    tags = _strings(rec.get("tags", []), "tags", qid)
    split = rec.get("split", "") or ""
    if not isinstance(split, str) or not re.fullmatch(r"[\w-]*", split.strip()):
        raise _Invalid(f'question {qid}: "split" must be a word such as "tune" or "heldout"')
    if not answerable and (keys or evidence):
        raise _Invalid(f'question {qid}: an unanswerable question has no "keys" or "evidence"')
    return EvalItem(
        str(qid).strip(),
        question.strip(),
        answer.strip(),
        keys,
        evidence,
        answerable,
        tags,
        split.strip(),
    )


def _keys(value: Any, qid: object) -> tuple[tuple[str, ...], ...]:
    hint = (
        f'question {qid}: "keys" must be a list of groups of alternatives, '
        'e.g. [["1963"], ["EU", "European Union"]]'
    )
    if not isinstance(value, list):
        raise _Invalid(hint)
    groups = []
    for group in value:
        alts = [group] if isinstance(group, str) else group  # "x" is short for ["x"]
        if not isinstance(alts, list) or not alts:
            raise _Invalid(hint)
        if not all(isinstance(a, str) and a.strip() for a in alts):
            raise _Invalid(hint)
        groups.append(tuple(a.strip() for a in alts))
    return tuple(groups)


def _strings(value: Any, name: str, qid: object) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise _Invalid(f'question {qid}: "{name}" must be a list of non-empty strings')
    return tuple(v.strip() if name == "tags" else v for v in value)


def dataset_dirs(index_dir: Path | str) -> list[Path]:
    """Where question sets are looked for, wherever `rag serve` starts: the index's own
    `evals/` (a user's sets, feedback exported as questions), `./evals`, and the `evals/`
    of the checkout rag runs from (the shipped sets). Existing folders, each once."""
    project = Path(__file__).resolve().parents[2] / "evals"
    out: list[Path] = []
    for d in (Path(index_dir) / "evals", Path.cwd() / "evals", project):
        if d.is_dir() and all(d.resolve() != o.resolve() for o in out):
            out.append(d)
    return out


def find_datasets(index_dir: Path | str) -> list[Path]:
    """The question sets (*.jsonl) in `dataset_dirs`, the seeds set first."""
    found = [p for d in dataset_dirs(index_dir) for p in sorted(d.glob("*.jsonl"))]
    return sorted(found, key=lambda p: p.name != "seeds_qa.jsonl")
