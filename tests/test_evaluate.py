"""rag.evaluate: metric functions against hand-computed values, datasets, runs, the CLI."""

from __future__ import annotations

import json
import math
import os
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from rag.config import Settings
from rag.errors import UsageError
from rag.evaluate import (
    EvalItem,
    EvalRun,
    check_gates,
    compare,
    diff_runs,
    failures,
    list_runs,
    load_dataset,
    metric_names,
    parse_gates,
    resolve_runs,
    run_eval,
    write_report,
)
from rag.evaluate import metrics as M
from rag.evaluate.judge import parse_verdict
from rag.evaluate.runner import score
from rag.pipeline import Rag
from rag.types import Answer, Chunk, Citation, Hit

from .conftest import ROOT, SEEDS, CliResult, run_rag, settings_for, write_small_corpus

SEEDS_QA = ROOT / "evals" / "seeds_qa.jsonl"


# --- metric functions ------------------------------------------------------------------


def test_norm_and_relevance_ignore_case_and_whitespace() -> None:
    passages = ["The  Alpha project\nwas STARTED in 2019.", "Nothing here."]
    assert M.norm("  A\n b\tC ") == "a b c"
    assert M.relevance(passages, ["alpha project was started"]) == [True, False]
    assert M.found(["started in 2019", "in 2020"], passages) == [True, False]
    assert M.relevance(passages, []) == [False, False]


def test_hit_and_reciprocal_rank() -> None:
    rel = [False, True, False]
    assert M.hit_at_k(rel, 1) == 0.0
    assert M.hit_at_k(rel, 2) == 1.0
    assert M.hit_at_k([], 5) == 0.0  # nothing retrieved
    assert M.reciprocal_rank([False, False, True]) == pytest.approx(1 / 3)
    assert M.reciprocal_rank([False] * 10 + [True]) == 0.0  # rank 11 is past @10
    assert M.reciprocal_rank([]) == 0.0


def test_ndcg_hand_computed() -> None:
    # relevant at ranks 2 and 4, two relevant passages exist:
    # DCG = 1/log2(3) + 1/log2(5) = 0.630930 + 0.430677; IDCG = 1 + 0.630930
    assert M.ndcg_at_k([False, True, False, True], 2) == pytest.approx(
        1.061606 / 1.630930, abs=1e-6
    )
    assert M.ndcg_at_k([True, True], 2) == pytest.approx(1.0)
    # one found at rank 1, one evidence passage never found: ideal has 2
    assert M.ndcg_at_k([True, False], 2) == pytest.approx(1 / 1.630930, abs=1e-6)
    assert M.ndcg_at_k([False, False], 1) == 0.0
    assert M.ndcg_at_k([], 0) == 0.0


def test_evidence_recall() -> None:
    passages = ["Japan pledged $550 billion to the United States.", "Korea: $350 billion."]
    assert M.evidence_recall(passages, ["Japan pledged $550 billion", "in cash"]) == 0.5
    assert M.evidence_recall(passages, ["japan PLEDGED", "Korea: $350"]) == 1.0
    assert M.evidence_recall([], ["anything"]) == 0.0
    assert M.evidence_recall(passages, []) is None  # no evidence: undefined


def test_keys_case_insensitive_groups_of_alternatives() -> None:
    answer = "Japan pledged $550 Billion to the U.S. [1]"
    assert M.missing_keys(answer, [["550 billion"], ["Tokyo", "japan"]]) == []
    assert M.missing_keys(answer, [["550 billion"], ["1963"]]) == [["1963"]]
    assert M.missing_keys("", [["x", "y"]]) == [["x", "y"]]
    assert M.missing_keys("anything", []) == []
    assert M.strip_citations("It was 1963 [1]. And more [12].") == "It was 1963. And more."


def test_token_f1_squad_style() -> None:
    assert M.squad_normalize("The Cat, a hat!") == "cat hat"
    # pred {cat, sat}, ref {cat, sat, down}: P = 1, R = 2/3, F1 = 0.8
    assert M.token_f1("The cat sat.", "A cat sat down") == pytest.approx(0.8)
    assert M.token_f1("dog", "cat") == 0.0
    assert M.token_f1("", "") == 1.0
    assert M.token_f1("", "cat") == 0.0
    # repeated tokens count once per occurrence: pred [a1, a1, b], ref [a1, b, b]
    assert M.token_f1("x x y", "x y y") == pytest.approx(2 / 3)


def test_citation_precision_and_recall() -> None:
    cited = ["Alpha was started in 2019.", "Beta has 1,200 bikes."]
    assert M.citation_precision(cited, ["started in 2019"]) == 0.5
    assert M.citation_recall(cited, ["started in 2019", "85 stations"]) == 0.5
    assert M.citation_precision([], ["x"]) is None  # nothing cited (a refusal)
    assert M.citation_recall([], ["x"]) == 0.0  # the evidence went uncited
    assert M.citation_precision(cited, []) is None


