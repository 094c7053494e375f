"""The `rag` command. Results go to stdout, logs and progress to stderr."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from .config import MODES, Settings
from .errors import RagError, UsageError

log = logging.getLogger("rag")


@dataclass
class Context:
    settings: Settings
    debug: bool

    def rag(self, **groups: dict[str, Any]) -> Any:
        from .pipeline import Rag

        return Rag(self.settings.with_(**groups) if groups else self.settings)


pass_ctx = click.make_pass_decorator(Context)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--index", "index_dir", type=click.Path(path_type=Path), envvar="RAG_INDEX",
              help="Index folder.  [default: ./index, env RAG_INDEX]")  # fmt: skip
@click.option("--chroma-url", help="Use a Chroma server (`chroma run`) at http://host:port.")
@click.option("--embed-model", help="Embedding model: minilm-int8 (bundled), or a folder with "
              "model.onnx + tokenizer.json, or a model name served at --embed-url.")  # fmt: skip
@click.option("--embed-url", help="OpenAI-compatible /v1 endpoint for embeddings.")
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
    verbose: int,
    debug: bool,
) -> None:
    """Ask questions about your documents; every answer cites its passages.

    \b
    Examples:
      rag ingest ~/papers/
      rag ask "What did Korea pledge to invest in the United States?"
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
    ctx.obj = Context(settings, debug)


# --- ingest ----------------------------------------------------------------------------


@cli.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--rebuild", is_flag=True, help="Delete the index and build it again from PATHS.")
@click.option("--chunk-size", type=click.IntRange(32, 512), help="Tokens per chunk [256].")
@click.option("--chunk-overlap", type=click.IntRange(0, 256), help="Overlap tokens [32].")
@click.option("--max-file-mb", type=click.FloatRange(0, None, min_open=True),
              help="Skip files larger than this [50].")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--verbose", "list_all", is_flag=True, help="List unchanged and unsupported files.")
@pass_ctx
def ingest(
    c: Context,
    paths: tuple[Path, ...],
    rebuild: bool,
    chunk_size: int | None,
    chunk_overlap: int | None,
    max_file_mb: float | None,
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
    if max_file_mb:
        groups["load"] = {"max_file_mb": max_file_mb}
    rag = c.rag(**groups)
    if rag.settings.chunk.overlap >= rag.settings.chunk.size // 2:
        raise UsageError("--chunk-overlap must be less than half of --chunk-size")
    with _progress() as progress:
        report = rag.ingest(list(paths), rebuild=rebuild, progress=progress)
    if as_json:
        _print_json(report.to_json())
    else:
        _print_report(report, list_all)
    if report.documents_total == 0:
        raise RagError(
            "no file could be indexed (see the reasons above); give files of a supported type: "
            "txt, md, html, pdf, docx"
        )


def _print_report(r: Any, list_all: bool) -> None:
    out = click.echo
    changed = len(r.added) + len(r.updated)
    out(
        f"Indexed {changed} file{'s' if changed != 1 else ''}: {len(r.added)} added, "
        f"{len(r.updated)} updated, {len(r.removed)} removed, {len(r.unchanged)} unchanged; "
        f"{r.chunks_added} chunks embedded, {r.chunks_removed} removed, in {r.seconds:.1f} s."
    )
    for label, items in (("added", r.added), ("updated", r.updated), ("removed", r.removed)):
        for s in items:
            out(f"  {label}: {_short(s)}")
    if list_all:
        for s in r.unchanged:
            out(f"  unchanged: {_short(s)}")
    if r.skipped:
        out(f"Skipped {len(r.skipped)} file{'s' if len(r.skipped) != 1 else ''}:")
        for sk in r.skipped:
            out(f"  {_short(sk.source)}: {sk.reason}")
    if r.unsupported:
        if list_all:
            out(f"Unsupported ({len(r.unsupported)}):")
            for s in r.unsupported:
                out(f"  {_short(s)}")
        else:
            out(f"Unsupported: {len(r.unsupported)} file(s) of other types (list them with --verbose).")
    out(f"Index: {r.documents_total} documents, {r.chunks_total} chunks.")


# --- search and ask --------------------------------------------------------------------


def _batch_questions(path: Path) -> list[dict[str, Any]]:
    rows = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise UsageError(f"cannot read {path}: {e.strerror or e}") from e
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise UsageError(f"{path}:{n}: not valid JSON ({e.msg}); one object per line") from e
        if not isinstance(row, dict) or not isinstance(row.get("question"), str):
            raise UsageError(f'{path}:{n}: each line needs {{"id": ..., "question": "..."}}')
        rows.append(row)
    return rows


def _questions(question: str | None, batch: Path | None) -> Iterator[tuple[Any, str]]:
    if batch is not None and question:
        raise UsageError("give a QUESTION or --batch FILE, not both")
    if batch is not None:
        for row in _batch_questions(batch):
            yield row.get("id"), row["question"]
    elif question:
        yield None, question
    else:
        raise UsageError('give a question, e.g. rag ask "What is this about?", or --batch FILE')


@cli.command()
@click.argument("question", required=False)
@click.option("-k", type=click.IntRange(1, 1000), default=10, show_default=True, help="Hits.")
@click.option("--mode", type=click.Choice(MODES), help="Retrieval mode [hybrid].")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--batch", type=click.Path(path_type=Path, dir_okay=False),
              help='JSONL file of {"id", "question"}: one JSON result per line, in order.')  # fmt: skip
