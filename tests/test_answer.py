"""The answer stage: the registry, its place in the pipeline, and the evidence judge."""

from __future__ import annotations

import ast
import math
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from rag.answer import (
    ANSWERERS,
    REFUSAL,
    ExtractiveAnswerer,
    LLMAnswerer,
    answerer_name,
    make_answerer,
    pairs,
)
from rag.answer.llm import LLM
from rag.config import AnswerSettings
from rag.errors import UsageError
from rag.pipeline import Rag
from rag.types import Answer, Hit

from .conftest import ROOT, settings_for

JAPAN = "How much did Japan pledge to the United States?"


class FixedJudge:
    """A judge that gives each passage the next of the logits it was made with."""

    def __init__(self, *logits: float) -> None:
        self.logits_given = list(logits)
        self.asked: list[tuple[str, list[str]]] = []

    def logits(self, question: str, passages: Sequence[str]) -> list[float]:
        self.asked.append((question, list(passages)))
        return [self.logits_given[i % len(self.logits_given)] for i in range(len(passages))]


# --- the registry -------------------------------------------------------------------------


def test_the_settings_choose_the_answerer() -> None:
    embed = lambda texts: None  # noqa: E731  (never called: nothing is answered)
    assert answerer_name(AnswerSettings()) == "extractive"
    assert isinstance(make_answerer(AnswerSettings(), embed), ExtractiveAnswerer)
    endpoint = AnswerSettings(llm_url="http://127.0.0.1:9/v1")
    assert isinstance(make_answerer(endpoint, embed), LLMAnswerer)
    assert isinstance(make_answerer(AnswerSettings(llm_gguf=Path("m.gguf")), embed), LLMAnswerer)
    # a name wins over the settings; an LLM given means the LLM answerer with it
    assert isinstance(make_answerer(endpoint, embed, name="extractive"), ExtractiveAnswerer)
    llm = LLM("http://127.0.0.1:9/v1")
    made = make_answerer(AnswerSettings(), embed, llm=llm)
    assert isinstance(made, LLMAnswerer) and made.llm is llm
    assert make_answerer(AnswerSettings(), embed, name="llm", llm=llm).llm is llm
    # a name and a model that contradict each other: an error, not a silent LLM answerer
    with pytest.raises(UsageError, match="the extractive answerer uses no LLM"):
        make_answerer(AnswerSettings(), embed, name="extractive", llm=llm)
    with pytest.raises(UsageError, match="unknown answerer 'oracle': use one of extractive, llm"):
        make_answerer(AnswerSettings(), embed, name="oracle")


class EchoAnswerer:
    """A new answerer: one class and one registry line."""

    name = "echo"
    llm = None

    def __init__(self, settings: AnswerSettings, embed: object, judge: object = None) -> None:
        self.closed = False

    def stream(self, question: str, hits: Sequence[Hit]) -> Iterator[str | Answer]:
        text = f"{len(hits)} passages for: {question}"
        yield text
        yield Answer(question, text, False, [], "echo", hits=list(hits))

    def close(self) -> None:
        self.closed = True