def test_percentile_and_mean() -> None:
    assert M.percentile([40, 10, 30, 20], 50) == 25.0
    assert M.percentile([10, 20, 30, 40], 95) == pytest.approx(38.5)  # 30 + 0.85 * 10
    assert M.percentile([7], 95) == 7
    assert M.percentile([], 50) is None
    assert M.mean([1, None, 0, True]) == pytest.approx(2 / 3)
    assert M.mean([None, None]) is None


# --- per-question scores and run metrics -------------------------------------------------


def _hit(text: str, rank: int, source: str = "/docs/a.txt") -> Hit:
    chunk = Chunk(id=f"c{rank}-{abs(hash(text)) % 1000}", source=source, text=text,
                  start_char=0, end_char=len(text))  # fmt: skip
    return Hit(chunk=chunk, score=1.0 / rank, rank=rank)


def _answer(text: str, cited: list[Hit] | None = None, refused: bool = False) -> Answer:
    cits = [Citation(n=i, hit=h, quote=h.chunk.text) for i, h in enumerate(cited or [], start=1)]
    return Answer("q", text, refused, cits, "extractive", hits=list(cited or []),
                  timings={"retrieve": 0.01, "answer": 0.02})  # fmt: skip


ITEM = EvalItem(
    "q1",
    "Who started Alpha, and when?",
    "Maria Lopez started it in 2019.",
    keys=(("Maria Lopez",), ("2019",)),
    evidence=("started in 2019 by Maria Lopez",),
)
NOPE = EvalItem("q2", "What is the capital of Peru?", answerable=False)
GOOD = "Alpha was started in 2019 by Maria Lopez in Lisbon."
ranked = [_hit("Beta is a bike scheme.", 1), _hit(GOOD, 2), _hit("Funding came in 2021.", 3)]


def test_score_answered_question() -> None:
    q = score(ITEM, ranked, k=5, answer=_answer(GOOD + " [1]", [ranked[1], ranked[0]]))
    assert (q["hit"], q["rr"], q["evidence_recall"]) == (1.0, 0.5, 1.0)
    assert q["ndcg"] == pytest.approx(1 / math.log2(3))
    assert q["key_match"] is True and q["passed"] is True
    assert q["citation_precision"] == 0.5 and q["citation_recall"] == 1.0
    assert q["token_f1"] == pytest.approx(M.token_f1(GOOD, ITEM.answer))
    assert [r["relevant"] for r in q["retrieved"]] == [False, True, False]
    assert q["context_chars"] == sum(len(h.chunk.text) for h in ranked)
    assert q["reasons"] == []


def test_score_failures_say_why() -> None:
    q = score(ITEM, ranked[:1], k=1, answer=_answer("Beta is a bike scheme. [1]", ranked[:1]))
    assert q["passed"] is False and q["hit"] == 0.0
    assert "evidence not in the top 1 passages" in q["reasons"]
    assert "missing key facts: Maria Lopez; 2019" in q["reasons"]
    assert q["citation_precision"] == 0.0
    refused = score(ITEM, ranked, k=5, answer=_answer("The documents do not say.", refused=True))
    assert refused["passed"] is False and "refused an answerable question" in refused["reasons"]
    assert refused["token_f1"] == 0.0 and refused["citation_precision"] is None
    answered = score(NOPE, ranked, k=5, answer=_answer("Lima. [1]", ranked[:1]))
    assert answered["passed"] is False and answered["hit"] is None
    assert answered["reasons"] == ["answered an unanswerable question"]


def test_summarize_edge_cases() -> None:
    timing = {"retrieve": 10.0, "answer": 30.0, "total": 40.0}
    all_refused = [
        score(ITEM, ranked, 5, _answer("no", refused=True), timing),
        score(NOPE, ranked, 5, _answer("no", refused=True), timing),
    ]
    m = M.summarize(all_refused, 5)
    assert m["refusal_acc"] == 1.0 and m["false_refusal_rate"] == 1.0
    assert m["key_acc"] == 0.0 and m["token_f1"] == 0.0
    assert m["citation_precision"] is None and m["citation_recall"] == 0.0
    assert m["hit@5"] == 1.0 and m["latency_p50_ms"] == 40.0

    no_hits = M.summarize([score(ITEM, [], 5, _answer("no", refused=True), timing)], 5)
    assert no_hits["hit@5"] == 0.0 and no_hits["mrr@10"] == 0.0 and no_hits["ndcg@10"] == 0.0
    assert no_hits["evidence_recall"] == 0.0 and no_hits["refusal_acc"] is None

    only_unanswerable = M.summarize([score(NOPE, ranked, 5, _answer("Lima."), timing)], 5)
    for name in ("hit@5", "mrr@10", "ndcg@10", "evidence_recall", "key_acc", "token_f1",
                 "citation_precision", "citation_recall", "false_refusal_rate"):  # fmt: skip
        assert only_unanswerable[name] is None, name
    assert only_unanswerable["refusal_acc"] == 0.0

    retrieval_only = M.summarize([score(ITEM, ranked, 5, None, {"retrieve": 5.0, "total": 5.0})], 5)
    assert retrieval_only["hit@5"] == 1.0 and retrieval_only["key_acc"] is None
    assert retrieval_only["refusal_acc"] is None and retrieval_only["latency_answer_p50_ms"] is None
    assert list(M.summarize([], 5)) == metric_names(5)
    assert all(v is None for v in M.summarize([], 5).values())


