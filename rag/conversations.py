"""Saved conversations and answer feedback, kept in the index folder.

`index/conversations/<id>.json`: one conversation, its turns with the answers as they were
shown (text, citations, passages), so that it can be listed, reopened and deleted.
`index/feedback.jsonl`: one line per thumbs up or down, with an optional note; `export`
turns them into eval questions (`index/evals/feedback.jsonl`, which the Evaluation tab and
`rag eval` read like any dataset): a user's "this was wrong" becomes a row of their own set.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import UsageError
from .types import Answer, Chunk, Citation, Hit

_ID = re.compile(r"^[0-9a-f]{12}$")


# --- answers to and from JSON (enough to show them again) ------------------------------


def _hit_json(h: Hit) -> dict[str, Any]:
    return h.to_json()


def _hit_from(d: dict[str, Any]) -> Hit:
    chunk = Chunk(d["chunk_id"], d["source"], d["text"], d["start_char"], d["end_char"],
                  d.get("title", ""), d.get("heading", ""), d.get("page"), 0)  # fmt: skip
    return Hit(chunk, d["score"], d["rank"], dense=d.get("dense"), keyword=d.get("keyword"),
               fused=d.get("fused"), rerank=d.get("rerank"),
               also_in=tuple(d.get("also_in", ())))  # fmt: skip


def answer_to_json(a: Answer) -> dict[str, Any]:
    return {
        "question": a.question,
        "answer": a.answer,
        "refused": a.refused,
        "mode": a.mode,
        "warnings": list(a.warnings),
        "standalone_question": a.standalone_question,
        "searched": a.searched,
        "hypothesis": a.hypothesis,
        "citations": [
            {"n": c.n, "quote": c.quote, "supported": c.supported, "hit": _hit_json(c.hit)}
            for c in a.citations
        ],
        "hits": [_hit_json(h) for h in a.hits[:5]],
    }


def answer_from_json(d: dict[str, Any]) -> Answer:
    return Answer(
        d["question"],
        d["answer"],
        bool(d["refused"]),
        [
            Citation(c["n"], _hit_from(c["hit"]), c.get("quote", ""), c.get("supported", True))
            for c in d.get("citations", [])
        ],
        d.get("mode", "extractive"),
        hits=[_hit_from(h) for h in d.get("hits", [])],
        warnings=list(d.get("warnings", [])),
        standalone_question=d.get("standalone_question"),
        searched=d.get("searched"),
        hypothesis=d.get("hypothesis"),
    )


# --- conversations -----------------------------------------------------------------------


@dataclass
class Conversation:
    id: str
    title: str
    created: float
    updated: float
    answers: list[Answer] = field(default_factory=list)

    def history(self) -> list[dict[str, str]]:
        """The turns as chat messages, for condensing a follow-up."""
        out = []
        for a in self.answers:
            out += [{"role": "user", "content": a.question},
                    {"role": "assistant", "content": a.answer}]  # fmt: skip
        return out


class Conversations:
    """The conversations saved in one index folder."""

    def __init__(self, index_dir: Path | str) -> None:
        self.dir = Path(index_dir) / "conversations"

    def new_id(self) -> str:
        return uuid.uuid4().hex[:12]

    def _path(self, cid: str) -> Path:
        if not _ID.match(cid):
            raise UsageError(f"no conversation {cid!r}: pick one from the list")
        return self.dir / f"{cid}.json"

    def save(self, cid: str, answers: list[Answer]) -> Conversation:
        """Write the conversation `cid` (created on first save) atomically."""
        path = self._path(cid)
        now = time.time()
        created = now
        if path.exists():
            with contextlib.suppress(OSError, ValueError, KeyError):
                created = json.loads(path.read_text())["created"]
        title = " ".join(answers[0].question.split())[:80] if answers else "(empty)"
        data = {"id": cid, "title": title, "created": created, "updated": now,
                "answers": [answer_to_json(a) for a in answers]}  # fmt: skip
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, ensure_ascii=False))
        os.replace(tmp, path)
        return Conversation(cid, title, created, now, list(answers))

    def load(self, cid: str) -> Conversation:
        path = self._path(cid)
        try:
            d = json.loads(path.read_text())
        except FileNotFoundError:
            raise UsageError(f"no conversation {cid!r}: it was deleted") from None
        except (OSError, ValueError) as e:
            raise UsageError(f"conversation {cid} is unreadable ({e}); delete it") from e
        return Conversation(d["id"], d["title"], d["created"], d["updated"],
                            [answer_from_json(a) for a in d.get("answers", [])])  # fmt: skip

    def list(self) -> list[tuple[str, str, float]]:
        """(id, title, updated) of every saved conversation, newest first."""
        out = []
        for p in self.dir.glob("*.json") if self.dir.is_dir() else []:
            try:
                d = json.loads(p.read_text())
                out.append((d["id"], d["title"], float(d["updated"])))
            except (OSError, ValueError, KeyError):
                continue  # a damaged file is not listed; it can still be deleted by hand
        return sorted(out, key=lambda t: -t[2])

    def delete(self, cid: str) -> None:
        self._path(cid).unlink(missing_ok=True)


# --- feedback ------------------------------------------------------------------------------


def feedback_path(index_dir: Path | str) -> Path:
    return Path(index_dir) / "feedback.jsonl"


def add_feedback(index_dir: Path | str, answer: Answer, good: bool, note: str = "",
                 conversation: str | None = None, right: str = "") -> dict[str, Any]:  # fmt: skip
    """Append one thumbs up/down, with an optional note (what was wrong) and the right
    answer when the user knows it."""
    row = {
        "time": time.time(),
        "rating": "up" if good else "down",
        "note": note.strip(),
        "right_answer": right.strip(),
        "conversation": conversation,
        "question": answer.standalone_question or answer.question,
        "answer": answer.answer,
        "refused": answer.refused,
        "hypothesis": answer.hypothesis,  # what the search also read (--expand), if anything
        "citations": [
            {"n": c.n, "source": c.hit.chunk.source, "quote": c.quote} for c in answer.citations
        ],
    }
    path = feedback_path(index_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as f:
        f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return row


def read_feedback(index_dir: Path | str) -> list[dict[str, Any]]:
    path = feedback_path(index_dir)
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:
            continue  # a line cut by a crash
    return rows


_MARK = re.compile(r"\s*\[\d+\]")


def feedback_questions(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Eval questions from feedback, the latest rating of each question winning.

    Thumbs down: the right answer the user gave is the reference; a note that says the
    documents do not say it ("not in the documents", "no answer") makes it an unanswerable
    question; the note itself stays in feedback.jsonl. Thumbs up: the given answer becomes
    the reference, a check that it stays right."""
    latest: dict[str, dict[str, Any]] = {}
    for r in rows:
        latest[" ".join(r["question"].split()).casefold()] = r
    out = []
    for r in latest.values():
        q = r["question"]
        qid = "fb-" + hashlib.sha256(q.encode()).hexdigest()[:8]
        note = r.get("note", "")
        item: dict[str, Any] = {"id": qid, "question": q, "tags": ["feedback", r["rating"]]}
        if r["rating"] == "up":
            item["answer"] = _MARK.sub("", r["answer"]).strip()
            item["answerable"] = not r.get("refused", False)
            item["evidence"] = [c["quote"] for c in r.get("citations", []) if c.get("quote")]
        elif re.search(r"\b(not in the documents|documents do not say|no answer|"
                       r"unanswerable)\b", note, re.I):  # fmt: skip
            item["answerable"] = False
        elif r.get("right_answer"):
            item["answer"] = r["right_answer"]
        out.append(item)
    return out


def export_feedback(index_dir: Path | str, out: Path | None = None) -> tuple[Path, int]:
    """Write the feedback as an eval dataset (default: index/evals/feedback.jsonl)."""
    rows = read_feedback(index_dir)
    if not rows:
        raise UsageError("no feedback yet: rate answers with 👍/👎 in the app first")
    items = feedback_questions(rows)
    path = out or Path(index_dir) / "evals" / "feedback.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(i, ensure_ascii=False) + "\n" for i in items))
    return path, len(items)
