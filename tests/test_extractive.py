"""The extractive answerer on the seeds: exact answers, near-miss refusals, fact kinds."""

from __future__ import annotations

import pytest

from rag.answer import REFUSAL
from rag.answer.extractive import (
    expected,
    question_parts,
    question_subject,
    without_subjects,
)
from rag.pipeline import Rag


@pytest.mark.parametrize(
    ("question", "kind"),
    [
        ("How much did Japan pledge?", "number"),
        ("What percentage of Koreans said yes?", "percent"),
        ("What tariff rate did they settle on?", "percent"),
        ("When was the agreement signed?", "date"),
        ("When, according to the adviser, did they meet?", "date"),
        ("When are default argument values evaluated?", ""),  # a condition, not a date
        ("Which exception does run() raise when check is true?", ""),
        ("In which year did Python 1.0 come out?", "date"),
        ("What exact day in November did they meet?", "day"),
        ("What is the name of South Korea's new president?", "person"),
        ("Which U.S. president signed the treaty?", "person"),
        ("Who conducted the poll?", "name"),
        ("In which city was the first dialogue held?", "name"),
        ("What position does Anthony Kim hold?", ""),
        ("What did President Trump call for in his address?", ""),  # a title, not the ask
    ],
)
def test_expected_kind_of_fact(question: str, kind: str) -> None:
    assert expected(question).kind == kind


def test_a_year_or_a_list_marker_is_not_an_amount() -> None:
    how_much = expected("How much did Japan pledge to the United States?")
    # a sentence the walkthrough got as the answer, from a document that says no amount
    assert not how_much.satisfied(
        "Following the trilateral meeting at Camp David in 2023, the United States, Japan, and "
        "Korea reached several agreements: 1) cross-border exchange of resources, 2) good "
        "access to necessary equipment",
        "How much did Japan pledge to the United States?",
    )
    assert how_much.satisfied("In 2025 Japan pledged $550 billion.", "How much did Japan pledge?")
    assert how_much.satisfied("It was 40 tonnes (2) in 1999.", "How many tonnes?")
    assert how_much.satisfied("tee(iterable, n=2) returns n iterators.", "How many?")


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


@pytest.mark.parametrize(
    ("question", "parts"),
    [
        (
            "What did Trump say Korea would hand over, and what does she want instead?",
            ["What did Trump say Korea would hand over", "what does she want instead"],
        ),
        ("Who is she; why does it matter?", ["Who is she", "why does it matter"]),
        ("According to Kim, how has South Korea changed since the aid?", []),  # one question
        ("What did Korea pledge to invest in the United States?", []),
        ("Is the ban, which started in 2020, still in force?", []),  # a relative clause
        ("What did Kim, who heads the institute, say about tariffs?", []),
    ],
)
def test_two_part_questions_are_split(question: str, parts: list[str]) -> None:
    assert question_parts(question) == parts


@pytest.mark.parametrize(
    ("question", "predicate"),
    [
        (
            "Which multilateral forums do the EU essay and the Carnegie interview each suggest "
            "Korea lean on?",
            "Which multilateral forums do each suggest Korea lean on?",
        ),
        ("Which forums do Kim and Lee each suggest?", "Which forums do each suggest?"),
        ("What did Korea pledge to invest?", ""),  # one subject
        ("What do both Kim and Nicolas recommend?", ""),  # nothing left to match on
        ("What are the benefits and drawbacks of each approach?", ""),  # nothing named
    ],
)
def test_what_is_asked_of_two_subjects(question: str, predicate: str) -> None:
    assert without_subjects(question) == predicate


def test_question_shape_rules_stay_fast_on_huge_input() -> None:
    import time

    for text in ("a" * 20_000, " " * 20_000 + "x", "and each " * 3_000, ", and what " * 3_000):
        t = time.perf_counter()
        question_parts(text), without_subjects(text)
        assert time.perf_counter() - t < 1.0


def test_an_answer_never_exceeds_max_sentences(seeds_rag: Rag) -> None:
    from rag.answer.extractive import extract

    q = (
        "Which came first, the Digital Partnership or the Green Partnership, and what did "
        "Trump claim, and what does Draudt-Véjares propose, and why is the Japan model bad?"
    )
    hits = seeds_rag.search(q, k=5, rerank=0)  # what `ask` reads
    for most in (1, 2, 3):
        ex = extract(q, hits, seeds_rag.embedder.embed, max_sentences=most)
        assert 1 <= len(ex.chosen) <= most


