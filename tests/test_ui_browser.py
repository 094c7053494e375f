"""The app as a user meets it: a real `rag serve` process, driven by headless Chromium.

Needs Debian's chromium (`apt-get install chromium`); Playwright's own browser download
is never used. Screenshots go to each test's tmp dir.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest

from .conftest import ROOT, SEEDS, pick_free_port, run_rag, stop

pytestmark = [pytest.mark.slow, pytest.mark.browser]

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
JAPAN = "How much did Japan pledge to the United States?"
SIZES = [pytest.param((1366, 768), id="laptop"), pytest.param((390, 844), id="phone")]


@dataclass
class Server:
    url: str
    docs: Path
    tmp: Path
    started_in: float  # seconds from launch to the first page served
    log: Path


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """`rag serve --ingest seeds/` on a free port, with its own index and documents folder."""
    tmp = tmp_path_factory.mktemp("ui")
    port = pick_free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAG_")}
    log = tmp / "serve.log"
    cmd = [
        sys.executable,
        "-m",
        "rag",
        "--index",
        str(tmp / "index"),
        "serve",
        "--port",
        str(port),
        "--docs",
        str(tmp / "documents"),
        "--ingest",
        str(SEEDS),
    ]
    started = time.perf_counter()
    with log.open("w") as out:
        # in a tmp folder: the evaluation runs it saves (evals/runs/) stay out of the repo
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=tmp)
    url = f"http://127.0.0.1:{port}/"
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(f"rag serve exited with {proc.returncode}:\n{log.read_text()}")
            try:
                with urllib.request.urlopen(url, timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.perf_counter() - started > 120:
                pytest.fail(f"rag serve did not answer on {url} in 120 s:\n{log.read_text()}")
            time.sleep(0.2)
        elapsed = time.perf_counter() - started
        while f"rag is serving {url}" not in log.read_text():  # printed right after the port opens
            assert time.perf_counter() - started < elapsed + 10, log.read_text()
            time.sleep(0.1)
        yield Server(url, tmp / "documents", tmp, elapsed, log)
    finally:
        stop(proc, 15)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.skip(
            "no /usr/bin/chromium: enable the browser tests with `apt-get install chromium`"
        )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield b
        b.close()


class Page:
    """One browser session on the app, recording every request it makes."""

    def __init__(
        self, browser: Any, server: Server, shots: Path, width: int = 1366, height: int = 768
    ) -> None:
        self.context = browser.new_context(viewport={"width": width, "height": height})
        self.context.grant_permissions(
            ["clipboard-read", "clipboard-write"], origin=server.url.rstrip("/")
        )
        self.page = self.context.new_page()
        self.page.set_default_timeout(45_000)  # CI machines are small and may be busy
        self.requests: list[str] = []
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.shots = shots
        self.page.goto(server.url)
        self.page.wait_for_selector("#question textarea", timeout=30_000)
        # the page's load events (documents table, header, status) have run: on a busy
        # machine, acting before they finish races them
        self.page.wait_for_function(
            "document.querySelector('#header').innerText.trim().split('\\n').length > 1"
        )

    def shot(self, name: str) -> Path:
        path = self.shots / f"{name}.png"
        self.page.screenshot(path=str(path))
        return path

    def ask(self, question: str) -> None:
        self.page.get_by_role("tab", name="Chat").click()
        turns = self.page.locator("#sources details.turn").count()
        self.page.fill("#question textarea", question)
        self.page.click("#ask")
        self.page.wait_for_function(
            f"document.querySelectorAll('#sources details.turn').length > {turns}", timeout=60_000
        )

    def settings(self, show: bool) -> None:
        """Unfold (or fold) the settings side panel; on a phone it starts folded (and it is
        drawn again a moment after the Chat tab comes back)."""
        from playwright.sync_api import TimeoutError as NotYet

        wanted = "#settings.open" if show else "#settings:not(.open)"
        try:
            self.page.wait_for_selector(wanted, state="attached", timeout=2_000)
            return
        except NotYet:
            self.page.locator("#settings .toggle-button").click()
        self.page.wait_for_selector(wanted, state="attached")

    def tab(self, name: str) -> None:
        self.page.get_by_role("tab", name=name).click()

    def upload(self, path: Path) -> None:
        """Add one file on the Documents tab and wait until it is indexed."""
        self.tab("Documents")
        self.page.set_input_files("#uploads input[type=file]", [str(path)])
        self.page.wait_for_selector(f"#uploads :text('{path.name}')", timeout=90_000)
        self.page.click("#add")
        self.page.wait_for_function(
            "document.querySelector('#docs-result').innerText.includes('Indexed')",
            timeout=60_000,
        )

    def outside_requests(self) -> list[str]:
        local = ("data", "blob")
        return [
            u
            for u in self.requests
            if urlparse(u).scheme not in local and urlparse(u).hostname != "127.0.0.1"
        ]

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def page(
    browser: Any, server: Server, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Page]:
    """A laptop-size page; `@pytest.mark.parametrize("page", SIZES, indirect=True)` for more."""
    width, height = getattr(request, "param", (1366, 768))
    p = Page(browser, server, tmp_path, width=width, height=height)
    yield p
    if getattr(request.node, "failed_call", False):  # what the page showed when the test failed
        shot = p.shot("FAILED")
        print(f"screenshot of the failure: {shot}\nserver log: {server.log}")
    p.close()


def test_seed_question_streams_a_cited_answer_with_the_passage_highlighted(
    page: Page, server: Server
) -> None:
    pg = page.page
    page.shot("1-first-open")
    page.ask(JAPAN)
    chat = pg.inner_text("#chat")
    assert "550 billion" in chat
    marks = pg.locator("#sources mark").all_inner_texts()
    assert any("550 billion" in m for m in marks), marks
    named = pg.inner_text("#sources")
    assert "003_bfe5477b5c58e1d0.txt" in named
    assert "Darcy Drought-Behares, Carnegie Endowment" in named  # its opening words, not a hash
    page.shot("2-answer")

    # a citation jumps to its passage
    link = pg.locator("#chat a.cite").first
    target = link.get_attribute("href")
    assert target and target.startswith("#src-")
    link.click()
    pg.wait_for_selector(f"{target}.flash", timeout=30_000)

    # the answer with its citations, as Markdown, on the clipboard
    pg.click("#copy")
    pg.wait_for_function("document.getElementById('copy').textContent.includes('Copied')")
    copied = pg.evaluate("navigator.clipboard.readText()")
    assert "550 billion" in copied and "[1] 003_bfe5477b5c58e1d0.txt" in copied

    # a follow-up is read in the light of the conversation; its sources fold the earlier ones
    page.ask("And Korea?")
    assert "Searched for: “How much did Korea pledge to the United States?”" in pg.inner_text(
        "#chat"
    )
    assert pg.locator("#sources details.turn").count() == 2
    assert pg.locator("#sources details.turn[open]").count() == 1

    # nothing was fetched from anywhere but the app
    assert page.outside_requests() == []


def test_question_the_documents_do_not_answer_is_refused_plainly(page: Page) -> None:
    page.ask("What is the boiling point of mercury on Mars?")
    assert "Not in the documents" in page.page.inner_text("#chat")
    sources = page.page.inner_text("#sources")
    assert "Closest passages" in sources
    assert page.page.locator("#sources article.src").count() >= 1
    page.shot("refusal")


def test_narrow_window_shows_the_chat_not_the_settings(
    browser: Any, server: Server, tmp_path: Path
) -> None:
    p = Page(browser, server, tmp_path, width=420)
    try:
        pg = p.page
        pg.wait_for_function("!document.querySelector('#settings.open')", timeout=30_000)
        p.ask(JAPAN)
        assert "550 billion" in pg.inner_text("#chat")
        assert pg.evaluate("document.documentElement.scrollWidth") <= 420  # no sideways scroll
        p.shot("narrow")
    finally:
        p.close()


def test_upload_then_ask_about_it_then_delete_it(
    page: Page, server: Server, tmp_path: Path
) -> None:
    pg = page.page
    notes = tmp_path / "zephyr notes.md"
    notes.write_text(
        "# Zephyr Lighthouse\n\nThe Zephyr lighthouse on Karvik Island was built in 1887 by "
        "the engineer Ingrid Halvorsen. Its lamp is visible from 23 nautical miles away.\n"
    )
    page.upload(notes)
    assert "added: zephyr notes.md" in pg.inner_text("#docs-result")
    table = pg.inner_text("#documents")
    assert "zephyr notes.md" in table and "000_b1c465d2178b5198.txt" in table
    assert (server.docs / "zephyr notes.md").is_file()
    page.shot("documents")

    page.ask("Who built the Zephyr lighthouse?")
    assert "Ingrid Halvorsen" in pg.inner_text("#chat")
    assert "zephyr notes.md" in pg.inner_text("#sources")

    page.tab("Documents")
    pg.get_by_role("gridcell", name="zephyr notes.md").click()  # picks it
    pg.wait_for_function(
        "document.querySelector('#doc-pick input').value.startsWith('zephyr notes.md')"
    )
    pg.click("#delete")
    # nothing is deleted before it is confirmed; Cancel keeps it
    pg.wait_for_selector("#confirm", state="visible", timeout=30_000)
    assert "Delete zephyr notes.md" in pg.inner_text("#confirm-text")
    pg.click("#cancel")
    pg.wait_for_selector("#confirm", state="hidden", timeout=30_000)
    assert "zephyr notes.md" in pg.inner_text("#documents")
    pg.click("#delete")
    pg.wait_for_selector("#confirm", state="visible", timeout=30_000)
    pg.click("#confirm")
    pg.wait_for_function(
        "document.querySelector('#docs-result').innerText.includes('Deleted')", timeout=30_000
    )
    assert "zephyr notes.md" not in pg.inner_text("#documents")
    assert not (server.docs / "zephyr notes.md").exists()


def test_a_failing_request_shows_a_message_not_a_dead_page(page: Page, free_port: int) -> None:
    pg = page.page
    page.tab("Documents")
    pg.click("#delete")  # nothing picked
    pg.wait_for_selector(".toast-body:has-text('Pick a document')", timeout=45_000)
    assert "Pick a document" in pg.inner_text("#docs-result")
    assert "000_b1c465d2178b5198.txt" in pg.inner_text("#documents")  # the table stays

    # an LLM endpoint that is down: said next to its settings, and under the answer
    page.tab("Chat")
    pg.get_by_label("LLM endpoint").check()
    pg.get_by_label("Endpoint URL").fill(f"http://127.0.0.1:{free_port}/v1")
    pg.get_by_role("button", name="Check connection").click()
    pg.wait_for_selector(".llm-status :text('cannot reach')", timeout=45_000)
    page.ask(JAPAN)
    chat = pg.inner_text("#chat")
    assert "550 billion" in chat and "⚠" in chat and "extractive answer" in chat
    page.shot("errors")


def test_llm_answer_streams_in_and_cites_its_passage(page: Page) -> None:
    from .fake_llm import FakeLLM, Reply

    def reply(request: dict[str, Any]) -> Reply:
        passages = request["messages"][-1]["content"]
        n = re.search(r'<passage n="(\d+)"[^>]*>[^<]*Japan pledged \$550 billion', passages)
        return Reply(
            f"Japan pledged $550 billion to the United States [{n.group(1) if n else 1}]. "
            "The United States took the lead in selecting investment destinations "
            f"[{n.group(1) if n else 1}].",
            piece_delay=0.06,
        )

    pg = page.page
    with FakeLLM(reply) as llm:
        pg.get_by_label("LLM endpoint").check()
        pg.get_by_label("Endpoint URL").fill(llm.url)
        pg.get_by_role("button", name="Check connection").click()
        pg.wait_for_selector(".llm-status :text('reachable: fake-model')", timeout=45_000)
        pg.fill("#question textarea", JAPAN)
        pg.click("#ask")
        seen = []
        while not pg.locator("#sources details.turn").count():
            seen.append(pg.inner_text("#chat"))
            time.sleep(0.05)
        assert llm.requests, "the question did not reach the LLM"
    assert any("550 billion" in t and "▍" in t for t in seen), "no partial answer was shown"
    # the quoted answer came first, at once, and the model's answer replaced it
    drafts = [i for i, t in enumerate(seen) if "while the model writes" in t]
    streamed = [i for i, t in enumerate(seen) if "▍" in t]
    assert drafts and drafts[0] < streamed[0], "the quoted answer was not shown first"
    assert "while the model writes" not in pg.inner_text("#chat")
    assert "Written by the LLM" in pg.inner_text("#sources")
    assert any("550 billion" in m for m in pg.locator("#sources mark").all_inner_texts())
    assert pg.locator("#chat a.cite").count() >= 1


def test_the_models_guess_is_searched_for_only_when_the_box_is_ticked(page: Page) -> None:
    from .fake_llm import FakeLLM, Reply

    guess = "Japan's __pledge__ was $550 billion of *investment*."

    def reply(request: dict[str, Any]) -> Reply:
        user = request["messages"][-1]["content"]
        if "<passages>" not in user:  # the guess: asked with the question alone
            return Reply(guess)
        n = re.search(r'<passage n="(\d+)"[^>]*>[^<]*Japan pledged \$550 billion', user)
        return Reply(f"Japan pledged $550 billion to the United States [{n.group(1) if n else 1}].")

    pg = page.page
    box = pg.get_by_label("Search also for the model's guess")
    assert not box.is_visible()  # the quoting answerer has no model to guess with
    with FakeLLM(reply) as llm:
        pg.get_by_label("LLM endpoint").check()
        pg.get_by_label("Endpoint URL").fill(llm.url)
        pg.get_by_role("button", name="Check connection").click()
        pg.wait_for_selector(".llm-status :text('reachable: fake-model')", timeout=45_000)
        for ticked in (False, True):
            box.set_checked(ticked)
            before = len(llm.requests)
            pg.fill("#question textarea", JAPAN)
            pg.click("#ask")
            pg.wait_for_function(
                "n => document.querySelectorAll('#sources details.turn').length >= n",
                arg=1 + ticked,
                timeout=60_000,
            )
            asked = [r["messages"][-1]["content"] for r in llm.requests[before:]]
            guesses = [u for u in asked if "<passages>" not in u]
            assert len(guesses) == ticked and all(JAPAN in u for u in guesses), asked
    chat = pg.inner_text("#chat")
    # shown once, for the second question, as typed (Markdown escaped), never as the answer
    assert chat.count("Searched also for the model's guess") == 1, chat
    assert "__pledge__" in chat and "*investment*" in chat


@pytest.mark.llm
def test_the_bundled_model_answers_in_the_app(page: Page) -> None:
    from .conftest import llm_requirements

    llm_requirements()  # llama-server and the 0.5B, which the app lists once installed
    pg = page.page
    pg.get_by_label("Local: Qwen2.5-Coder-0.5B-Instruct (Q4_K_M)").check()
    pg.fill("#question textarea", JAPAN)
    pg.click("#ask")
    seen = []
    deadline = time.monotonic() + 240  # llama-server starts at the first question
    while not pg.locator("#sources details.turn").count():
        assert time.monotonic() < deadline, "no answer in 240 s"
        seen.append(pg.inner_text("#chat"))
        time.sleep(0.1)
    assert any("while the model writes" in t and "550 billion" in t for t in seen)
    chat = pg.inner_text("#chat")
    assert "550 billion" in chat and "while the model writes" not in chat
    assert pg.locator("#chat a.cite").count() >= 1
    sources = pg.inner_text("#sources")
    assert "Written by the LLM" in sources or "extractive answer" in chat, sources
    assert page.outside_requests() == []


def test_two_sessions_asking_at_once_both_get_their_answers(
    browser: Any, server: Server, tmp_path: Path
) -> None:
    a, b = Page(browser, server, tmp_path / "a"), Page(browser, server, tmp_path / "b")
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    try:
        a.page.fill("#question textarea", JAPAN)
        b.page.fill("#question textarea", "What treaty anchors the U.S.–South Korea relationship?")
        a.page.click("#ask")
        b.page.click("#ask")
        for p in (a, b):
            p.page.wait_for_selector("#sources article.src", timeout=60_000)
        assert "550 billion" in a.page.inner_text("#chat")
        assert "Mutual Defense Treaty" in b.page.inner_text("#chat")
        assert "Mutual Defense Treaty" not in a.page.inner_text("#chat")  # sessions stay apart
    finally:
        a.close()
        b.close()


# --- the API, through gradio_client ----------------------------------------------------


def test_api_answers_while_an_ingest_runs(server: Server, tmp_path: Path) -> None:
    from gradio_client import Client, handle_file

    client = Client(server.url, verbose=False, download_files=str(tmp_path))
    big = tmp_path / "almanac.txt"
    big.write_text(
        "\n\n".join(
            f"Entry {i}. The harbour of Port {i} handles {i * 37} ships a year and exports "
            f"timber, wool and salted fish to {i % 17} countries across the northern sea." * 3
            for i in range(200)
        )
    )
    ingest = client.submit([handle_file(str(big))], api_name="/add_documents")
    time.sleep(1.5)  # the ingest is embedding now
    started = time.perf_counter()
    answer = client.predict(JAPAN, 5, "hybrid", api_name="/ask")
    asked_in = time.perf_counter() - started
    assert "550 billion" in answer["answer"] and answer["citations"][0]["quote"]
    assert not ingest.done(), "the question should have been answered while the ingest ran"
    result = ingest.result(timeout=240)
    assert "added: almanac.txt" in result[0]
    _, status = client.predict(api_name="/status")
    assert status["documents"] >= 3 and "minilm" in status["embedding"]["model"].lower()
    print(f"answered in {asked_in:.1f} s during an ingest; server up in {server.started_in:.1f} s")


def test_evaluation_tab_runs_a_dataset_and_shows_what_changed(
    page: Page, server: Server, tmp_path: Path
) -> None:
    lines = [
        line
        for line in (ROOT / "evals" / "seeds_qa.jsonl").read_text().splitlines()
        if '"id": "s01"' in line or '"id": "s02"' in line or '"answerable": false' in line
    ][:3]
    dataset = tmp_path / "three.jsonl"
    dataset.write_text("\n".join(lines) + "\n")
    pg = page.page
    page.tab("Evaluation")
    # the chat's settings are for the chat; hiding them is a round trip to the server
    pg.wait_for_selector("#settings", state="hidden", timeout=15_000)
    # the app starts outside the checkout (cwd has no evals/), yet lists the shipped sets
    assert "1\t2\t3" not in pg.inner_text("#eval-metrics") and "metric" in pg.inner_text(
        "#eval-metrics"
    )  # an empty table has real headers
    choices = pg.inner_text("#eval-dataset")
    assert "seeds_qa.jsonl" in choices and "heldout_qa.jsonl" in choices, choices
    pg.set_input_files("#eval-upload input[type=file]", [str(dataset)])
    pg.wait_for_selector("#eval-dataset input[value='Uploaded file']:checked", timeout=45_000)
    pg.click("#eval-run")
    pg.wait_for_selector("#eval-report", state="visible", timeout=90_000)
    summary = pg.inner_text("#eval-summary")
    assert "three.jsonl: 3 questions" in summary
    metrics = pg.inner_text("#eval-metrics")
    assert "hit@5" in metrics and "dense" in metrics and "keyword" in metrics
    assert pg.locator("#eval-chart canvas, #eval-chart svg").count() >= 1
    legend = pg.locator("#eval-chart .role-legend")
    assert legend.count() >= 1 and "keyword" in (legend.first.text_content() or "")
    assert "No earlier run" in pg.inner_text("#eval-diff")
    page.shot("evaluation")
    with pg.expect_download() as download:
        pg.click("#eval-report")
    report = tmp_path / "report.html"
    download.value.save_as(report)
    assert "hit@5" in report.read_text()
    # no evals/ where it started: the runs are kept in the index folder, not the cwd
    assert not (server.tmp / "evals").exists()
    saved = list((server.tmp / "index" / "evals" / "runs").glob("*.json"))
    assert len(saved) == 1

    # again, retrieval only against the same questions: the change from the first run
    for name in ("dense", "keyword", "hybrid"):
        pg.locator("#eval-baselines").get_by_label(name, exact=True).uncheck()
    pg.click("#eval-run")
    pg.wait_for_function(
        "document.querySelector('#eval-diff').innerText.includes('Since')", timeout=90_000
    )
    assert saved[0].stem in pg.inner_text("#eval-diff")

    # a set written for other documents is refused at once, not run for minutes to score 0
    page.tab("Evaluation")
    pg.locator("#eval-dataset label", has_text="pydocs_qa.jsonl").click()
    pg.click("#eval-run")
    pg.wait_for_function(
        "document.querySelector('#eval-summary').innerText.includes('evidence quotes')",
        timeout=60_000,
    )
    assert "written for other documents" in pg.inner_text("#eval-summary")

    page.tab("Status")
    status = pg.inner_text("#status")
    assert "Embedding model" in status and "minilm" in status.lower()


IN_VIEW = """(sel) => { const r = document.querySelector(sel).getBoundingClientRect();
  return r.top >= 0 && r.bottom <= window.innerHeight + 1; }"""


@pytest.mark.parametrize(("width", "height"), [(1366, 768), (390, 844)], ids=["laptop", "phone"])
def test_every_source_can_be_read_and_the_question_box_stays_reachable(
    browser: Any, server: Server, tmp_path: Path, width: int, height: int
) -> None:
    """At laptop size the Sources panel used to overflow the window without scrolling, and a
    click on [n] scrolled the whole app so the title, tabs and question box were lost."""
    p = Page(browser, server, tmp_path, width=width, height=height)
    pg = p.page
    try:
        p.ask("How much did Japan pledge to the United States?")
        p.ask("What was Korea's unemployment rate in 2023?")  # refused: three closest passages
        p.ask("What did Trump say the United States would receive from Korea?")
        # every answer's sources unfolded: far longer than the window
        pg.evaluate("document.querySelectorAll('#sources details').forEach(d => d.open = true)")
        passages = pg.locator("#sources article.src")
        assert passages.count() >= 5
        last = passages.nth(passages.count() - 1)
        last.scroll_into_view_if_needed()
        assert last.evaluate("e => e.getBoundingClientRect().top < window.innerHeight")
        if width > 640:
            # the panel scrolls itself: the page around it does not move
            panel = pg.evaluate("""() => { const s = document.getElementById('sources');
                return [getComputedStyle(s).overflowY, s.scrollHeight > s.clientHeight,
                        s.getBoundingClientRect().bottom <= window.innerHeight + 1]; }""")
            assert panel == ["auto", True, True], panel
            assert pg.evaluate(IN_VIEW, "#header") and pg.evaluate(IN_VIEW, "#question")
            pg.evaluate("document.getElementById('sources').scrollTop = 0")
            cite = pg.locator("#chat a.cite").last
            cite.click()
            pg.wait_for_timeout(1200)  # the smooth scroll
            target = cite.get_attribute("href")[1:]
            assert pg.evaluate(IN_VIEW, f"#{target} mark") or pg.evaluate(
                "(id) => { const r = document.getElementById(id).getBoundingClientRect();"
                " return r.top < window.innerHeight && r.bottom > 0; }", target
            )  # fmt: skip
            assert pg.evaluate(IN_VIEW, "#header"), "the title scrolled away"
            assert pg.evaluate(IN_VIEW, "#question"), "the question box scrolled away"
        pg.locator("#question textarea").scroll_into_view_if_needed()
        assert pg.evaluate(IN_VIEW, "#question")
        p.shot(f"sources-{width}")
    finally:
        p.close()


# the short words (numbers, column names) of a table that are broken over two lines; a long
# identifier may wrap in a narrow column
SPLIT_WORDS = """(sel) => { const split = [];
  const walk = document.createTreeWalker(document.querySelector(sel), NodeFilter.SHOW_TEXT);
  for (let node = walk.nextNode(); node; node = walk.nextNode()) {
    if (node.parentElement.closest(".sizing-body")) continue;  // the dataframe's hidden copy
    for (const m of node.textContent.matchAll(/[^\\s-]+/g)) {
      const r = document.createRange();
      r.setStart(node, m.index);
      r.setEnd(node, m.index + m[0].length);
      const lines = new Set([...r.getClientRects()].filter((b) => b.width > 0)
        .map((b) => Math.round(b.top)));
      if (lines.size > 1 && m[0].length <= 12) split.push(m[0]);
    }
  }
  return split; }"""
# what sticks out of the window (the app clips it) and no box of its own scrolls to
CUT_OFF = """() => { const out = [];
  for (const e of document.querySelectorAll(".gradio-container *")) {
    const r = e.getBoundingClientRect();
    if (!r.width || r.right <= innerWidth + 1 || getComputedStyle(e).position === "fixed") continue;
    const scrolls = (b) => /auto|scroll/.test(getComputedStyle(b).overflowX)
      && b.getBoundingClientRect().right <= innerWidth + 1;
    let box = e.parentElement;
    while (box && !scrolls(box)) box = box.parentElement;
    if (!box) out.push(`${e.tagName}#${e.id}.${e.className} right=${Math.round(r.right)}`);
  }
  return out.slice(0, 5); }"""


def _shows(pg: Any, selector: str) -> bool:
    """Some of the element is inside the window."""
    return pg.evaluate(
        """(sel) => { const r = document.querySelector(sel).getBoundingClientRect();
        return r.height > 0 && r.top < window.innerHeight && r.bottom > 0; }""",
        selector,
    )


@pytest.mark.parametrize(("width", "height"), [(1366, 768), (390, 844)], ids=["laptop", "phone"])
def test_a_tapped_citation_shows_its_passage_over_the_original_and_leads_back(
    browser: Any, server: Server, tmp_path: Path, width: int, height: int
) -> None:
    """[n] tapped while the Original tab was up did nothing (its passage was in the hidden
    Sources tab); on a phone the jump left the question box 1,500 px up, with no way back."""
    p = Page(browser, server, tmp_path, width=width, height=height)
    pg = p.page
    try:
        p.ask(JAPAN)
        p.ask("What did Trump say the United States would receive from Korea?")
        pg.locator("#sources details.turn[open] a.open-original").first.click()
        pg.wait_for_selector("#original #passage-here", timeout=30_000)
        assert pg.locator("#sources").is_hidden()
        cite = pg.locator("#chat a.cite").last
        target = cite.get_attribute("href")
        cite.click()
        pg.wait_for_selector(f"{target}.flash", timeout=15_000)  # shown, not flashed unseen
        pg.wait_for_timeout(1200)  # the smooth scroll
        assert _shows(pg, f"{target} mark"), "the cited words are not on screen"
        assert pg.evaluate("document.documentElement.scrollWidth") <= width
        back = pg.locator("#back-to-question")
        if width > 640:  # the Sources panel scrolled, the page did not: nothing to go back to
            assert pg.evaluate(IN_VIEW, "#header") and pg.evaluate(IN_VIEW, "#question")
            assert not back.is_visible()
        else:
            assert not _shows(pg, "#question")  # the page itself went down to the passage
            p.shot("phone-cited-passage")
            back.click()
            pg.wait_for_timeout(1200)
            for part in ("#header", "[role=tablist]", "#question"):
                assert pg.evaluate(IN_VIEW, part), f"{part} is not back in view"
            back.wait_for(state="hidden", timeout=5_000)
        p.shot(f"back-{width}")
    finally:
        p.close()


def test_tables_on_a_phone_scroll_in_their_own_box_with_their_words_whole(
    browser: Any, server: Server, tmp_path: Path
) -> None:
    """At 390 px a Markdown table in a passage was run together as one paragraph of pipes, a
    long URL pushed out of its card, the Status table was cut off at the window's edge and the
    metrics table broke "1.000" over three lines."""
    notes = tmp_path / "tariff schedule.md"
    notes.write_text(
        "# Quarterly Tariff Schedule\n\nThe Ostrava customs office publishes a quarterly tariff "
        "schedule for imported bicycles, listed at https://customs.example.org/ostrava/tariffs/"
        "2024/quarterly-schedule/imported-bicycle-frames.html for importers.\n\n"
        "| Category | Frame material | Duty rate (percent) | Reviewed by |\n|---|---|---|---|\n"
        "| Road | Carbon fibre composite | 14.5 | Customs Tariff Commission |\n"
        "| Mountain | Aluminium alloy 6061 | 11.25 | Customs Tariff Commission |\n"
        "| Cargo | Chromoly steel | 7.75 | Ministry of Trade and Industry |\n"
    )
    lines = [
        line
        for line in (ROOT / "evals" / "seeds_qa.jsonl").read_text().splitlines()
        if '"id": "s01"' in line or '"id": "s02"' in line
    ]
    dataset = tmp_path / "two.jsonl"
    dataset.write_text("\n".join(lines) + "\n")
    p = Page(browser, server, tmp_path, width=390, height=844)
    pg = p.page
    try:
        p.upload(notes)
        assert pg.evaluate(CUT_OFF) == [], "the Documents tab is cut off"
        assert pg.evaluate("document.documentElement.scrollWidth") <= 390
        p.ask("What does the Ostrava customs office publish for imported bicycles?")
        card = "#sources details.turn[open] article.src"
        assert pg.locator(f"{card} table td", has_text="Chromoly steel").count() == 1
        fits = pg.evaluate(
            """(sel) => [...document.querySelectorAll(sel)].map((a) => {
              const table = a.querySelector("table");
              return a.scrollWidth <= a.clientWidth + 1
                && (!table || getComputedStyle(table).overflowX === "auto"); })""",
            card,
        )
        assert fits and all(fits), "a passage is wider than its card"
        assert pg.evaluate(SPLIT_WORDS, f"{card} table") == []
        assert pg.evaluate(CUT_OFF) == [], "the Chat tab is cut off"
        p.shot("phone-table-passage")

        p.tab("Status")
        pg.wait_for_selector(".status-table")
        assert pg.evaluate(CUT_OFF) == [], "the Status table is cut off"
        assert pg.evaluate(
            "document.querySelector('.status-table').getBoundingClientRect().right"
        ) <= pg.evaluate("document.getElementById('status').getBoundingClientRect().right")

        p.tab("Evaluation")
        pg.set_input_files("#eval-upload input[type=file]", [str(dataset)])
        pg.wait_for_selector("#eval-dataset input[value='Uploaded file']:checked")
        pg.click("#eval-run")  # with the other modes: five columns
        pg.wait_for_selector("#eval-report", state="visible", timeout=90_000)
        assert "dense" in pg.inner_text("#eval-metrics")
        assert pg.evaluate(SPLIT_WORDS, "#eval-metrics") == [], "metrics split mid-word"
        assert pg.evaluate(CUT_OFF) == [], "the Evaluation tab is cut off"
        p.shot("phone-metrics")
    finally:
        p.close()


@pytest.mark.parametrize(("width", "height"), [(1366, 768), (390, 844)], ids=["laptop", "phone"])
def test_a_document_chosen_in_search_in_is_the_only_one_answered_from(
    browser: Any, server: Server, tmp_path: Path, width: int, height: int
) -> None:
    p = Page(browser, server, tmp_path, width=width, height=height)
    pg = p.page
    try:
        p.settings(show=True)  # on a phone the settings fold away
        chooser = pg.locator("#search-in input")
        chooser.click()
        # the essay collection, by its title (the file name is a hash)
        pg.get_by_role("option", name=re.compile("The Korean Economy")).click()
        pg.keyboard.press("Escape")
        assert "The Korean Economy" in pg.inner_text("#search-in")
        if width <= 640:
            p.settings(show=False)
        # both documents speak of the pledge: only the chosen one may be cited
        p.ask(JAPAN)
        opened = pg.locator("#sources details.turn[open] a.open-original")
        sources = {json.loads(a.get_attribute("data-open"))["source"] for a in opened.all()}
        assert sources and all(Path(s).name.startswith("000_") for s in sources), sources
        # the choice stays set from question to question (and is out of sight on a phone):
        # each answer says it
        note = pg.inner_text("#sources details.turn[open] .searched")
        assert "Searched only in" in note and "The Korean Economy" in note
        p.shot(f"search-in-{width}")
    finally:
        p.close()


@pytest.mark.parametrize("page", SIZES, indirect=True)
def test_conversations_reopen_and_feedback_is_stored(page: Page, server: Server) -> None:
    pg = page.page
    page.ask("How much did Japan pledge to the United States?")
    assert "550 billion" in pg.inner_text("#chat")
    # 👎 with a note: stored in the index folder, with the question and the note
    pg.fill("#feedback-note textarea", "It should say when the pledge was made.")
    pg.fill("#feedback-right textarea", "$550 billion, pledged in 2025")
    pg.locator("#chat button[aria-label='Dislike']").last.click()
    pg.wait_for_function(
        "document.querySelector('#feedback-status').innerText.includes('saved')", timeout=30_000
    )
    stored = (server.tmp / "index" / "feedback.jsonl").read_text().splitlines()
    rows = [json.loads(x) for x in stored]
    assert rows[-1]["rating"] == "down" and rows[-1]["note"].startswith("It should say when")
    assert rows[-1]["question"] == "How much did Japan pledge to the United States?"
    assert rows[-1]["right_answer"] == "$550 billion, pledged in 2025"

    # retry asks the same question again: still one answer in the chat, freshly made
    pg.locator("#chat button[aria-label='Retry']").last.click()
    pg.wait_for_function(
        "document.querySelector('#chat').innerText.split('550 billion').length === 2",
        timeout=60_000,
    )
    # a new conversation, then the saved one reopened from the list, sources and all
    pg.click("#clear")
    pg.wait_for_function("!document.querySelector('#chat').innerText.includes('550 billion')")
    page.settings(show=True)  # the saved conversations are listed there
    pg.click("#conv-pick input")
    pg.get_by_role("option", name=re.compile("How much did Japan pledge")).first.click()
    pg.click("#conv-open")
    pg.wait_for_function(
        "document.querySelector('#chat').innerText.includes('550 billion')", timeout=30_000
    )
    if pg.viewport_size["width"] <= 640:
        page.settings(show=False)
    assert "Japan pledged $550 billion" in pg.inner_text("#sources")
    saved = list((server.tmp / "index" / "conversations").glob("*.json"))
    # (other tests of this server save conversations too, in any order)
    assert any("How much did Japan pledge" in f.read_text() for f in saved), saved
    # and a follow-up continues it: condensed with the reopened history
    page.ask("And what about Korea?")
    assert len(pg.locator("#sources details.turn").all()) == 2

    # feedback exported while the app runs is listed when the Evaluation tab opens
    r = run_rag("feedback", "export", index=server.tmp / "index")
    assert r.code == 0, r.err
    page.tab("Evaluation")
    pg.wait_for_function(
        "document.querySelector('#eval-dataset').innerText.includes('feedback.jsonl')",
        timeout=30_000,
    )

    # deleting a saved conversation asks first; dismissing keeps it
    page.tab("Chat")
    page.settings(show=True)
    pg.click("#conv-pick input")
    pg.get_by_role("option", name=re.compile("How much did Japan pledge")).first.click()
    pg.once("dialog", lambda d: d.dismiss())
    pg.click("#conv-delete")
    pg.wait_for_timeout(1500)
    assert len(list((server.tmp / "index" / "conversations").glob("*.json"))) == len(saved)
    pg.once("dialog", lambda d: d.accept())
    pg.click("#conv-delete")
    pg.wait_for_function(
        "!document.querySelector('#conv-pick input').value.includes('Japan')", timeout=30_000
    )
    assert len(list((server.tmp / "index" / "conversations").glob("*.json"))) == len(saved) - 1


@pytest.mark.parametrize("page", SIZES, indirect=True)
def test_open_the_original_shows_the_passage_in_its_document(
    page: Page, server: Server, tmp_path: Path
) -> None:
    from .test_loaders import _make_pdf

    pg = page.page
    page.ask("How much did Japan pledge to the United States?")
    pg.locator("#sources a.open-original").first.click()
    pg.wait_for_selector("#original #passage-here", timeout=30_000)
    assert "550 billion" in pg.inner_text("#original #passage-here mark")
    assert "000_" in pg.inner_text("#original .original-head") or "003_" in pg.inner_text(
        "#original .original-head"
    )
    # the marked passage is scrolled into the panel's view
    assert pg.evaluate("""() => { const h = document.getElementById('passage-here')
        .getBoundingClientRect(), p = document.getElementById('original').getBoundingClientRect();
        return h.top < p.bottom && h.bottom > p.top; }""")

    # a PDF: the cited page is drawn, with the passage boxed
    pdf = tmp_path / "orchard report.pdf"
    pdf.write_bytes(_make_pdf(["The orchard grows apples.", "The quince harvest was 40 tonnes."]))
    page.upload(pdf)
    page.ask("How many tonnes was the quince harvest?")
    pg.get_by_role("tab", name="Sources").click()
    pg.locator("#sources details.turn[open] a.open-original").first.click()
    pg.wait_for_selector("#original img.original-page", timeout=30_000)
    assert "page 2 of 2 · the passage is boxed" in pg.inner_text("#original .original-head")
    page.shot("original-pdf")
