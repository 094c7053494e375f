"""Conversation: follow-ups rewritten into standalone questions; the `rag chat` REPL."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from rag.answer import condense
from rag.answer.conversation import rewrite_by_rule
from rag.answer.llm import LLM
from rag.pipeline import Rag

from .conftest import CliResult, run_rag
from .fake_llm import FakeLLM, Reply

KOREA = "What did Korea pledge to invest in the United States?"


@pytest.mark.parametrize(
    ("previous", "question", "standalone"),
    [
        (KOREA, "and Japan?", "What did Japan pledge to invest in the United States?"),
        (KOREA, "What about Japan?", "What did Japan pledge to invest in the United States?"),
        ("When was the Alpha project started?", "what about its funding?",
         "What about Alpha's funding?"),
        ("What did Japan pledge?", "How much was it?", "How much was it (Japan pledge)?"),
        ("How many bikes does Beta have?", "and stations?",
         "What about stations (many bikes Beta)?"),
        ("What did Japan pledge?", "Why?", "Why (Japan pledge)?"),
        # who someone is: a full name for a full name, not a place for a person
        ("Who is Anthony Kim?", "and Victor Cha?", "Who is Victor Cha?"),
        ("Who is Anthony Kim?", "and Korea?", "What about Korea (Anthony Kim)?"),
        ("Who did Korea meet?", "and Japan?", "Who did Japan meet?"),
        ("Who won the election in Italy?", "and South Korea?",
         "Who won the election in South Korea?"),
        # a question with its own subject is left alone
        (KOREA, "Where did Draudt-Véjares get her PhD?", "Where did Draudt-Véjares get her PhD?"),
        (KOREA, "Who is Anthony Kim?", "Who is Anthony Kim?"),
        (KOREA, "What treaty anchors the alliance between the two countries?",
         "What treaty anchors the alliance between the two countries?"),
    ],
)  # fmt: skip
def test_rule_rewrites_follow_ups(previous: str, question: str, standalone: str) -> None:
    assert rewrite_by_rule(previous, question) == standalone


def test_condense_completes_a_chain_of_follow_ups() -> None:
    history = [(KOREA, "Korea pledged $350 billion [1]."), ("and Japan?", "$550 billion [1].")]
    assert condense(history, "how much was it?") == (
        "How much was it (Japan pledge invest United States)?"
    )
    assert condense([], "and Japan?") == "and Japan?"


def test_condense_uses_the_llm_rewrite() -> None:
    with FakeLLM(Reply("What did Japan pledge to invest in the U.S.?")) as fake:
        out = condense([(KOREA, "…")], "and Japan?", LLM(fake.url, max_retries=0))
        request = fake.requests[-1]
    assert out == "What did Japan pledge to invest in the U.S.?"
    assert not request.get("stream") and KOREA in request["messages"][-1]["content"]


def test_the_llm_is_not_asked_about_a_question_with_its_own_subject() -> None:
    with FakeLLM(Reply("Who is Anthony Kim of the Heritage Foundation?")) as fake:
        out = condense([(KOREA, "…")], "Who is Anthony Kim?", LLM(fake.url, max_retries=0))
    assert out == "Who is Anthony Kim?" and fake.requests == []


@pytest.mark.parametrize(
    "reply",
    [
        Reply("What did Korea pledge to invest in the United States?"),  # lost "Japan"
        Reply("What is Japan?"),  # lost the conversation
        Reply(status=500),
        Reply(""),
    ],
)
def test_a_bad_or_failed_llm_rewrite_falls_back_to_the_rule(reply: Reply) -> None:
    with FakeLLM(reply) as fake:
        out = condense([(KOREA, "…")], "and Japan?", LLM(fake.url, max_retries=0))
    assert out == "What did Japan pledge to invest in the United States?"


def test_ask_with_history_searches_for_the_standalone_question(seeds_rag: Rag) -> None:
    history = [(KOREA, "Korea pledged $350 billion.")]
    answer = seeds_rag.ask("and Japan?", history=history)
    assert answer.question == "and Japan?"
    assert answer.standalone_question == "What did Japan pledge to invest in the United States?"
    assert "550 billion" in answer.answer and not answer.refused
    assert answer.to_json()["standalone_question"] == answer.standalone_question


def test_history_may_be_chat_messages(seeds_rag: Rag) -> None:
    messages = [{"role": "user", "content": KOREA}, {"role": "assistant", "content": "$350bn"}]
    answer = seeds_rag.ask("and Japan?", history=messages)
    assert answer.standalone_question == "What did Japan pledge to invest in the United States?"


def test_a_standalone_question_is_not_marked_rewritten(seeds_rag: Rag) -> None:
    answer = seeds_rag.ask("Who is Anthony Kim?", history=[(KOREA, "…")])
    assert answer.standalone_question is None and "standalone_question" not in answer.to_json()


@pytest.mark.slow
def test_rag_chat_rewrites_follow_ups_and_resets(seeds_index: Path) -> None:
    stdin = f"{KOREA}\nand Japan?\n/reset\nand Japan?\n/quit\nnever asked\n"
    r = _chat(seeds_index, stdin)
    assert r.code == 0, r.err
    assert r.err.count("(searched for: ") == 1
    assert "(searched for: What did Japan pledge to invest in the United States?)" in r.err
    assert "(conversation forgotten)" in r.err
    assert r.out.count("Sources:") + r.out.count("Closest passages:") == 3
    answers = [p for p in r.out.split("\n\n") if p and not p.startswith(("Sources:", "Closest"))]
    assert len(answers) == 3 and "550 billion" in answers[1]  # the answer to "and Japan?"
    assert "never asked" not in r.out + r.err and "Traceback" not in r.err


@pytest.mark.slow
def test_rag_chat_ends_at_end_of_input(seeds_index: Path) -> None:
    r = _chat(seeds_index, f"{KOREA}\n")
    assert r.code == 0, r.err
    assert r.out.count("Sources:") == 1 and r.err == ""


def _chat(index: Path, stdin: str) -> CliResult:
    """`rag chat` with its standard input from a pipe (no terminal: no prompt, no readline)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAG_")}
    p = subprocess.run(
        [sys.executable, "-m", "rag", "--index", str(index), "chat"],
        input=stdin, capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    return CliResult(p.returncode, p.stdout, p.stderr)


def test_run_rag_is_the_same_command() -> None:
    assert "follow-ups" in run_rag("chat", "--help").out
