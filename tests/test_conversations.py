"""Saved conversations and feedback: stored in the index folder, reopened as they were
shown, and feedback exported as eval questions that `rag eval` runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rag.conversations import (
    Conversations,
    add_feedback,
    answer_from_json,
    answer_to_json,
    export_feedback,
    feedback_questions,
    read_feedback,
)
from rag.errors import UsageError
from rag.evaluate import load_dataset
from rag.pipeline import Rag
from rag.ui import render

from .conftest import run_rag


@pytest.fixture(scope="module")
def answers(seeds_rag: Rag) -> list:
    essays = [s for s in seeds_rag.files() if Path(s).name.startswith("000_")]
    return [
        seeds_rag.ask("How much did Japan pledge to the United States?"),
        seeds_rag.ask("What was Korea's unemployment rate in 2023?"),  # refused
        seeds_rag.ask("What did Korea pledge?", sources=essays),  # one document searched
    ]


def test_an_answer_survives_the_round_trip_as_it_was_shown(answers: list) -> None:
    for a in answers:
        back = answer_from_json(json.loads(json.dumps(answer_to_json(a))))
        assert (back.answer, back.refused, back.mode) == (a.answer, a.refused, a.mode)
        assert back.searched == a.searched
        assert [c.hit.chunk.text for c in back.citations] == [c.hit.chunk.text for c in a.citations]
        # the Sources panel renders the same passages, quotes marked, for the reopened turn
        assert render.sources_html([(1, back)]) == render.sources_html([(1, a)])
    assert [a.searched is None for a in answers] == [True, True, False]
    assert "Searched only in: 000_" in render.sources_html([(1, answers[2])])
    assert "Searched only in: 000_" in render.answer_html(answers[2], 1)  # the chat says it


def test_conversations_are_saved_listed_reopened_and_deleted(tmp_path: Path, answers: list) -> None:
    store = Conversations(tmp_path / "idx")
    assert store.list() == []
    first = store.new_id()
    store.save(first, answers[:1])
    second = store.new_id()
    store.save(second, answers)
    listed = store.list()
    assert [cid for cid, _, _ in listed] == [second, first]  # newest first
    assert listed[0][1] == "How much did Japan pledge to the United States?"
    conv = store.load(second)
    assert [a.answer for a in conv.answers] == [a.answer for a in answers]
    assert conv.history()[0] == {"role": "user", "content": answers[0].question}
    assert (tmp_path / "idx" / "conversations" / f"{second}.json").is_file()
    store.delete(first)
    assert [cid for cid, _, _ in store.list()] == [second]
    with pytest.raises(UsageError, match="deleted"):
        store.load(first)
    with pytest.raises(UsageError):
        store.load("../../etc/passwd")  # ids only, never paths


def test_feedback_becomes_eval_questions(tmp_path: Path, answers: list, seeds_index: Path) -> None:
    index = tmp_path / "idx"
    right, refused = answers[:2]
    add_feedback(index, right, good=True)
    add_feedback(index, refused, good=False, note="Not in the documents: they give no rate.")
    add_feedback(index, right, good=False, note="It should say over how many years.",
                 right="550 billion dollars, over several years")  # fmt: skip
    rows = read_feedback(index)
    assert [r["rating"] for r in rows] == ["up", "down", "down"]
    items = {i["question"]: i for i in feedback_questions(rows)}
    # the latest rating of a question wins; its note is the reference answer
    japan = items["How much did Japan pledge to the United States?"]
    assert japan["tags"] == ["feedback", "down"]
    assert japan["answer"] == "550 billion dollars, over several years"
    assert items["What was Korea's unemployment rate in 2023?"]["answerable"] is False

    path, n = export_feedback(index)
    assert path == index / "evals" / "feedback.jsonl" and n == 2
    assert len(load_dataset(path)) == 2  # a valid dataset
    # and `rag eval` runs it against the seeds index, like any question set
    r = run_rag("eval", str(path), "--no-save", "--json", index=seeds_index)
    assert r.code == 0, r.err
    out = json.loads(r.out)
    assert len(out["questions"]) == 2 and out["metrics"]["token_f1"] is not None


def test_feedback_cli(tmp_path: Path, answers: list) -> None:
    index = tmp_path / "idx"
    r = run_rag("feedback", "export", index=index)
    assert r.code == 2 and "no feedback yet" in r.err
    add_feedback(index, answers[0], good=True)
    r = run_rag("feedback", "list", index=index)
    assert r.code == 0 and "👍 How much did Japan pledge" in r.out
    r = run_rag("feedback", "export", "--out", str(tmp_path / "mine.jsonl"), index=index)
    assert r.code == 0 and "Wrote 1 question" in r.out
    item = load_dataset(tmp_path / "mine.jsonl")[0]
    assert "550 billion" in item.answer and item.answerable and item.evidence


def test_the_models_guess_survives_the_round_trip_and_shows_as_typed(answers: list) -> None:
    from dataclasses import replace

    guess = "Use `__init__` with *args: see dict_items."
    a = replace(answers[0], hypothesis=guess)
    back = answer_from_json(json.loads(json.dumps(answer_to_json(a))))
    assert back.hypothesis == guess
    shown = render.answer_html(back, 1)
    assert r"\`\_\_init\_\_\` with \*args" in shown and "dict\\_items" in shown
