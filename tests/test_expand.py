"""The hypothetical answer searched for beside the question (rag/expand.py, --expand)."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from rag.errors import LLMError
from rag.expand import MAX_CHARS, PROMPT, expanded, hypothesis
from rag.pipeline import Rag
from rag.retrieve import Retriever
from rag.types import Chunk

from .conftest import llm_requirements, run_rag, settings_for, write_small_corpus

# no word of it is in the corpus: "bicycle-sharing scheme in Ghent … 1,200 bikes"
QUESTION = "Where can two-wheelers be rented?"
HYPOTHESIS = "A bicycle-sharing scheme rents bikes at stations; riders pay per day."


class Scripted:
    """An LLM that replies with a fixed text (or fails), and records what it was asked."""

    def __init__(self, reply: str | Exception) -> None:
        self.reply = reply
        self.asked: list[str] = []

    def complete(self, messages: list[dict[str, str]], max_tokens: int = 256) -> str:
        self.asked.append(messages[-1]["content"])
        if isinstance(self.reply, Exception):
            raise self.reply
        return self.reply

    def stream(self, messages: list[dict[str, str]], max_tokens: int = 512) -> Iterator[str]:
        yield self.complete(messages, max_tokens)


def test_hypothesis_is_the_reply_on_one_line_and_capped() -> None:
    llm = Scripted("  A Counter\n\n counts   hashable objects. " + "x" * 2000)
    text = hypothesis(llm, "how often does each item show up?")
    assert text.startswith("A Counter counts hashable objects. x")
    assert len(text) == MAX_CHARS
    assert "how often does each item show up?" in llm.asked[0]


def test_a_failing_llm_gives_no_hypothesis_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        assert hypothesis(Scripted(LLMError("the LLM at x did not answer")), QUESTION) == ""
    assert "searching for the question alone" in caplog.text
    llm = Scripted("never asked")
    assert hypothesis(llm, "  ") == "" and llm.asked == []


def test_expanded_is_the_question_then_the_hypothesis() -> None:
    assert expanded("q?", "") == "q?" and expanded("q?", None) == "q?"
    assert expanded("q?", "h.") == "q?\nh."


@pytest.fixture(scope="module")
def small_rag(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rag]:
    root = tmp_path_factory.mktemp("expand")
    docs = write_small_corpus(root / "docs")
    rag = Rag(settings_for(root / "index"))
    rag.ingest([docs])
    yield rag
    rag.close()


def test_the_first_stage_searches_for_the_hypothesis(small_rag: Rag) -> None:
    assert small_rag.search(QUESTION, k=3, mode="keyword") == []  # no shared word
    hits = small_rag.search(QUESTION, k=3, mode="keyword", hypothesis=HYPOTHESIS)
    assert hits and hits[0].chunk.source.endswith("beta.txt")

    def beta(hits: list) -> float:  # type: ignore[type-arg]
        return next(h.dense for h in hits if h.chunk.source.endswith("beta.txt"))

    plain = beta(small_rag.search(QUESTION, k=5, mode="dense"))
    dense = small_rag.search(QUESTION, k=5, mode="dense", hypothesis=HYPOTHESIS)
    assert dense[0].chunk.source.endswith("beta.txt")
    assert beta(dense) > plain + 0.1  # the embedder read the hypothesis too


class Recording:
    name = "recording"

    def __init__(self) -> None:
        self.questions: list[str] = []

    def score(self, question: str, chunks: Sequence[Chunk]) -> list[float]:
        self.questions.append(question)
        return [float(len(c.text)) for c in chunks]


def test_the_reranker_reads_the_question_alone(small_rag: Rag) -> None:
    """bench/hyde.py: a cross-encoder shown the hypothesis too ranked worse on every set."""
    judge = Recording()
    r = Retriever(small_rag.index, small_rag.embedder, small_rag.settings.retrieve, lambda: judge)
    hits = r.search(QUESTION, k=2, rerank=2, hypothesis=HYPOTHESIS)
    assert hits and judge.questions == [QUESTION]
    assert all(h.rerank is not None for h in hits)


def test_expand_on_asks_the_answerers_llm_and_the_answer_shows_it(tmp_path: Path) -> None:
    docs = write_small_corpus(tmp_path / "docs")
    settings = settings_for(tmp_path / "index", retrieve={"expand": True})
    with Rag(settings) as rag:
        rag.ingest([docs])
        llm = Scripted(HYPOTHESIS)
        answer = rag.ask(QUESTION, llm=llm, mode="keyword")
        assert answer.hypothesis == HYPOTHESIS and "expand" in answer.timings
        assert answer.hits and answer.hits[0].chunk.source.endswith("beta.txt")
        assert QUESTION in llm.asked[0]  # the first call wrote the hypothesis
        assert answer.to_json()["hypothesis"] == HYPOTHESIS
        again = rag.ask(QUESTION, llm=llm, mode="keyword")  # `rag eval` asks twice
        written = [a for a in llm.asked if a.startswith(PROMPT.split("{")[0])]
        assert again.hypothesis == HYPOTHESIS and len(written) == 1  # the first one, reused
        # without an LLM: the question alone, said once in the log
        assert rag.hypothesis(QUESTION) == ""
        # a model that fails to write the guess: the answer says it searched the question alone
        failing = Scripted(LLMError("the LLM at x did not answer"))
        alone = rag.ask("Who runs the bikes?", llm=failing, mode="keyword")
        assert alone.hypothesis is None
        assert "the model wrote no guess to search for" in " ".join(alone.warnings)
        assert "wrote no guess" not in " ".join(answer.warnings)


def test_cli_expand_without_an_llm_says_how_to_choose_one(tmp_path: Path) -> None:
    r = run_rag("--expand", "search", "anything", index=tmp_path / "index")
    assert r.code == 2
    assert "--expand has an LLM write a hypothetical answer: choose one with --llm local" in r.err


def test_cli_expand_with_the_llm_down_searches_the_question(
    seeds_index: Path, free_port: int
) -> None:
    url = f"http://127.0.0.1:{free_port}/v1"
    r = run_rag("--expand", "search", "--llm-url", url, "--json", "Japan pledge", "-k", "2",
                index=seeds_index)  # fmt: skip
    assert r.code == 0, r.err
    out = json.loads(r.out)
    assert len(out["hits"]) == 2 and "hypothesis" not in out
    assert "searching for the question alone" in r.err


@pytest.fixture(scope="module")
def llama() -> Iterator[str]:
    from rag.llamacpp import LlamaServer

    binary, gguf = llm_requirements()
    with LlamaServer(gguf, binary=binary) as server:
        yield server.url


@pytest.mark.slow
@pytest.mark.llm
def test_real_model_writes_the_hypothesis_through_the_cli(seeds_index: Path, llama: str) -> None:
    r = run_rag("--expand", "search", "--llm-url", llama, "--json", "-k", "3",
                "How much money did Tokyo promise Washington?", index=seeds_index)  # fmt: skip
    assert r.code == 0, r.err
    out = json.loads(r.out)
    assert len(out["hypothesis"]) > 20 and len(out["hits"]) == 3
    assert any("550 billion" in h["text"] for h in out["hits"])


def test_no_index_is_said_before_the_llm_is_asked(tmp_path: Path) -> None:
    from rag.errors import IndexMissing

    settings = settings_for(tmp_path / "none", retrieve={"expand": True})
    llm = Scripted(HYPOTHESIS)
    with Rag(settings) as rag, pytest.raises(IndexMissing):
        rag.ask(QUESTION, llm=llm)
    assert llm.asked == []  # not seconds of writing a hypothesis for nothing


def test_an_llm_that_cannot_start_is_named_not_asked_for(
    small_rag: Rag, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """`--expand --llm-gguf broken.gguf`: the warning says what failed, not "needs an LLM"."""
    from dataclasses import replace

    gguf = str(tmp_path / "missing.gguf")
    broken = small_rag.make_answerer(replace(small_rag.settings.answer, llm_gguf=gguf))
    try:
        small_rag._warned_expand = False
        with caplog.at_level(logging.WARNING):
            assert small_rag.hypothesis(QUESTION, broken) == ""
        assert broken.problem and "missing.gguf" in caplog.text
        assert "needs an LLM" not in caplog.text
    finally:
        broken.close()


def test_eval_with_expand_scores_the_search_the_answer_read(tmp_path: Path) -> None:
    """`rag --expand eval`: hit@k is measured on the search the hypothesis went into."""
    from rag.evaluate.dataset import EvalItem
    from rag.evaluate.runner import run_eval

    docs = write_small_corpus(tmp_path / "docs")
    item = EvalItem("q1", QUESTION, keys=(("Ghent",),), evidence=("bicycle-sharing scheme",))
    for expand, found in ((False, 0.0), (True, 1.0)):
        settings = settings_for(tmp_path / "index", retrieve={"expand": expand})
        with Rag(settings) as rag:
            rag.ingest([docs])
            llm = Scripted(HYPOTHESIS)
            rag._answerer = rag.make_answerer(llm=llm)
            run = run_eval(rag, [item], k=3, mode="keyword", save=False)
            assert run.metrics["hit@3"] == found, expand
            assert len([a for a in llm.asked if QUESTION in a and "passage" in a]) == expand


class Served(Scripted):
    """A Scripted LLM at an endpoint that serves a named model."""

    def __init__(self, reply: str, model: str) -> None:
        super().__init__(reply)
        self.url, self.named = "http://127.0.0.1:9/v1", model


def test_the_memo_keeps_one_guess_per_model_of_an_endpoint(small_rag: Rag) -> None:
    from rag.answer import make_answerer
    from rag.answer.llm import LLM

    # what the memo keys on: the model as named, without asking the endpoint
    assert LLM("http://127.0.0.1:9/v1", "m").named == "m"
    assert LLM("http://127.0.0.1:9/v1").named is None

    a, b = Served("guess of a", "a"), Served("guess of b", "b")
    answer = small_rag.settings.answer
    for llm, want in ((a, "guess of a"), (b, "guess of b"), (a, "guess of a")):
        answerer = make_answerer(answer, small_rag.embedder.embed, llm=llm)
        assert small_rag.hypothesis("Which model?", answerer) == want
    assert len(a.asked) == 1 and len(b.asked) == 1  # each written once, then remembered


class Unnamed(Scripted):
    """An endpoint whose model is not named in the settings: like LLM, it learns the name
    from the endpoint on its first call."""

    def __init__(self, reply: str) -> None:
        super().__init__(reply)
        self.url, self.named = "http://127.0.0.1:9/v1", None

    def complete(self, messages: list[dict[str, str]], max_tokens: int = 256) -> str:
        self.named = "qwen"
        return super().complete(messages, max_tokens)


def test_the_first_guess_is_remembered_when_the_model_is_named_by_its_first_call(
    small_rag: Rag,
) -> None:
    """`rag --expand eval --llm local` wrote question 1's guess twice (a second sampled
    guess, scored against the answer's search) when the memo key was taken before the call."""
    from rag.answer import make_answerer

    llm = Unnamed("the one guess")
    answerer = make_answerer(small_rag.settings.answer, small_rag.embedder.embed, llm=llm)
    assert small_rag.hypothesis("First question?", answerer) == "the one guess"
    assert small_rag.hypothesis("First question?", answerer) == "the one guess"
    assert len(llm.asked) == 1


