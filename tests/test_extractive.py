"""The extractive answerer on the seeds: exact answers, near-miss refusals, fact kinds."""

from __future__ import annotations

import pytest

from rag.answer import REFUSAL
from rag.answer.extractive import expected
from rag.pipeline import Rag


@pytest.mark.parametrize(
    ("question", "kind"),
    [
        ("How much did Japan pledge?", "number"),
        ("What percentage of Koreans said yes?", "percent"),
        ("What tariff rate did they settle on?", "percent"),
        ("When was the agreement signed?", "date"),
        ("What exact day in November did they meet?", "day"),
        ("What is the name of South Korea's new president?", "person"),
        ("Which U.S. president signed the treaty?", "person"),
        ("Who conducted the poll?", "name"),
        ("What position does Anthony Kim hold?", ""),
    ],
)
def test_expected_kind_of_fact(question: str, kind: str) -> None:
    assert expected(question).kind == kind


@pytest.mark.parametrize(
    ("question", "must_contain"),
    [
        ("When was the Korea-EU Framework Agreement first established?", "1963"),
        ("How much did Japan pledge to the United States?", "$550 billion"),
        ("When did the U.S. and Korea reach their tariff agreement?", "July 30"),
        ("Which university is Yukiko Fukagawa a professor at?", "Waseda University"),
        (
            "What law did Japan pass in 2024 on economic security?",
            "Economic Security Promotion Act",
        ),
        (
            "Why would following Tokyo's approach be a bad idea for Seoul, according to the "
            "Carnegie fellow?",
            "most of the profits",
        ),
    ],
)
def test_answers_quote_the_fact_with_a_citation(
    seeds_rag: Rag, question: str, must_contain: str
) -> None:
    a = seeds_rag.ask(question)
    assert not a.refused and a.mode == "extractive"
    assert must_contain in a.answer and "[1]" in a.answer
    for c in a.citations:  # every quote is verbatim from its passage
        for part in c.quote.split(" … "):
            assert part in c.hit.chunk.text


@pytest.mark.parametrize(
    "question",
    [
        # the topic is in the documents, the asked fact is not
        "What exact day in November 2024 did the EU and Korea announce their Security and "
        "Defense partnership?",
        "How many Korean companies took part in the EU-Korea Supply Chains and Industrial "
        "Policy Dialogue?",
        "What tariff rate did Washington and Seoul settle on in the July 30 deal?",
        "Which U.S. president signed the 1953 Mutual Defense Treaty with Korea?",
        "What is the name of South Korea's new president?",
        # off topic
        "What's the tallest mountain in Africa?",
    ],
)
def test_near_misses_are_refused(seeds_rag: Rag, question: str) -> None:
    a = seeds_rag.ask(question)
    assert a.refused and a.answer == REFUSAL and a.citations == []
    assert a.hits  # the closest passages are still shown