def test_generated_counts_the_answers_a_model_wrote() -> None:
    from dataclasses import replace

    quoted = _answer("Maria Lopez started Alpha in 2019. [1]", ranked[:1])
    written = replace(quoted, mode="llm")
    gate_refusal = replace(_answer("The documents do not say.", refused=True), mode="llm")
    questions = [score(ITEM, ranked, 5, written), score(ITEM, ranked, 5, quoted),
                 score(ITEM, ranked, 5, written), score(NOPE, ranked, 5, gate_refusal)]  # fmt: skip
    assert M.summarize(questions, 5)["generated"] == 2 / 3  # of the answerable ones
    # the model's refusal of an answerable question is not an answer it wrote
    assert M.summarize([score(ITEM, ranked, 5, gate_refusal)], 5)["generated"] == 0.0
    # no model answered: n/a, so that a gate on it fails instead of passing on quotes
    assert M.summarize([score(ITEM, ranked, 5, quoted)], 5)["generated"] is None
    assert parse_gates(["generated=0.6"], [], metric_names(5)) == [("generated", "min", 0.6)]


def test_gates() -> None:
    known = metric_names(5)
    gates = parse_gates(["hit@5=0.9", "key_acc=0.5"], ["false_refusal_rate=0.2"], known)
    assert gates == [("hit@5", "min", 0.9), ("key_acc", "min", 0.5),
                     ("false_refusal_rate", "max", 0.2)]  # fmt: skip
    metrics = {"hit@5": 0.95, "key_acc": 0.4, "false_refusal_rate": 0.25}
    assert check_gates(metrics, gates) == ["key_acc 0.400 < 0.5", "false_refusal_rate 0.250 > 0.2"]
    assert check_gates({"hit@5": None}, gates[:1]) == ["hit@5 is n/a (nothing to measure it on)"]
    assert check_gates({"hit@5": 0.9}, gates[:1]) == []  # the bar itself passes
    with pytest.raises(UsageError, match="use --max"):
        parse_gates(["false_refusal_rate=0.1"], [], known)
    with pytest.raises(UsageError, match="use --min"):
        parse_gates([], ["hit@5=0.1"], known)
    with pytest.raises(UsageError, match="unknown metric"):
        parse_gates(["hit@10=0.5"], [], known)
    with pytest.raises(UsageError, match="METRIC=VALUE"):
        parse_gates(["hit@5"], [], known)


# --- datasets ----------------------------------------------------------------------------


def _write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def test_load_jsonl(tmp_path: Path) -> None:
    p = _write(tmp_path, "qa.jsonl", "\n".join([
        json.dumps({"id": 1, "question": "Q?", "keys": ["a", ["b", "c"]], "evidence": ["e"],
                    "tags": ["t"], "extra": "ignored"}),
        "",
        json.dumps({"id": "x", "question": "Nope?", "answerable": False}),
    ]))  # fmt: skip
    a, b = load_dataset(p)
    assert a == EvalItem("1", "Q?", "", (("a",), ("b", "c")), ("e",), True, ("t",))
    assert b.answerable is False and b.keys == () and b.evidence == ()


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (['{"id": 1, "question": "a"}', "{not json"], ":2: not valid JSON"),
        (['{"id": 1}'], ':1: question 1: missing "question"'),
        (['{"question": "q"}'], ':1: missing "id"'),
        (['{"id": 1, "question": "q", "keys": "1963"}'], ':1: question 1: "keys" must be a list'),
        (['{"id": 1, "question": "q", "keys": [[1963]]}'], ':1: question 1: "keys"'),
        (['{"id": 1, "question": "q", "evidence": "quote"}'], ':1: question 1: "evidence"'),
        (['{"id": 1, "question": "q", "answerable": "no"}'], '"answerable" must be true or false'),
        (['{"id": 1, "question": "q", "answerable": false, "keys": [["x"]]}'], "unanswerable"),
        (['{"id": 1, "question": "a"}', '{"id": 1, "question": "b"}'], ":2: duplicate id '1'"),
        (["[1, 2]"], ":1: expected a JSON object"),
        (["", "  "], "no questions in it"),
    ],
)
def test_load_jsonl_errors(tmp_path: Path, lines: list[str], message: str) -> None:
    p = _write(tmp_path, "bad.jsonl", "\n".join(lines) + "\n")
    with pytest.raises(UsageError) as e:
        load_dataset(p)
    assert message in str(e.value)
    assert str(e.value).startswith(str(p)) or "no dataset" in str(e.value)
    assert "\n" not in str(e.value)