def test_a_failed_guess_is_tried_again(small_rag: Rag) -> None:
    from rag.answer import make_answerer

    llm = Scripted(LLMError("the LLM at x did not answer"))
    answerer = make_answerer(small_rag.settings.answer, small_rag.embedder.embed, llm=llm)
    assert small_rag.hypothesis("Tried twice?", answerer) == ""
    llm.reply = "now it answers"
    assert small_rag.hypothesis("Tried twice?", answerer) == "now it answers"


def test_eval_times_the_guess_apart_from_the_answer(tmp_path: Path) -> None:
    import time

    from rag.evaluate.dataset import EvalItem
    from rag.evaluate.runner import run_eval

    class Slow(Scripted):
        def complete(self, messages: list[dict[str, str]], max_tokens: int = 256) -> str:
            if messages[-1]["content"].startswith(PROMPT.split("{")[0]):
                time.sleep(0.5)
            return super().complete(messages, max_tokens)

    docs = write_small_corpus(tmp_path / "docs")
    with Rag(settings_for(tmp_path / "index", retrieve={"expand": True})) as rag:
        rag.ingest([docs])
        rag._answerer = rag.make_answerer(llm=Slow(HYPOTHESIS))
        item = EvalItem("q1", QUESTION, keys=(("Ghent",),), evidence=("bicycle-sharing",))
        q = run_eval(rag, [item], k=3, mode="keyword", save=False).questions[0]
    ms = q["timings_ms"]
    assert ms["expand"] >= 500  # the first question's guess is written when it is asked
    assert ms["answer"] < ms["total"] - 500


def test_rag_expand_in_the_environment_without_an_llm_only_warns(seeds_index: Path) -> None:
    r = run_rag("search", "--json", "Japan pledge", "-k", "2", index=seeds_index,
                env={"RAG_EXPAND": "1"})  # fmt: skip
    assert r.code == 0, r.err
    assert len(json.loads(r.out)["hits"]) == 2
    assert "needs an LLM" in r.err and "searching for the question alone" in r.err