def test_a_registered_answerer_answers_through_the_pipeline(
    seeds_rag: Rag, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(ANSWERERS, "echo", EchoAnswerer)
    answerer = seeds_rag.make_answerer(name="echo")
    pieces = list(seeds_rag.ask_stream(JAPAN, k=4, answerer=answerer))
    assert pieces[0] == f"4 passages for: {JAPAN}"
    final = pieces[-1]
    assert isinstance(final, Answer) and final.mode == "echo" and len(final.hits) == 4
    assert "retrieve" in final.timings  # the pipeline retrieved and timed it, not the answerer


def test_the_answer_stage_calls_nothing_above_it() -> None:
    """rag/answer/ imports neither the pipeline nor the store: it is given the hits."""
    for path in sorted((ROOT / "rag" / "answer").glob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                module = "." * node.level + (node.module or "")
                assert module not in ("..pipeline", "..store", "rag.pipeline", "rag.store"), (
                    f"{path.name} imports {module}"
                )
                private = [a.name for a in node.names if a.name.startswith("_")]
                assert not private, f"{path.name} imports private names {private} from {module}"


def test_history_turns_from_pairs_and_messages() -> None:
    assert pairs([("q1", "a1")]) == [("q1", "a1")]
    messages = [
        {"role": "user", "content": "q1"},
        {"role": "assistant", "content": "a1"},
        {"role": "user", "content": "q2"},
    ]
    assert pairs(messages) == [("q1", "a1"), ("q2", "")]


# --- the judge and its threshold ----------------------------------------------------------


def test_the_judge_reads_only_the_chosen_sentences_and_gates_by_threshold(
    seeds_rag: Rag,
) -> None:
    hits = seeds_rag.search(JAPAN, k=5, rerank=0)
    two_part = "How much did Japan pledge, and what did Trump say Korea would hand over?"
    hits2 = seeds_rag.search(two_part, k=5, rerank=0)
    embed = seeds_rag.embedder.embed
    plain = ExtractiveAnswerer(AnswerSettings(), embed).answer(JAPAN, hits)
    assert not plain.refused and plain.judged is None and plain.evidence is not None
    chosen = [c.quote for c in plain.citations]

    judge = FixedJudge(-1.5)
    kept = ExtractiveAnswerer(AnswerSettings(judge=True, min_judge=-2.0), embed, judge)
    a = kept.answer(JAPAN, hits)
    assert not a.refused and a.answer == plain.answer and a.judged == -1.5
    (question, read), *_ = judge.asked
    assert question == JAPAN
    # the judge read each chosen sentence, led by its passage's title/heading line
    assert len(read) == sum(q.count(" … ") + 1 for q in chosen)
    assert all(any(p.endswith(s) for p in read) for q in chosen for s in q.split(" … "))

    refused = ExtractiveAnswerer(AnswerSettings(judge=True, min_judge=-1.0), embed, judge)
    r = refused.answer(JAPAN, hits)
    assert r.refused and r.answer == REFUSAL and r.judged == -1.5
    # the best chosen sentence decides: one strong sentence is enough
    judge2 = FixedJudge(-3.0, 2.0)
    b = ExtractiveAnswerer(AnswerSettings(judge=True, min_judge=0.0), embed, judge2).answer(
        two_part, hits2
    )
    n = len(judge2.asked[0][1])
    assert n >= 2 and b.judged == 2.0 and not b.refused


def test_the_real_judge_scores_the_answer_above_a_distractor(seeds_rag: Rag) -> None:
    judge = seeds_rag.reranker
    answer = (
        "Japan pledged $550 billion to the United States, but the United States took the "
        "lead in selecting investment destinations."
    )
    distractor = "The two partners established the Korea-EU Framework Agreement in 1963."
    alone = judge.logits(JAPAN, [answer])
    both = judge.logits(JAPAN, [distractor, answer])
    assert both[1] == pytest.approx(alone[0], abs=1e-6)  # no batch effects
    assert alone[0] > 3.0 > both[0]
    assert judge.logits(JAPAN, []) == []


def test_judged_answers_over_the_seeds(seeds_index: Path) -> None:
    """With the judge on (threshold -inf) every answer records its judged score."""
    s = settings_for(seeds_index).with_(answer={"judge": True, "min_judge": -math.inf})
    with Rag(s) as rag:
        a = rag.ask(JAPAN)
        assert not a.refused and a.judged is not None and a.judged > 3.0
        assert a.to_json()["judged"] == round(a.judged, 3)
        far = rag.ask("What's the tallest mountain in Africa?")
        assert far.refused


# --- documents through the pipeline --------------------------------------------------------


def test_files_and_delete(tmp_path: Path, corpus: Path) -> None:
    with Rag(settings_for(tmp_path / "idx")) as rag:
        assert rag.files() == {}
        rag.ingest([corpus])
        files = rag.files()
        assert sorted(Path(s).name for s in files) == ["alpha.md", "beta.txt"]
        beta = next(s for s in files if s.endswith("beta.txt"))
        assert rag.delete([beta]) == files[beta].chunks > 0
        assert [Path(s).name for s in rag.files()] == ["alpha.md"]
        for mode in ("dense", "keyword", "hybrid"):
            hits = rag.search("How many bikes does Beta have?", k=3, mode=mode)  # type: ignore[arg-type]
            assert all("Beta" not in h.chunk.text for h in hits)


def test_judge_settings_from_the_environment() -> None:
    from rag.config import Settings

    assert Settings.from_env({}).answer.judge is False
    s = Settings.from_env({"RAG_JUDGE": "1", "RAG_MIN_JUDGE": "-4.5"})
    assert s.answer.judge is True and s.answer.min_judge == -4.5
    assert Settings.from_env({"RAG_JUDGE": "off"}).answer.judge is False
    assert Settings.from_env({}).answer.draft is True  # the LLM reads the quote as a draft
    assert Settings.from_env({"RAG_DRAFT": "0"}).answer.draft is False
    with pytest.raises(UsageError, match="RAG_JUDGE='maybe' is not on or off"):
        Settings.from_env({"RAG_JUDGE": "maybe"})
    for bad in ("inf", "nan", "-1", "soon"):
        with pytest.raises(
            UsageError, match=r"RAG_CHROMA_TIMEOUT=.* is not a number of at least 0"
        ):
            Settings.from_env({"RAG_CHROMA_TIMEOUT": bad})
    assert Settings.from_env({"RAG_CHROMA_TIMEOUT": "0"}).store.chroma_timeout == 0
    with pytest.raises(UsageError, match="RAG_MIN_JUDGE='low' is not a number"):
        Settings.from_env({"RAG_MIN_JUDGE": "low"})


def test_llm_answerer_lifecycle_retries_a_failed_start_and_keeps_a_given_llm(
    tmp_path: Path,
) -> None:
    embed = lambda texts: None  # noqa: E731
    missing = AnswerSettings(llm_gguf=tmp_path / "none.gguf")
    a = LLMAnswerer(missing, embed)
    assert a.llm is None and "no GGUF model at" in (a._problem or "")
    (tmp_path / "none.gguf").write_bytes(b"")  # still no server, but the start is tried again
    a.close()
    assert a._problem is None
    given = LLM("http://127.0.0.1:9/v1")
    b = LLMAnswerer(missing, embed, llm=given)
    b.close()
    assert b.llm is given  # not the caller's model to throw away