def test_load_csv(tmp_path: Path) -> None:
    p = _write(tmp_path, "qa.csv", (
        "id,question,answer,keys,evidence,answerable,tags\n"
        'c1,"Who, and when?",Maria in 2019,Maria|María;2019,started in 2019|by Maria,yes,a|b\n'
        'c2,"A question\nover two lines?",,"[[""x""], [""y"", ""z""]]",,,\n'
        "c3,Capital of Peru?,,,,false,\n"
    ))  # fmt: skip
    a, b, c = load_dataset(p)
    assert a.keys == (("Maria", "María"), ("2019",)) and a.evidence == (
        "started in 2019",
        "by Maria",
    )
    assert a.question == "Who, and when?" and a.tags == ("a", "b") and a.answerable
    assert b.keys == (("x",), ("y", "z")) and b.question == "A question\nover two lines?"
    assert c.answerable is False


def test_load_csv_errors(tmp_path: Path) -> None:
    bad = _write(
        tmp_path, "a.csv", 'id,question,answerable\nc1,Q?,yes\n"c2","two\nlines",yes\nc3,Q?,maybe\n'
    )
    with pytest.raises(UsageError, match=r"a\.csv:5: .*answerable must be true or false"):
        load_dataset(bad)
    with pytest.raises(UsageError, match=r"b\.csv:1: the header needs the columns id, question"):
        load_dataset(_write(tmp_path, "b.csv", "id,text\n1,x\n"))
    with pytest.raises(UsageError, match=r"c\.csv:1: unknown column\(s\) note"):
        load_dataset(_write(tmp_path, "c.csv", "id,question,note\n1,x,y\n"))
    with pytest.raises(UsageError, match=r"d\.csv:2: .*keys cell starts with \[ but is not JSON"):
        load_dataset(_write(tmp_path, "d.csv", "id,question,keys\n1,x,[oops\n"))
    with pytest.raises(UsageError, match=r"use \.jsonl or \.csv"):
        load_dataset(_write(tmp_path, "e.txt", "x"))
    with pytest.raises(UsageError, match="no dataset at"):
        load_dataset(tmp_path / "missing.jsonl")


def test_seeds_dataset_is_valid_and_quotes_are_exact() -> None:
    items = load_dataset(SEEDS_QA)
    assert len(items) == 56
    texts = [p.read_text(encoding="utf-8") for p in SEEDS.iterdir() if p.is_file()]
    for item in items:
        assert item.answerable == bool(item.evidence), item.id
        for quote in item.evidence:
            assert any(quote in t for t in texts), f"{item.id}: {quote!r} is in no seeds file"


# --- runs with a scripted pipeline ---------------------------------------------------------


class ScriptedRag:
    """The few parts of Rag that run_eval uses, answering from a fixed passage list."""

    def __init__(self, passages: list[str], interrupt_at: int | None = None) -> None:
        self.settings = Settings()
        self.index = SimpleNamespace(manifest={"chunk": {"size": 256, "overlap": 32}})
        self.embedder = SimpleNamespace(name="scripted")
        self.hits = [_hit(p, i) for i, p in enumerate(passages, start=1)]
        self.asked = 0
        self.interrupt_at = interrupt_at

    def search(self, question: str, k: int = 5, mode: str | None = None) -> list[Hit]:
        return self.hits[:k]

    def ask(self, question: str, k: int | None = None, mode: str | None = None) -> Answer:
        self.asked += 1
        if self.asked == self.interrupt_at:
            raise KeyboardInterrupt
        if "Peru" in question:
            return _answer("The documents do not say.", refused=True)
        return _answer(f"{self.hits[1].chunk.text} [1]", [self.hits[1]])


ITEMS = [ITEM, NOPE, EvalItem("q3", "Who funded Alpha?", "Horizon", (("Horizon",),), ("Horizon",))]


def test_run_eval_saves_run_and_metrics(tmp_path: Path) -> None:
    seen: list[tuple[int, int]] = []
    run = run_eval(ScriptedRag(["Beta.", GOOD, "Funding."]), ITEMS, k=2, runs_dir=tmp_path,
                   progress=lambda d, t: seen.append((d, t)))  # fmt: skip
    assert seen == [(1, 3), (2, 3), (3, 3)]
    assert run.status == "complete" and run.path == tmp_path / f"{run.id}.json"
    m = run.metrics
    assert m["hit@2"] == 0.5 and m["mrr@10"] == 0.25 and m["evidence_recall"] == 0.5
    assert m["key_acc"] == 0.5 and m["refusal_acc"] == 1.0 and m["false_refusal_rate"] == 0.0
    assert m["citation_precision"] == 0.5 and m["citation_recall"] == 0.5
    assert [q["id"] for q in failures(run)] == ["q3"]
    saved = json.loads(run.path.read_text())
    assert saved["metrics"] == run.to_json()["metrics"] and saved["status"] == "complete"
    assert saved["dataset"]["questions"] == 3 and len(saved["dataset"]["sha256"]) == 64
    assert "api_key" not in saved["settings"]["answer"]
    assert list_runs(tmp_path) == [run.path]


