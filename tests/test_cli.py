"""The `rag` command end to end, in a subprocess, the way a user runs it."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .conftest import ROOT, SEEDS, exit_code, run_rag


def test_help_and_version() -> None:
    r = run_rag("--help")
    assert r.code == 0 and "ingest" in r.out and "Examples" in r.out
    assert run_rag("--version").out.strip().endswith("0.1.0")
    assert "Example" in run_rag("ask", "--help").out


def test_ingest_search_ask_status_json(tmp_path: Path, corpus: Path) -> None:
    index = tmp_path / "idx"
    r = run_rag("ingest", str(corpus), "--json", index=index)
    assert r.code == 0, r.err
    report = json.loads(r.out)
    assert len(report["added"]) == 2 and report["chunks_total"] >= 2 and report["seconds"] > 0

    r = run_rag("search", "solar water pumps", "-k", "2", "--json", index=index)
    assert r.code == 0, r.err
    out = json.loads(r.out)
    assert out["query"] == "solar water pumps"
    hit = out["hits"][0]
    assert {"rank", "chunk_id", "source", "text", "score", "page", "start_char", "end_char"} <= set(
        hit
    )
    assert hit["rank"] == 1 and hit["source"].endswith("alpha.md") and "solar" in hit["text"]
    source_text = Path(hit["source"]).read_text()
    assert source_text[hit["start_char"] : hit["end_char"]] == hit["text"]

    r = run_rag("ask", "How much money did Alpha receive from the Horizon programme?", "--json",
                index=index)  # fmt: skip
    assert r.code == 0, r.err
    ans = json.loads(r.out)
    assert ans["refused"] is False and ans["mode"] == "extractive"
    assert "2.5 million euros" in ans["answer"] and "[1]" in ans["answer"]
    cit = ans["citations"][0]
    assert {"n", "chunk_id", "source", "text", "score"} <= set(cit) and cit["n"] == 1
    assert cit["quote"] in cit["text"]

    r = run_rag("status", "--json", index=index)
    st = json.loads(r.out)
    assert st["documents"] == 2 and st["embedding"]["model"] == "minilm-int8"
    assert st["chunking"] == {"size": 256, "overlap": 32}
    r = run_rag("status", index=index)
    assert "Documents:  2" in r.out and "minilm-int8" in r.out


def test_plain_ask_prints_answer_and_sources(seeds_index: Path) -> None:
    r = run_rag("ask", "When was the Korea-EU Framework Agreement established?", index=seeds_index)
    assert r.code == 0, r.err
    assert "1963" in r.out and "[1]" in r.out and "Sources:" in r.out
    assert "000_b1c465d2178b5198.txt" in r.out


def test_refusal_on_unanswerable(seeds_index: Path) -> None:
    r = run_rag("ask", "Who won the 2022 FIFA World Cup?", "--json", index=seeds_index)
    ans = json.loads(r.out)
    assert ans["refused"] is True and ans["citations"] == []
    assert ans["answer"].startswith("The documents do not say")
    assert len(ans["closest"]) >= 1
    r = run_rag("ask", "Who won the 2022 FIFA World Cup?", index=seeds_index)
    assert "The documents do not say" in r.out and "Closest passages" in r.out


def test_batch_keeps_order_and_ids(seeds_index: Path, tmp_path: Path) -> None:
    batch = tmp_path / "q.jsonl"
    questions = [
        {"id": "b", "question": "How much did Japan pledge to the United States?"},
        {"id": 7, "question": "Which university is Yukiko Fukagawa at?"},
    ]
    batch.write_text("\n".join(json.dumps(q) for q in questions) + "\n")
    r = run_rag("ask", "--batch", str(batch), index=seeds_index)
    assert r.code == 0, r.err
    lines = [json.loads(x) for x in r.out.splitlines()]
    assert [x["id"] for x in lines] == ["b", 7]
    assert "550 billion" in lines[0]["answer"] and "Waseda" in lines[1]["answer"]
    r = run_rag("search", "--batch", str(batch), "-k", "3", index=seeds_index)
    lines = [json.loads(x) for x in r.out.splitlines()]
    assert [x["id"] for x in lines] == ["b", 7] and all(len(x["hits"]) == 3 for x in lines)

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": 1, "question": "ok?"}\n{not json}\n')
    r = run_rag("ask", "--batch", str(bad), index=seeds_index)
    assert r.code == 2 and r.out == "" and "bad.jsonl:2" in r.err
    # a blank question is found before the first answer, with its line (it stopped the run
    # midway, after printing the answers before it, with no line number)
    bad.write_text('{"id": 1, "question": "ok?"}\n{"id": 2, "question": "  "}\n')
    for command in ("ask", "search"):
        r = run_rag(command, "--batch", str(bad), index=seeds_index)
        assert r.code == 2 and r.out == "" and "bad.jsonl:2: the question is empty" in r.err


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["ingest", "/no/such/folder"], "no such file or folder"),
        (["search", "x", "--mode", "fuzzy"], "--mode"),
        (["ask"], "give a question"),
        (["search", "x", "-k", "0"], "-k"),
        (["--frobnicate"], "No such option"),
    ],
)
def test_errors_are_one_line_without_traceback(
    tmp_path: Path, args: list[str], needle: str
) -> None:
    r = run_rag(*args, index=tmp_path / "idx")
    assert r.code != 0
    lines = r.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), r.err
    assert needle in lines[0] and "Traceback" not in r.err


def test_unwritable_index_folder_is_a_clear_error(tmp_path: Path, corpus: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    r = run_rag("ingest", str(corpus), index=blocker / "idx")
    assert r.code == 1 and r.err.startswith("error: cannot create the index folder")
    assert "--index DIR" in r.err and "Traceback" not in r.err


def test_the_commands_errors_name_work_pasted_into_a_shell_with_spaces_in_paths(
    tmp_path: Path, corpus: Path
) -> None:
    import shlex
    import shutil

    index, docs = tmp_path / "my index", tmp_path / "my docs"
    shutil.copytree(corpus, docs)
    assert run_rag("ingest", str(docs), index=index).code == 0
    r = run_rag("ingest", str(docs), "--chunk-size", "128", index=index)
    command = r.err.split("`")[1]  # the rebuild it names, quoted for a shell
    assert shlex.split(command)[:3] == ["rag", "--index", str(index)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAG_")}
    line = f"{shlex.quote(sys.executable)} -m {command}"
    pasted = subprocess.run(["bash", "-c", line], capture_output=True, text=True, env=env,
                            cwd=ROOT, timeout=300)  # fmt: skip
    assert pasted.returncode == 0, pasted.stderr
    assert run_rag("status", "--json", index=index).out.count('"size": 128') == 1
    missing = run_rag("ask", "anything?", index=tmp_path / "no index here")
    named = missing.err.split("`")[1]
    assert shlex.split(named)[:4] == ["rag", "--index", str(tmp_path / "no index here"), "ingest"]


def test_missing_index_says_how_to_build_it(tmp_path: Path) -> None:
    r = run_rag("ask", "anything?", index=tmp_path / "nothing")
    assert r.code == 1 and r.err.startswith("error: no index in") and "ingest PATH" in r.err
    r = run_rag("--debug", "ask", "anything?", index=tmp_path / "nothing")
    assert "Traceback" in r.err


def test_mismatched_manifest_is_refused(tmp_path: Path, corpus: Path) -> None:
    index = tmp_path / "idx"
    assert run_rag("ingest", str(corpus), index=index).code == 0
    r = run_rag("ingest", str(corpus), "--chunk-size", "128", index=index)
    assert r.code == 1 and len(r.err.strip().splitlines()) == 1
    # the command it names keeps the new chunking, and works as given
    fix = f"rag --index {index} ingest --rebuild --chunk-size 128 --chunk-overlap 32 {corpus}"
    assert fix.replace(str(corpus), str(corpus.resolve())) in r.err
    args = r.err.split("`")[1].split()[3:]  # after "rag --index DIR"
    r = run_rag(*args, index=index)
    assert r.code == 0, r.err
    assert run_rag("status", "--json", index=index).out.count('"size": 128') == 1


def test_bad_files_folder_exits_zero_and_reports(tmp_path: Path, corpus: Path) -> None:
    (corpus / "zero.txt").write_text("")
    (corpus / "junk.docx").write_bytes(b"not a docx")
    (corpus / "logo.png").write_bytes(b"\x89PNG")
    r = run_rag("ingest", str(corpus), "--verbose", index=tmp_path / "idx")
    assert r.code == 0, r.err
    assert "Skipped 2 files" in r.out and "zero.txt: empty file" in r.out
    assert "junk.docx: corrupt or unreadable DOCX" in r.out
    assert "Unsupported (1)" in r.out and "logo.png" in r.out
    only_bad = tmp_path / "bad"
    only_bad.mkdir()
    (only_bad / "zero.txt").write_text("")
    r = run_rag("ingest", str(only_bad), index=tmp_path / "idx2")
    assert r.code == 1 and "no file could be indexed" in r.err


def _many_files(folder: Path, n: int) -> None:
    folder.mkdir()
    for i in range(n):
        body = " ".join(
            f"Record {i}-{j} notes that station {j} in district {i} counted {i * j + 7} visitors."
            for j in range(60)
        )
        (folder / f"doc{i:03d}.txt").write_text(body + "\n")


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL])
def test_interrupted_ingest_keeps_index_usable_and_resumes(tmp_path: Path, sig: int) -> None:
    docs = tmp_path / "docs"
    # ~320 chunks: the first commit comes after 64 (WRITE_EVERY), well before the end
    _many_files(docs, 64)
    index = tmp_path / "idx"
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAG_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "rag", "--index", str(index), "ingest", str(docs)],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    catalog = index / "catalog.sqlite"
    deadline = time.time() + 240
    indexed = 0
    while time.time() < deadline and proc.poll() is None:
        if catalog.exists():
            try:
                with sqlite3.connect(catalog) as db:
                    indexed = db.execute("SELECT COUNT(*) FROM files").fetchone()[0]
            except sqlite3.Error:
                indexed = 0
            if indexed:
                break
        time.sleep(0.2)
    assert proc.poll() is None, "ingest finished before it could be interrupted"
    proc.send_signal(sig)
    code, err = exit_code(proc, 60)
    assert code != 0, f"exit 0 after the signal ({indexed} files were indexed); stderr:\n{err}"
    if sig == signal.SIGINT:
        # what was kept, and the command that finishes the work
        assert err.startswith("interrupted: what was written before the stop is kept"), err
        assert f"rag --index {index} ingest {docs}" in err and "Traceback" not in err

    st = json.loads(run_rag("status", "--json", index=index).out)
    assert 0 < st["documents"] < 64, "the interruption should leave a partial index"
    # the partial index answers, by meaning and by keyword
    r = run_rag("search", "station visitors", "-k", "3", "--json", index=index)
    assert r.code == 0, r.err
    assert len(json.loads(r.out)["hits"]) == 3
    r = run_rag("search", "Record 0-5", "--mode", "keyword", "--json", index=index)
    assert r.code == 0 and json.loads(r.out)["hits"]

    # the next run finishes the work and only embeds what was missing
    r = run_rag("ingest", str(docs), "--json", index=index)
    assert r.code == 0, r.err
    rep = json.loads(r.out)
    assert rep["documents_total"] == 64 and len(rep["unchanged"]) == st["documents"]
    assert len(rep["added"]) == 64 - st["documents"]
    st = json.loads(run_rag("status", "--json", index=index).out)
    assert st["documents"] == 64


def test_python_dash_m_works() -> None:
    p = subprocess.run([sys.executable, "-m", "rag", "--help"], capture_output=True, text=True)
    assert p.returncode == 0 and "Usage: rag" in p.stdout


def test_seeds_are_the_shared_corpus() -> None:
    names = sorted(p.name for p in SEEDS.glob("*.txt"))
    assert names == ["000_b1c465d2178b5198.txt", "003_bfe5477b5c58e1d0.txt"]


@pytest.mark.slow
def test_serve_stops_on_sigterm(tmp_path: Path) -> None:
    from .conftest import pick_free_port, write_small_corpus

    port = pick_free_port()
    docs = write_small_corpus(tmp_path / "docs")
    cmd = [sys.executable, "-m", "rag", "--index", str(tmp_path / "index"), "serve", "--port",
           str(port), "--docs", str(tmp_path / "uploads"), "--ingest", str(docs)]  # fmt: skip
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         cwd=tmp_path)  # fmt: skip
    try:
        assert p.stdout is not None
        line = p.stdout.readline()  # printed once the app listens
        assert f"http://127.0.0.1:{port}/" in line, line
        p.send_signal(signal.SIGTERM)
        assert p.wait(timeout=30) == 143
    finally:
        if p.poll() is None:
            p.kill()


def test_a_newline_in_a_file_name_is_printed_escaped(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "two\nlines.txt").write_text("A file whose name holds a newline is still indexed.\n")
    (docs / "bad\nbinary.txt").write_bytes(bytes(range(256)) * 8)
    r = run_rag("ingest", str(docs), index=tmp_path / "idx")
    assert r.code == 0, r.err
    assert "two\\nlines.txt" in r.out and "bad\\nbinary.txt: binary" in r.out
    # one file, one line: no line of the report starts with the second half of a name
    assert not any(line.startswith(("lines.txt", "binary.txt")) for line in r.out.splitlines())


def test_source_filter_limits_search_and_answers(tmp_path: Path, corpus: Path) -> None:
    index = tmp_path / "idx"
    assert run_rag("ingest", str(corpus), index=index).code == 0
    # "euros" is in both documents; --source keeps one, in every retrieval mode
    for mode in ("dense", "keyword", "hybrid"):
        r = run_rag("search", "how many euros", "--mode", mode, "--json", index=index)
        assert {Path(h["source"]).name for h in json.loads(r.out)["hits"]} == {
            "alpha.md",
            "beta.txt",
        }
        r = run_rag("search", "how many euros", "--mode", mode, "--json", "--source", "beta.*",
                    index=index)  # fmt: skip
        assert r.code == 0, r.err
        assert {Path(h["source"]).name for h in json.loads(r.out)["hits"]} == {"beta.txt"}, mode
    # a folder, and an answer drawn only from the chosen document
    only = str(corpus / "beta.txt")
    r = run_rag("ask", "How much money is paid in euros?", "--json", "--source", only, index=index)
    answer = json.loads(r.out)
    assert "3 euros" in answer["answer"] and "2.5 million" not in answer["answer"]
    assert all(c["source"].endswith("beta.txt") for c in answer["citations"])
    r = run_rag("search", "euros", "--json", "--source", str(corpus), index=index)
    assert len({h["source"] for h in json.loads(r.out)["hits"]}) == 2
    r = run_rag("ask", "Who?", "--source", "*.pdf", index=index)
    assert r.code == 2 and "no indexed document matches --source '*.pdf'" in r.err
    assert "e.g. alpha.md, beta.txt" in r.err


def test_serve_on_a_port_in_use_is_one_line_at_once(tmp_path: Path, corpus: Path) -> None:
    import socket

    index = tmp_path / "idx"
    assert run_rag("ingest", str(corpus), index=index).code == 0
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        started = time.perf_counter()
        r = run_rag("serve", "--port", str(port), index=index, cwd=tmp_path, timeout=120)
    assert r.code == 1 and r.err.startswith(f"error: cannot serve on 127.0.0.1:{port}")
    assert "--port" in r.err and r.err.count("\n") == 1, r.err  # no warnings after it
    assert time.perf_counter() - started < 60


def test_a_link_to_a_file_outside_the_folder_is_not_followed(tmp_path: Path) -> None:
    """A link's key used to be its target's path, outside the folder: no ingest of the folder
    ever forgot it, so deleting the link left the outside file searchable for good."""
    docs, elsewhere = tmp_path / "docs", tmp_path / "elsewhere"
    docs.mkdir()
    elsewhere.mkdir()
    (docs / "inside.txt").write_text("The Kestrel Observatory recorded 212 aurora nights.\n")
    (elsewhere / "secret.txt").write_text("The vault combination is 4417, kept by Mara Quist.\n")
    (docs / "link.txt").symlink_to(elsewhere / "secret.txt")
    (docs / "again.txt").symlink_to(docs / "inside.txt")  # inside: the same file, once
    (docs / ".hidden").mkdir()
    (docs / ".hidden" / "h.txt").write_text("A hidden note about the Zephyr lighthouse.\n")
    (docs / "peek.txt").symlink_to(docs / ".hidden" / "h.txt")  # hidden, as its target is
    (docs / "broken.txt").symlink_to(tmp_path / "gone.txt")
    (docs / "loop.txt").symlink_to(docs / "loop.txt")
    (docs / "away").symlink_to(elsewhere)  # a folder outside: listed, not walked
    (docs / "sub").mkdir()
    (docs / "sub" / "up").symlink_to(docs)  # a folder inside: its files are found once
    (docs / "plain").symlink_to(docs / "inside.txt")  # a link's type is its target's
    index = tmp_path / "idx"
    r = run_rag("ingest", str(docs), "--json", index=index)
    assert r.code == 0, r.err
    report = json.loads(r.out)
    assert report["documents_total"] == 1 and len(report["added"]) == 1
    away, broken, skipped, loop = report["skipped"]
    assert skipped["source"].endswith("link.txt") and "outside" in skipped["reason"]
    assert broken["source"].endswith("broken.txt") and "broken link" in broken["reason"]
    assert loop["source"].endswith("loop.txt") and "link loop" in loop["reason"]
    assert away["source"].endswith("away") and "the folder" in away["reason"]
    assert "by its own path" in away["reason"]
    assert report["unsupported"] == []
    r = run_rag("ingest", str(docs), index=index)
    assert "link.txt: a link to" in r.out and "ingest that file by name" in r.out
    r = run_rag("search", "vault combination Mara Quist", "--json", index=index)
    assert all("secret" not in h["source"] for h in json.loads(r.out)["hits"])
    # by name it is indexed
    r = run_rag("ingest", str(docs / "link.txt"), "--json", index=index)
    assert r.code == 0 and json.loads(r.out)["documents_total"] == 2, r.out
    # ... as its target, which outlives the link: the user is told how to forget it
    assert "stays indexed when the link is removed" in r.err and "rag delete " in r.err
    (tmp_path / "latest").symlink_to(elsewhere / "secret.txt")  # a link with no extension
    r = run_rag("ingest", str(tmp_path / "latest"), "--json", index=index)
    assert r.code == 0 and json.loads(r.out)["unsupported"] == [], r.out
    assert [Path(s).name for s in json.loads(r.out)["unchanged"]] == ["secret.txt"]
    r = run_rag("ingest", str(docs / "loop.txt"), index=index)  # used to be a RuntimeError
    assert r.code == 2 and "is a link loop" in r.err and "unexpected" not in r.err, r.err


def test_sphinx_source_copies_are_left_out_and_said_so(tmp_path: Path) -> None:
    """A docs folder as Sphinx builds it: each page's reST source is in `_sources/` too. The
    copies are left out by default (reported, with the flag that indexes them), and an index
    that held them forgets them at the next ingest."""
    pydocs = ROOT / "evals" / "corpora" / "pydocs"
    docs = tmp_path / "html"
    for rel in ("library/heapq.html", "_sources/library/heapq.rst.txt"):
        (docs / rel).parent.mkdir(parents=True, exist_ok=True)
        (docs / rel).write_bytes((pydocs / rel).read_bytes())
    index = tmp_path / "idx"
    r = run_rag("ingest", str(docs), "--source-copies", "--json", index=index)
    assert r.code == 0, r.err
    assert len(json.loads(r.out)["added"]) == 2

    r = run_rag("ingest", str(docs), index=index)
    assert r.code == 0, r.err
    assert "removed: " in r.out and "heapq.rst.txt" in r.out
    assert "Left out 1 source copy of pages indexed as HTML" in r.out
    assert "rag ingest --source-copies" in r.out
    r = run_rag("search", "heap queue algorithm priority queue", "--json", index=index)
    sources = {h["source"] for h in json.loads(r.out)["hits"]}
    assert sources and all(s.endswith("library/heapq.html") for s in sources), sources
