"""The app's parts that need no browser: rendering, upload names, the engine, the LLM check."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from rag.config import Settings
from rag.text import display_title
from rag.types import Answer, Chunk, Citation, Hit
from rag.ui import render
from rag.ui.engine import Engine, LLMChoice, check_llm, safe_name

from .conftest import settings_for


def _hit(text: str, rank: int = 1, source: str = "/docs/report.pdf", page: int | None = 3) -> Hit:
    chunk = Chunk(f"c{rank}", source, text, 0, len(text), "Report", "Findings", page, rank)
    return Hit(chunk, score=0.0328, rank=rank, dense=0.71)


def _answer() -> Answer:
    hit = _hit("Intro line.\nJapan  pledged $550 billion to the\nUnited States. Other text.")
    cit = Citation(1, hit, quote="Japan pledged $550 billion to the United States.")
    return Answer(
        "How much did Japan pledge?",
        "Japan pledged $550 billion to the United States. [1]",
        False,
        [cit],
        "extractive",
        hits=[hit],
    )


# --- rendering -------------------------------------------------------------------------


def test_highlight_marks_the_quote_across_line_breaks_and_escapes_html() -> None:
    text = "a <b>bold</b> claim.\nThe sky   is\ngreen. End."
    out, found = render.highlight(text, "The sky is green.")
    assert found
    assert "<mark>The sky   is\ngreen.</mark>" in out
    assert "&lt;b&gt;bold&lt;/b&gt;" in out  # the document's markup is shown, never run


def test_highlight_marks_each_part_of_a_joined_quote_and_reports_a_missing_one() -> None:
    text = "First fact here. Filler. Second fact here."
    out, found = render.highlight(text, "First fact here. … Second fact here.")
    assert found and out.count("<mark>") == 2
    out, found = render.highlight(text, "First fact here. … Not in the passage.")
    assert not found and out.count("<mark>") == 1


def test_answer_html_links_each_citation_to_its_passage() -> None:
    html = render.answer_html(_answer(), turn=2)
    assert '<a href="#src-2-1" class="cite"' in html
    assert "\\$550" not in html  # dollars are not markdown: left alone
    sources = render.sources_html([(2, _answer())])
    assert 'id="src-2-1"' in sources
    assert "<mark>Japan  pledged $550 billion to the\nUnited States.</mark>" in sources
    assert "report.pdf</b> · page 3" in sources and "score 0.033" in sources


def test_refusal_says_not_in_the_documents_and_lists_the_closest_passages() -> None:
    hits = [_hit("Unrelated text about tariffs.", 1), _hit("More text.", 2)]
    refused = Answer(
        "Who won the 1998 World Cup?",
        "The documents do not say.",
        True,
        [],
        "extractive",
        hits=hits,
    )
    assert render.NOT_IN_DOCUMENTS in render.answer_html(refused, 1)
    panel = render.sources_html([(1, refused)])
    assert render.NOT_IN_DOCUMENTS in panel and "Closest passages" in panel
    assert panel.count('class="src"') == 2


def test_answer_markdown_carries_the_citations_and_quotes() -> None:
    md = render.answer_markdown(_answer())
    assert "Japan pledged $550 billion to the United States. [1]" in md
    assert "[1] report.pdf, page 3 — “Japan pledged $550 billion to the United States.”" in md


def test_user_text_is_shown_as_typed() -> None:
    assert render.plain("<script>x</script> *a*") == "&lt;script&gt;x&lt;/script&gt; \\*a\\*"


def test_older_answers_fold_and_the_newest_is_open() -> None:
    panel = render.sources_html([(1, _answer()), (2, _answer())])
    assert panel.index('id="src-2-1"') < panel.index('id="src-1-1"')
    assert panel.count('<details class="turn" open>') == 1


# --- uploads ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("../../etc/passwd.md", "passwd.md"),
        ("..\\..\\win.ini.txt", "win.ini.txt"),
        (".bashrc.md", "bashrc.md"),
        ("my report (final).pdf", "my report (final).pdf"),
        ("a/b/../c\x00d;rm -rf.txt", "c_d_rm -rf.txt"),
        ("..", "document"),
        ("Résumé.docx", "Résumé.docx"),
    ],
)
def test_safe_name_keeps_files_inside_their_folder(given: str, expected: str) -> None:
    assert safe_name(given) == expected


def test_safe_name_shortens_long_names_but_keeps_the_type() -> None:
    name = safe_name("x" * 500 + ".md")
    assert len(name) <= 120 and name.endswith(".md")


def test_save_uploads_refuses_bad_types_big_files_and_symlinks(tmp_path: Path) -> None:
    docs = tmp_path / "documents"
    up = tmp_path / "up"
    up.mkdir()
    (up / "notes.md").write_text("# Notes\n\nSome text.\n")
    (up / "tool.exe").write_bytes(b"MZ\x00")
    (up / "big.txt").write_text("x" * 300_000)
    settings = Settings().with_(load={"max_file_mb": 0.1}, store={"index_dir": tmp_path / "i"})
    engine = Engine(settings, docs)
    try:
        docs.mkdir()
        outside = tmp_path / "outside.txt"
        outside.write_text("keep me")
        (docs / "link.txt").symlink_to(outside)
        (up / "link.txt").write_text("overwrite through the link")
        saved, refused = engine.save_uploads(
            [up / n for n in ("notes.md", "tool.exe", "big.txt", "link.txt")]
        )
    finally:
        engine.close()
    assert [s.name for s in saved] == ["notes.md"]
    assert (docs / "notes.md").read_text().startswith("# Notes")
    assert any("tool.exe: not a supported type" in r for r in refused)
    assert any("big.txt: too large" in r for r in refused)
    assert any("link.txt" in r for r in refused)
    assert outside.read_text() == "keep me"
    assert sorted(p.name for p in docs.iterdir()) == ["link.txt", "notes.md"]  # no temp files left


# --- the engine ------------------------------------------------------------------------


def test_engine_answers_from_several_threads_and_lists_files(
    seeds_index: Path, tmp_path: Path
) -> None:
    engine = Engine(settings_for(seeds_index), tmp_path / "documents")
    answers: list[str] = []
    errors: list[BaseException] = []

    def ask() -> None:
        try:
            for piece in engine.ask_stream(
                "How much did Japan pledge to the United States?",
                k=5,
                mode="hybrid",
                llm=LLMChoice(),
            ):
                if isinstance(piece, Answer):
                    answers.append(piece.answer)
        except BaseException as e:
            errors.append(e)

    try:
        threads = [threading.Thread(target=ask) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        files = engine.files()
    finally:
        engine.close()
    assert not errors
    assert len(answers) == 3 and all("550 billion" in a for a in answers)
    assert len(files) == 2 and all(f.status == "indexed" for f in files.values())


def test_engine_threads_share_one_embedding_model(seeds_index: Path, tmp_path: Path) -> None:
    engine = Engine(settings_for(seeds_index), tmp_path / "documents")
    try:
        seen = [engine.run(pool, lambda rag: (rag, rag.embedder)) for pool in ("ask", "write")]
    finally:
        engine.close()
    (rag_a, model_a), (rag_b, model_b) = seen
    assert rag_a is not rag_b  # each thread its own catalog connection
    assert model_a is model_b  # but one copy of the model in memory


def test_engine_reports_an_empty_question(seeds_index: Path, tmp_path: Path) -> None:
    from rag.errors import UsageError

    engine = Engine(settings_for(seeds_index), tmp_path / "documents")
    try:
        with pytest.raises(UsageError, match="empty"):
            list(engine.ask_stream("  ", k=5, mode="hybrid", llm=LLMChoice()))
    finally:
        engine.close()


def test_engine_starts_without_an_index_and_answers_after_an_upload(
    tmp_path: Path, corpus: Path
) -> None:
    from rag.errors import IndexMissing

    engine = Engine(settings_for(tmp_path / "index"), tmp_path / "documents")
    try:
        assert engine.files() == {}
        with pytest.raises(IndexMissing):
            list(engine.ask_stream("Who started Alpha?", k=3, mode="hybrid", llm=LLMChoice()))
        saved, refused = engine.save_uploads([corpus / "alpha.md"])
        assert [(s.name, s.replaced) for s in saved] == [("alpha.md", False)] and not refused
        stages: list[str] = []
        report = engine.ingest_docs(lambda stage, done, total: stages.append(stage))
        assert report.added == [str(tmp_path / "documents" / "alpha.md")]
        assert "embed" in stages
        answer = [
            p
            for p in engine.ask_stream(
                "Who started the Alpha project?", k=3, mode="hybrid", llm=LLMChoice()
            )
        ][-1]
        assert isinstance(answer, Answer) and "Maria Lopez" in answer.answer
        # Status (read on the question threads) sees what the write thread did, at once
        before = engine.status()
        assert before["documents"] == 1 and before["roots"] == [str(tmp_path / "documents")]
        engine.save_uploads([corpus / "beta.txt"])
        engine.ingest_docs(lambda *a: None)
        after = engine.status()
        assert after["documents"] == 2 and after["updated"] > before["updated"]
        engine.delete(str(tmp_path / "documents" / "beta.txt"))
        assert engine.status()["documents"] == 1
        # the same file again is not a new version; a changed one is, and is re-indexed
        assert engine.save_uploads([corpus / "alpha.md"])[0][0].replaced is False
        (corpus / "alpha.md").write_text("# Alpha\n\nAlpha now builds wind turbines.\n")
        assert engine.save_uploads([corpus / "alpha.md"])[0][0].replaced is True
        assert engine.ingest_docs(lambda *a: None).updated
        message = engine.delete(str(tmp_path / "documents" / "alpha.md"))
        assert message.startswith("Deleted alpha.md") and engine.files() == {}
        assert not (tmp_path / "documents" / "alpha.md").exists()
    finally:
        engine.close()


# --- the LLM check ---------------------------------------------------------------------


@pytest.fixture
def models_server() -> Iterator[str]:
    """A local OpenAI-compatible /v1/models endpoint."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path != "/v1/models":
                self.send_error(404)
                return
            body = json.dumps({"data": [{"id": "smollm2"}]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()


def test_check_llm_lists_the_models_of_a_live_endpoint(models_server: str) -> None:
    assert check_llm(models_server + "/") == (True, "reachable: smollm2")


def test_check_llm_says_why_an_endpoint_is_not_usable(models_server: str, free_port: int) -> None:
    ok, text = check_llm(f"http://127.0.0.1:{free_port}/v1", timeout=1)
    assert not ok and text.startswith(f"cannot reach http://127.0.0.1:{free_port}/v1")
    ok, text = check_llm(models_server.removesuffix("/v1"))
    assert not ok and "HTTP 404" in text
    assert check_llm("localhost:8080") == (False, "the URL must start with http:// or https://")


# --- the calibration plot in the Evaluation tab ----------------------------------------


def test_evaluation_tab_shows_the_calibration_plot_or_says_how_to_make_it(
    seeds_index: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import gradio as gr

    from rag.ui import evaluation
    from rag.ui.app import build_app

    def calibration(demo: gr.Blocks) -> tuple[list[gr.Image], str]:
        blocks = list(demo.blocks.values())
        (panel,) = [b for b in blocks if getattr(b, "elem_id", None) == "eval-calibration"]
        assert isinstance(panel, gr.Accordion)
        assert panel.label == "Calibration: how the refusal threshold was chosen"
        images = [b for b in blocks if isinstance(b, gr.Image)]
        notes = " ".join(str(b.value) for b in blocks if isinstance(b, gr.Markdown))
        return images, notes

    # found beside the package, whatever the working directory
    monkeypatch.chdir(tmp_path)
    expected = Path(__file__).resolve().parent.parent / "docs" / "calibration.png"
    assert expected == evaluation.CALIBRATION_PNG and expected.is_file()
    engine = Engine(settings_for(seeds_index), tmp_path / "documents")
    try:
        images, notes = calibration(build_app(engine))
        assert len(images) == 1 and images[0].elem_id == "eval-calibration-plot"
        assert Path(images[0].value["path"]).read_bytes() == expected.read_bytes()
        assert "**0.33** (`min_evidence`)" in notes and "**-9** (`min_judge`)" in notes
        assert "No plot at" not in notes

        monkeypatch.setattr(evaluation, "CALIBRATION_PNG", tmp_path / "gone.png")
        images, notes = calibration(build_app(engine))
        assert images == []
        assert f"No plot at `{tmp_path / 'gone.png'}`: make it with" in notes
        assert "python bench/calibrate.py --plot docs/calibration.png" in notes
    finally:
        engine.close()


def test_sources_are_named_by_title_with_the_file_and_the_score_explained() -> None:
    hit = _hit("Some text.", source="/docs/000_b1c465d2178b5198.txt", page=None)
    hit = Hit(replace(hit.chunk, title="The Korean Economy: Turning Crisis into Opportunity"),
              score=0.5, rank=1, dense=0.61)  # fmt: skip
    out = render.passage_html(hit, "src-1-1", "1")
    assert '<b title="/docs/000_b1c465d2178b5198.txt">The Korean Economy: Turning Crisis' in out
    assert '<span class="file"' in out and "000_b1c465d2178b5198.txt</span>" in out
    assert 'class="score" title="Score: how well the passage matches' in out
    assert render.doc_label("/d/report.pdf", "report") == "report.pdf"  # no better name
    assert render.doc_label("/d/a.md", "  Alpha\n Project ") == "Alpha Project (a.md)"


def test_a_document_without_a_title_is_named_by_its_opening_words() -> None:
    opening = "Darcy Drought-Behares, Carnegie Endowment for International Peace Korea Research "
    assert display_title("/d/003_bfe.txt", "003_bfe", opening * 3) == (
        "Darcy Drought-Behares, Carnegie Endowment for International…"
    )
    assert display_title("/d/a.txt", "Real Title", "anything") == "Real Title"
    assert display_title("/d/a.txt", "a", "\n\n  A short note\nmore") == "A short note"
    assert display_title("/d/a.txt", "a", "") == "a"  # nothing better: the file's name
    assert display_title("/d/a.txt", "a", " " * 5000 + "-" * 120 + "\nReal words") == "Real words"
    # the Sources panel uses the index's titles (files()), not the chunk's embedded one
    hit = _hit("Some text.", source="/docs/003_bfe.txt", page=None)
    hit = Hit(replace(hit.chunk, title="003_bfe"), score=0.5, rank=1)
    panel = render.sources_html(
        [(1, replace(_answer(), citations=[Citation(1, hit)]))],
        {"/docs/003_bfe.txt": "Darcy Drought-Behares, Carnegie…"},
    )
    assert '<b title="/docs/003_bfe.txt">Darcy Drought-Behares, Carnegie…</b>' in panel
    assert '<b title="/docs/003_bfe.txt">003_bfe.txt</b>' in render.sources_html(
        [(1, replace(_answer(), citations=[Citation(1, hit)]))]
    )


def test_a_markdown_passage_is_rendered_safely_with_its_quote_marked() -> None:
    text = (
        "## Funding\n\nAlpha received **2.5 million euros** in 2021.\n\n"
        "<script>alert(1)</script> ![tracker](http://example.com/t.png) [site](javascript:x)"
    )
    out, found = render.highlight_markdown(text, "Alpha received 2.5 million euros in 2021.")
    assert "<h2>Funding</h2>" in out and "<strong>2.5 million euros</strong>" in out
    assert "<script>" not in out and "&lt;script&gt;" in out  # raw HTML shown, never run
    assert "<img" not in out and "javascript:" not in out.split("href=")[-1][:20]
    # the quote did not match across the ** marks; the plain-text sentence still does
    out, found = render.highlight_markdown("Alpha received 3 euros.", "Alpha received 3 euros.")
    assert found and "<mark>Alpha received 3 euros.</mark>" in out
    hit = _hit("# Notes\n\nSome *text*.", source="/docs/notes.md", page=None)
    assert '<div class="passage md"><h1>Notes</h1>' in render.passage_html(hit, "s", "1")


def test_engine_expands_with_the_models_guess_when_asked(seeds_index: Path, tmp_path: Path) -> None:
    """The "Search also for the model's guess" box: the endpoint writes a hypothesis, the
    search reads it, the answer shows it in its small print; unticked, nothing is asked."""
    from rag.expand import PROMPT

    from .fake_llm import FakeLLM, Reply

    guess = "Japan pledged 550 billion dollars of investment in the United States."

    def reply(request: dict) -> Reply:  # type: ignore[type-arg]
        asked = request["messages"][-1]["content"]
        return Reply(guess if asked.startswith(PROMPT.split("{")[0]) else "No.")

    engine = Engine(settings_for(seeds_index), tmp_path / "documents")
    try:
        with FakeLLM(reply) as llm:
            choice = LLMChoice(url=llm.url)
            question = "What did Tokyo promise Washington?"
            for expand, asked in ((False, 0), (True, 1)):
                before = len(llm.requests)
                out = list(engine.ask_stream(question, k=5, mode="hybrid", llm=choice,
                                             expand=expand))  # fmt: skip
                answer = out[-1]
                assert isinstance(answer, Answer)
                opening = PROMPT.split("{")[0]
                wrote = [r for r in llm.requests[before:]
                         if r["messages"][-1]["content"].startswith(opening)]  # fmt: skip
                assert len(wrote) == asked
                assert (answer.hypothesis == guess) is expand
        assert f"the model's guess: “{guess}”" in render.answer_html(answer, 1)
    finally:
        engine.close()


def test_the_ingest_summary_says_what_was_left_out() -> None:
    from rag.types import IngestReport, Skipped
    from rag.ui.app import _ingest_summary

    report = IngestReport(added=["/d/library/x.html"], copies=["/d/_sources/library/x.rst.txt"],
                          skipped=[Skipped("/d/big.pdf", "too large")], chunks_added=3)  # fmt: skip
    text = _ingest_summary(report, [], [])
    assert "**Indexed 1 file**" in text and "- added: x.html" in text
    assert "- **skipped** big.pdf: too large" in text
    assert "Left out 1 `_sources/` copy of page indexed as HTML" in text
    report.copies.append("/d/_sources/y.rst.txt")
    text = _ingest_summary(report, [], [])
    assert "Left out 2 `_sources/` copies of pages indexed as HTML" in text