def test_interrupted_run_keeps_what_it_finished(tmp_path: Path) -> None:
    with pytest.raises(KeyboardInterrupt):
        run_eval(ScriptedRag(["Beta.", GOOD], interrupt_at=3), ITEMS, k=2, runs_dir=tmp_path)
    (path,) = list_runs(tmp_path)
    saved = json.loads(path.read_text())
    assert saved["status"] == "partial"
    assert [q["id"] for q in saved["questions"]] == ["q1", "q2"]
    assert saved["counts"]["planned"] == 3 and saved["metrics"]["hit@2"] == 1.0


def test_run_eval_without_saving_and_bad_mode(tmp_path: Path) -> None:
    run = run_eval(ScriptedRag(["Beta.", GOOD]), ITEMS[:1], save=False)
    assert run.path is None and run.metrics["hit@5"] == 1.0
    with pytest.raises(UsageError, match="unknown mode"):
        run_eval(ScriptedRag([]), ITEMS, mode="bm25")
    with pytest.raises(UsageError, match="unknown baseline"):
        compare(ScriptedRag([]), ITEMS, ["dense", "bm25"])  # type: ignore[arg-type]


def _saved_run(
    runs_dir: Path, run_id: str, passed: dict[str, bool], hit: float, **extra: float
) -> Path:
    qs = [{"id": qid, "question": f"question {qid}?", "answerable": True, "passed": ok,
           "hit": 1.0 if ok else 0.0, "rr": 1.0 if ok else 0.0, "evidence": ["e"], "reasons": [],
           "retrieved": [{"rank": 1, "relevant": ok}], "refused": not ok, "token_f1": 0.5}
          for qid, ok in passed.items()]  # fmt: skip
    run = EvalRun(id=run_id, mode="hybrid", k=5, questions=qs, status="complete",
                  metrics={"hit@5": hit, "false_refusal_rate": 1 - hit, "key_acc": None,
                           **extra},
                  path=runs_dir / f"{run_id}.json", dataset={"sha256": "same"})  # fmt: skip
    run.save()
    assert run.path is not None
    return run.path


def test_diff_runs(tmp_path: Path) -> None:
    a = _saved_run(tmp_path, "20250101-000000-hybrid", {"q1": True, "q2": False, "q3": True}, 0.6)
    b = _saved_run(tmp_path, "20250102-000000-hybrid", {"q1": False, "q2": True, "q4": True}, 0.8)
    d = diff_runs(a, b)
    assert d["metrics"]["hit@5"]["delta"] == pytest.approx(0.2)
    assert d["metrics"]["hit@5"]["change"] == "better"
    assert d["metrics"]["false_refusal_rate"]["change"] == "better"  # went down
    assert d["metrics"]["key_acc"]["change"] is None
    assert [e["id"] for e in d["better"]] == ["q2"] and [e["id"] for e in d["worse"]] == ["q1"]
    assert "now passes" in d["better"][0]["changes"] and "now refuses" in d["worse"][0]["changes"]
    assert d["only_in_a"] == ["q3"] and d["only_in_b"] == ["q4"] and not d["dataset_changed"]
    assert resolve_runs([], tmp_path) == (a, b) == resolve_runs(["last"], tmp_path)
    assert resolve_runs(["20250101-000000-hybrid", str(b)], tmp_path) == (a, b)
    assert resolve_runs([a.name], tmp_path) == (a, b)
    with pytest.raises(UsageError, match="no run 'nope'"):
        resolve_runs(["nope", "last"], tmp_path)
    with pytest.raises(UsageError, match="needs two saved runs"):
        resolve_runs(["last"], tmp_path / "empty")


def test_diff_calls_a_tiny_latency_move_no_change(tmp_path: Path) -> None:
    runs = {"q1": True}
    a = _saved_run(tmp_path, "20250101-000000-hybrid", runs, 0.6, latency_p50_ms=8.0)
    b = _saved_run(tmp_path, "20250102-000000-hybrid", runs, 0.6, latency_p50_ms=8.3)
    c = _saved_run(tmp_path, "20250103-000000-hybrid", runs, 0.6, latency_p50_ms=20.0)
    assert diff_runs(a, b)["metrics"]["latency_p50_ms"]["change"] == "same"  # prints as +0
    assert diff_runs(a, c)["metrics"]["latency_p50_ms"]["change"] == "worse"
    assert diff_runs(c, a)["metrics"]["latency_p50_ms"]["change"] == "better"