@pass_ctx
def search(
    c: Context, question: str | None, k: int, mode: str | None, as_json: bool, batch: Path | None
) -> None:
    """Show the passages that best match QUESTION.

    \b
    Example:  rag search "Mutual Defense Treaty" -k 3
    """
    rag = c.rag()
    for qid, q in _questions(question, batch):
        hits = rag.search(q, k=k, mode=mode)  # type: ignore[arg-type]
        if as_json or batch is not None:
            out: dict[str, Any] = {"query": q, "hits": [h.to_json() for h in hits]}
            if batch is not None:
                out["id"] = qid
            _print_json(out, compact=batch is not None)
            continue
        if not hits:
            click.echo("No passages found.")
        for h in hits:
            where = _where(h.chunk)
            click.echo(click.style(f"[{h.rank}] {where}  score {h.score:.4f}", bold=True))
            click.echo(_indent(h.chunk.text))


@cli.command()
@click.argument("question", required=False)
@click.option("-k", type=click.IntRange(1, 50), help="Passages to answer from [5].")
@click.option("--mode", type=click.Choice(MODES), help="Retrieval mode [hybrid].")
@click.option("--json", "as_json", is_flag=True, help="Print the answer object as JSON.")
@click.option("--batch", type=click.Path(path_type=Path, dir_okay=False),
              help='JSONL file of {"id", "question"}: one JSON answer per line, in order.')  # fmt: skip
@pass_ctx
def ask(
    c: Context,
    question: str | None,
    k: int | None,
    mode: str | None,
    as_json: bool,
    batch: Path | None,
) -> None:
    """Answer QUESTION from the indexed documents, citing passages as [n].

    \b
    Example:  rag ask "What did Japan pledge to the United States?"
    """
    rag = c.rag()
    for qid, q in _questions(question, batch):
        if as_json or batch is not None:
            answer = rag.ask(q, k=k, mode=mode)
            out = answer.to_json()
            if batch is not None:
                out["id"] = qid
            _print_json(out, compact=batch is not None)
            continue
        answer = None
        for piece in rag.ask_stream(q, k=k, mode=mode):
            if isinstance(piece, str):
                click.echo(piece, nl=False)
                sys.stdout.flush()
            else:
                answer = piece
        click.echo()
        assert answer is not None
        _print_sources(answer)


def _print_sources(answer: Any) -> None:
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
        if cit.quote:
            click.echo(_indent(f"“{cit.quote}”", "      "))


# --- status ----------------------------------------------------------------------------


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_ctx
def status(c: Context, as_json: bool) -> None:
    """Documents, chunks, models and settings of the index."""
    info = c.rag().status()
    if as_json:
        _print_json(info)
        return
    emb, ch = info["embedding"] or {}, info["chunking"] or {}
    click.echo(f"Index:      {info['index']} (vectors: {info['chroma']})")
    click.echo(f"Documents:  {info['documents']}   chunks: {info['chunks']}   "
               f"skipped: {len(info['skipped'])}")  # fmt: skip
    click.echo(f"Embedding:  {emb.get('model')} ({emb.get('dim')} dimensions)")
    click.echo(f"Chunks:     {ch.get('size')} tokens, {ch.get('overlap')} overlap")
    r = info["settings"]["retrieve"]
    click.echo(f"Retrieval:  {r['mode']}, k={r['k']}, fused depth {r['candidates']}")
    llm = info["settings"]["answer"]
    click.echo(f"Answers:    {'LLM ' + (llm['llm_url'] or llm['llm_gguf']) if (llm['llm_url'] or llm['llm_gguf']) else 'extractive (no LLM configured)'}")
    click.echo(f"Roots:      {', '.join(info['roots']) or '-'}")
    click.echo("Versions:   " + ", ".join(f"{k} {v}" for k, v in (info["versions"] or {}).items()))
    for s in info["skipped"]:
        click.echo(f"  skipped {_short(s['source'])}: {s['reason']}")


# --- helpers ---------------------------------------------------------------------------


def _print_json(obj: Any, compact: bool = False) -> None:
    text = json.dumps(obj, ensure_ascii=False, indent=None if compact else 2, default=str)
    click.echo(text)


def _short(source: str) -> str:
    try:
        return str(Path(source).relative_to(Path.cwd()))
    except ValueError:
        return source


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
                unit = "chunks" if stage == "embed" else "files"
                bar = self.bars[stage] = tqdm(total=total, desc=stage, unit=unit, file=sys.stderr,
                                              leave=stage == "embed")  # fmt: skip
            bar.update(done - bar.n)

        return update

    def __exit__(self, *exc: object) -> None:
        for bar in self.bars.values():
            bar.close()


def main(argv: list[str] | None = None) -> int:
    """Entry point: one-line errors, exit codes, no traceback unless --debug."""
    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args
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
    except RagError as e:
        if debug:
            raise
        click.echo(f"error: {e}", err=True)
        return e.exit_code
    except KeyboardInterrupt:
        click.echo("interrupted: the index keeps what was finished; run the same command to "
                   "complete it", err=True)  # fmt: skip
        return 130
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