@pytest.mark.parametrize(
    ("question", "facts"),
    [
        # a comparison: the evidence for both sides (a sentence that adds the question's
        # missing words is added)
        (
            "Which came first, the EU-Korea Digital Partnership or the Green Partnership?",
            ["2022", "2023"],
        ),
        # two subjects: the second document's answer, not the sentence that names its author
        (
            "Which multilateral forums do the EU essay and the Carnegie interview each suggest "
            "Korea lean on?",
            ["WTO", "CPTPP"],
        ),
        # a two-part question: the first part's fact, though the second part's words dominate
        (
            "What did Trump say Korea would hand over, and what does Draudt-Véjares want the "
            "talks to focus on instead?",
            ["$350 billion"],
        ),
    ],
)
def test_answers_cover_each_part_of_the_question(
    seeds_rag: Rag, question: str, facts: list[str]
) -> None:
    a = seeds_rag.ask(question)
    assert not a.refused
    for fact in facts:
        assert fact in a.answer


@pytest.mark.parametrize(
    ("question", "subject"),
    [
        ("How much did Korea pledge to the United States?", "Korea"),
        ("Was Japan's pledge larger than Korea's?", "Japan"),
        ("What did President Trump call for?", "President Trump"),
        ("When did the U.S. and Korea reach their agreement?", ""),  # not a name
        ("What did the essay say?", ""),
    ],
)
def test_the_asked_subject(question: str, subject: str) -> None:
    assert question_subject(question) == subject


def test_another_subjects_figure_is_not_the_answer(seeds_rag: Rag) -> None:
    """ "Japan pledged $550 billion…" answers for Japan, not for Korea: quoting it to "How
    much did Korea pledge?" would be a confident wrong answer."""
    for q in (
        "How much did Korea pledge to the United States?",
        "What did Korea pledge to invest in the United States?",
    ):
        assert "550 billion" not in seeds_rag.ask(q).answer
    assert "550 billion" in seeds_rag.ask("How much did Japan pledge to the U.S.?").answer
    # a name the documents never use cannot be checked, so it does not block the answer
    assert "550 billion" in seeds_rag.ask("How much money did Tokyo promise Washington?").answer


# --- what an LLM is shown of each passage -----------------------------------------------


def test_excerpts_keep_the_chosen_sentences_first_and_mark_gaps() -> None:
    from rag.answer.extractive import Candidate, Expect, Extract, excerpts
    from rag.types import Chunk, Hit

    s = [f"Sentence {w} has exactly six words." for w in ("one", "two", "three", "four")]
    long = " ".join(s)
    hit = Hit(Chunk(id="a", source="a.txt", text=long, start_char=0, end_char=len(long)), 1.0, 1)
    short = Hit(Chunk(id="b", source="b.txt", text="Short passage.", start_char=0,
                      end_char=14), 0.5, 2)  # fmt: skip
    starts = [long.index(x) for x in s]
    cands = [Candidate(hit, st, st + len(x), x, set(), score=sc)
             for st, x, sc in zip(starts, s, (0.9, 0.1, 0.8, 0.2), strict=True)]  # fmt: skip
    # the answer chose sentence four (low score): it is kept before the best-scored others
    ex = Extract([cands[3]], 0.5, Expect(""), cands)
    one, two = excerpts([hit, short], ex, words=12)
    assert one == "Sentence one has exactly six words. … Sentence four has exactly six words."
    assert two == "Short passage."  # short enough: whole
    # with no choice, the best-scored sentences, in reading order; a cut end is marked
    ex = Extract([], 0.0, Expect(""), cands)
    assert excerpts([hit], ex, words=12) == [
        "Sentence one has exactly six words. … Sentence three has exactly six words. …"
    ]
    # every chosen sentence is shown, past the budget too: the LLM checks them as its draft
    ex = Extract([cands[1], cands[3]], 0.5, Expect(""), cands)
    assert excerpts([hit], ex, words=8) == [
        "… Sentence two has exactly six words. … Sentence four has exactly six words."
    ]