def test_write_report_is_self_contained(tmp_path: Path) -> None:
    items = [*ITEMS, EvalItem("q4", "Is <b>bold</b> & safe?", evidence=("Beta",), keys=(("x",),))]
    run = run_eval(ScriptedRag(["Beta.", GOOD]), items, k=2, save=False)
    comp = {"hybrid": run.metrics, "dense": {**run.metrics, "key_acc": None}}
    write_report(run, tmp_path / "r.html", comp)
    page = (tmp_path / "r.html").read_text()
    assert "hit@2" in page and "llamaindex" not in page and "Failures (2)" in page
    assert "Is &lt;b&gt;bold&lt;/b&gt; &amp; safe?" in page and "<b>bold</b>" not in page
    assert "http" not in page and "<script" not in page and "<link" not in page
    write_report(run, tmp_path / "r.md", comp)
    md = (tmp_path / "r.md").read_text()
    assert "| hit@2 | 0.667 |" in md and "| metric | hybrid | dense |" in md
    assert "## Failures (2)" in md and "### q3: Who funded Alpha?" in md
    assert "Is &lt;b&gt;bold&lt;/b&gt; & safe?" in md
    with pytest.raises(UsageError, match=r"html or \.md"):
        write_report(run, tmp_path / "r.pdf")


# --- the LLM judge, against a real local HTTP server ---------------------------------------


def test_parse_verdict() -> None:
    assert parse_verdict('{"faithful": true, "correct": false}') == {
        "faithful": True,
        "correct": False,
    }
    assert parse_verdict('Sure! ```json\n{"faithful": false, "correct": true}\n```') == {
        "faithful": False, "correct": True}  # fmt: skip
    assert parse_verdict("yes, both") is None
    assert parse_verdict('{"faithful": "yes", "correct": true}') is None


@pytest.fixture
def judge_server() -> Any:
    replies = iter(['{"faithful": true, "correct": true}', "I think it is fine."])

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            message = {"role": "assistant", "content": next(replies)}
            choice = {"index": 0, "finish_reason": "stop", "message": message}
            body = json.dumps({"id": "x", "object": "chat.completion", "created": 0,
                               "model": "m", "choices": [choice]})  # fmt: skip
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body.encode())

        def log_message(self, *args: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/v1"
    server.shutdown()


def test_judge_metrics_count_parse_failures(judge_server: str) -> None:
    rag = ScriptedRag(["Beta.", GOOD])
    rag.settings = Settings().with_(answer={"llm_url": judge_server, "llm_model": "m"})
    run = run_eval(rag, ITEMS, k=2, save=False, judge=True)  # q2 is refused: not judged
    assert run.metrics["judge_faithfulness"] == 1.0 and run.metrics["judge_correctness"] == 1.0
    assert run.metrics["judge_parse_failures"] == 1.0
    assert run.questions[2]["judge"]["error"].startswith("unparsable reply")
    with pytest.raises(UsageError, match="RAG_LLM_URL"):
        run_eval(ScriptedRag([]), ITEMS, save=False, judge=True)


# --- the real pipeline and the CLI ---------------------------------------------------------

TINY_QA = [
    {"id": "t1", "question": "Who started the Alpha project?", "answer": "Maria Lopez",
     "keys": [["Maria Lopez"]], "evidence": ["started in 2019 by Maria Lopez in Lisbon"]},
    {"id": "t2", "question": "How many bikes does the Ghent bicycle scheme have?",
     "answer": "1,200 bikes", "keys": [["1,200"]],
     "evidence": ["It has 1,200 bikes at 85 stations."]},
    {"id": "t3", "question": "What is the capital of Peru?", "answer": "", "keys": [],
     "evidence": [], "answerable": False},
]  # fmt: skip


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """A two-document index and three questions about it."""
    root = tmp_path_factory.mktemp("tiny")
    docs = write_small_corpus(root / "docs")
    index = root / "index"
    rag = Rag(settings_for(index))
    rag.ingest([docs])
    dataset = root / "qa.jsonl"
    dataset.write_text("".join(json.dumps(r) + "\n" for r in TINY_QA))
    return SimpleNamespace(index=index, dataset=dataset, rag=rag)


def test_api_on_a_real_index(tiny: SimpleNamespace, tmp_path: Path) -> None:
    items = load_dataset(tiny.dataset)
    run = run_eval(tiny.rag, items, k=3, runs_dir=tmp_path / "runs", dataset_path=tiny.dataset)
    assert run.metrics["hit@3"] == 1.0 and run.metrics["evidence_recall"] == 1.0
    assert run.questions[0]["retrieved"][0]["source"].endswith("alpha.md")
    assert 0 < run.metrics["latency_p50_ms"] < 60_000
    assert run.path is not None and run.path.is_file()
    both = compare(tiny.rag, items, ["keyword", "dense"], k=3)
    assert both["keyword"]["hit@3"] == 1.0 and both["dense"]["hit@3"] == 1.0
    assert both["keyword"]["key_acc"] is None  # retrieval only


def test_generated_is_zero_when_the_chosen_model_never_answers(
    tiny: SimpleNamespace, free_port: int
) -> None:
    """`rag eval --llm-url` with the endpoint down: every answer is the quote it fell back
    to, and `generated` says 0, not n/a (a quoting run says n/a)."""
    items = [i for i in load_dataset(tiny.dataset) if i.answerable]  # no refusal by the gate
    down = f"http://127.0.0.1:{free_port}/v1"
    with Rag(settings_for(tiny.index, answer={"llm_url": down, "max_retries": 0})) as rag:
        run = run_eval(rag, items, k=3, save=False)
    assert run.metrics["generated"] == 0.0
    answered = [q for q in run.questions if q["answerable"]]
    assert answered and all(q["answer_mode"] == "extractive" for q in answered)
    assert run_eval(tiny.rag, items, k=3, save=False).metrics["generated"] is None


@pytest.fixture
def rag_main(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Any:
    """The `rag` entry point in this process (no interpreter start-up): args → CliResult."""
    from rag.cli import main

    for name in [n for n in os.environ if n.startswith("RAG_")]:
        monkeypatch.delenv(name)

    def run(*args: str) -> CliResult:
        code = main(list(args))
        out, err = capsys.readouterr()
        return CliResult(code, out, err)

    return run


def test_cli_eval_end_to_end(tiny: SimpleNamespace, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    ok = run_rag("eval", str(tiny.dataset), "-k", "3", "--runs-dir", str(runs), "--json",
                 "--min", "hit@3=1", "--max", "false_refusal_rate=1",
                 "--report", str(tmp_path / "r.md"), index=tiny.index)  # fmt: skip
    assert ok.code == 0, ok.err
    out = json.loads(ok.out)
    assert out["metrics"]["hit@3"] == 1.0 and out["metrics"]["mrr@10"] >= 0.5
    assert set(metric_names(3)) <= set(out["metrics"])
    assert [q["id"] for q in out["questions"]] == ["t1", "t2", "t3"]
    assert out["questions"][2]["hit"] is None and (tmp_path / "r.md").is_file()
    assert out["run"]["status"] == "complete" and Path(out["run"]["path"]).parent == runs


def test_cli_gate_fails_with_exit_1(tiny: SimpleNamespace, tmp_path: Path, rag_main: Any) -> None:
    runs = tmp_path / "runs"
    bad = rag_main("--index", str(tiny.index), "eval", str(tiny.dataset), "-k", "3",
                   "--runs-dir", str(runs), "--min", "hit@3=0.5",
                   "--max", "latency_p50_ms=0.001")  # fmt: skip
    assert bad.code == 1
    assert bad.err.strip() == bad.err.strip().splitlines()[-1]
    assert "below the bar: latency_p50_ms" in bad.err and "hit@3" not in bad.err
    assert "hit@3" in bad.out and "Saved" in bad.out  # the summary comes before the verdict
    assert len(list_runs(runs)) == 1


def test_cli_diff(tmp_path: Path, rag_main: Any) -> None:
    a = _saved_run(tmp_path, "20250101-000000-hybrid", {"q1": True, "q2": False}, 0.5)
    b = _saved_run(tmp_path, "20250102-000000-hybrid", {"q1": True, "q2": True}, 1.0)
    d = rag_main("eval", "--diff", "last", "--runs-dir", str(tmp_path), "--json")
    assert d.code == 0, d.err
    out = json.loads(d.out)
    assert out["a"]["path"] == str(a) and out["metrics"]["hit@5"]["change"] == "better"
    text = rag_main("eval", "--diff", str(a), "20250102-000000-hybrid", "--runs-dir", str(tmp_path))
    assert text.code == 0, text.err
    assert "B: 20250102-000000-hybrid" in text.out and "Better (1):" in text.out
    assert "[q2] question q2?" in text.out and "now passes" in text.out
    assert rag_main("eval", "--diff", "a", "b", "c", "--runs-dir", str(tmp_path)).code == 2
    assert b.exists()


def test_cli_errors_are_one_line(tmp_path: Path, rag_main: Any) -> None:
    none = tmp_path / "none"
    missing = rag_main("--index", str(none), "eval", "--limit", "1", "--runs-dir", str(tmp_path))
    assert missing.code == 1
    assert missing.err.strip().splitlines() == [missing.err.strip()]
    assert f"rag --index {none} ingest PATH" in missing.err
    bad = _write(tmp_path, "bad.jsonl", '{"id": 1, "question": "q"}\n{"id": 2}\n')
    r = rag_main("--index", str(none), "eval", str(bad))
    assert r.code == 2 and f"{bad}:2:" in r.err and not list_runs(tmp_path)
    r = rag_main("--index", str(none), "eval", "--min", "recall=0.5")
    assert r.code == 2 and "unknown metric" in r.err
    r = rag_main("--index", str(none), "eval", "--compare", "dense,bm25")
    assert r.code == 2 and "--compare" in r.err
    r = rag_main("--index", str(none), "eval", "--report", "out.pdf")
    assert r.code == 2 and "html or .md" in r.err


@pytest.mark.slow
def test_cli_compare_with_llamaindex(seeds_index: Path, tmp_path: Path) -> None:
    r = run_rag("eval", "--compare", "dense,keyword,llamaindex", "--limit", "2", "--json",
                "--runs-dir", str(tmp_path), index=seeds_index)  # fmt: skip
    assert r.code == 0, r.err
    out = json.loads(r.out)
    comp = out["compare"]
    assert list(comp) == ["dense", "keyword", "llamaindex"]
    for name in comp:
        assert comp[name]["hit@5"] is not None and 0 <= comp[name]["hit@5"] <= 1
    assert comp["dense"]["key_acc"] is None and comp["keyword"]["token_f1"] is None
    assert comp["llamaindex"]["key_acc"] is not None  # answered by the extractive answerer
    assert "LLM is explicitly disabled" not in r.out


def _q(split: str, answerable: bool, refused: bool, key: bool | None) -> dict[str, Any]:
    return {"split": split, "answerable": answerable, "refused": refused, "key_match": key,
            "hit": 1.0, "rr": 1.0, "ndcg": 1.0, "evidence_recall": 1.0,
            "timings_ms": {}}  # fmt: skip


def test_metrics_per_split_and_their_gates(tmp_path: Path) -> None:
    questions = [
        _q("tune", True, False, True),
        _q("tune", True, False, False),
        _q("heldout", True, False, True),
        _q("heldout", False, True, None),
        _q("heldout", True, True, False),
    ]
    m = M.summarize(questions, 5)
    assert m["key_acc"] == pytest.approx(2 / 4)
    assert m["tune:key_acc"] == pytest.approx(1 / 2)
    assert m["heldout:key_acc"] == pytest.approx(1 / 2)
    assert m["heldout:refusal_acc"] == 1.0 and m["tune:refusal_acc"] is None
    assert m["heldout:false_refusal_rate"] == pytest.approx(1 / 2)
    # one split (or none) adds nothing
    assert not any(":" in k for k in M.summarize(questions[:2], 5))
    known = M.metric_names(5)
    gates = M.parse_gates(["heldout:key_acc=0.6"], ["heldout:false_refusal_rate=0.4"], known)
    assert M.check_gates(m, gates) == [
        "heldout:key_acc 0.500 < 0.6",
        "heldout:false_refusal_rate 0.500 > 0.4",
    ]
    assert M.check_gates(m, M.parse_gates(["other:key_acc=0.1"], [], known)) == [
        "other:key_acc is n/a (nothing to measure it on)"
    ]
    with pytest.raises(UsageError, match=r"unknown metric.*SPLIT:METRIC"):
        M.parse_gates(["heldout:bogus=1"], [], known)
    with pytest.raises(UsageError, match=r"lower is better.*use --max"):
        M.parse_gates(["heldout:false_refusal_rate=0.1"], [], known)
    # a dataset's split is read, checked and kept
    path = tmp_path / "d.jsonl"
    path.write_text('{"id": "a", "question": "q?", "split": "heldout"}\n')
    assert load_dataset(path)[0].split == "heldout"
    path.write_text('{"id": "a", "question": "q?", "split": "held out!"}\n')
    with pytest.raises(UsageError, match='"split" must be a word'):
        load_dataset(path)


def test_datasets_are_found_wherever_the_app_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rag.evaluate import find_datasets

    index = tmp_path / "idx"
    (index / "evals").mkdir(parents=True)
    (index / "evals" / "mine.jsonl").write_text('{"id": "m1", "question": "Q?"}\n')
    monkeypatch.chdir(tmp_path)  # no evals/ here
    names = [p.name for p in find_datasets(index)]
    assert names[0] == "seeds_qa.jsonl"  # the checkout's shipped sets, the main one first
    assert {"heldout_qa.jsonl", "pydocs_qa.jsonl", "mine.jsonl"} <= set(names)
    assert len(names) == len(set(names))


def test_a_set_written_for_other_documents_is_detected(seeds_rag: Rag) -> None:
    from rag.evaluate import evidence_in_index

    pydocs = load_dataset(ROOT / "evals" / "pydocs_qa.jsonl")
    assert evidence_in_index(seeds_rag, pydocs) == (0, 5)  # its quotes are not in the seeds
    found, tried = evidence_in_index(seeds_rag, load_dataset(ROOT / "evals" / "seeds_qa.jsonl"))
    assert tried == 5 and found >= 4
