"""The Gradio Blocks: Chat, Documents, Evaluation and Status tabs over one `Engine`."""

from __future__ import annotations

import html
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import gradio as gr

from ..config import MODES
from ..conversations import Conversations, add_feedback
from ..errors import IndexMissing, RagError
from ..types import Answer, Draft, IngestReport
from . import render
from .assets import COPY_JS, CSS, HEAD
from .engine import Engine, LLMChoice, check_llm
from .evaluation import evaluation_tab, refresh_datasets
from .handlers import NO_INDEX, guard, message, progress_bar
from .original import original_html

EXTRACTIVE = "Extractive (no LLM)"
CANCELLED = "(cancelled)"
# a new answer's sources are listed first: show them, not where the panel was scrolled to
SOURCES_TO_TOP = """() => { const s = document.getElementById("sources");
  if (s) s.scrollTop = 0; return []; }"""
# the delete confirmation sits below the documents table: bring it into view
SHOW_CONFIRM = """() => { const row = document.getElementById("confirm-delete");
  if (row) row.scrollIntoView({behavior: "smooth", block: "center"}); return []; }"""
# the browser asks before a saved conversation is deleted; Cancel sends CANCELLED instead
CONFIRM_CONVERSATION_DELETE = f"""
(cid, current) => [cid && !window.confirm("Delete this saved conversation?") ?
  "{CANCELLED}" : cid, current]
"""
ENDPOINT = "LLM endpoint"


def build_app(engine: Engine) -> gr.Blocks:
    s = engine.settings
    conversations = Conversations(s.store.index_dir)
    local = local_models(s.answer.llm_gguf)
    backends = [EXTRACTIVE, *local, ENDPOINT]
    configured = next((name for name, p in local.items() if p == s.answer.llm_gguf), None)
    default_backend = ENDPOINT if s.answer.llm_url else configured or EXTRACTIVE

    with gr.Blocks(title="rag — ask your documents", analytics_enabled=False) as demo:
        header = gr.Markdown("## rag — ask your documents", elem_id="header")

        with gr.Sidebar(label="Settings", open=True, width=290, elem_id="settings") as sidebar:
            gr.Markdown("### Chat settings\n#### Retrieval")
            mode = gr.Radio(
                ["hybrid", "dense", "keyword"],
                value=s.retrieve.mode,
                label="Mode",
                info="hybrid = meaning + exact words",
            )
            k = gr.Slider(1, 20, value=s.retrieve.k, step=1, label="Passages to answer from")
            search_in = gr.Dropdown(
                [],
                value=[],
                multiselect=True,
                label="Search in",
                info="empty = every document",
                elem_id="search-in",
            )
            gr.Markdown("#### Answers")
            backend = gr.Radio(backends, value=default_backend, label="Answer with")
            llm_url = gr.Textbox(
                s.answer.llm_url or "",
                label="Endpoint URL",
                placeholder="http://127.0.0.1:8080/v1",
                visible=default_backend == ENDPOINT,
            )
            llm_model = gr.Textbox(
                s.answer.llm_model or "",
                label="Model",
                placeholder="as the endpoint names it",
                visible=default_backend == ENDPOINT,
            )
            llm_check = gr.Button(
                "Check connection", size="sm", visible=default_backend == ENDPOINT
            )
            llm_status = gr.Markdown("", elem_classes="llm-status")
            expand = gr.Checkbox(
                s.retrieve.expand,
                label="Search also for the model's guess",
                info="the model writes a likely answer first and the search looks for it "
                "too: finds passages asked about in other words (~8 s more on 2 cores)",
                visible=default_backend != EXTRACTIVE,
                elem_id="expand",
            )
            gr.Markdown("#### Conversations")
            conv_pick = gr.Dropdown(
                _conversation_choices(engine),
                value=None,
                label="Saved conversations",
                info="every conversation is saved in the index folder",
                elem_id="conv-pick",
            )
            with gr.Row():
                conv_open = gr.Button("Open", size="sm", elem_id="conv-open")
                conv_delete = gr.Button("Delete", size="sm", variant="stop", elem_id="conv-delete")

        with gr.Tabs():
            with gr.Tab("Chat", id="chat-tab") as chat_tab:
                with gr.Row(equal_height=False):
                    with gr.Column(scale=5, min_width=300):
                        chat = gr.Chatbot(
                            elem_id="chat",
                            label="Conversation",
                            show_label=False,
                            height=500,
                            latex_delimiters=[],
                            feedback_options=("Like", "Dislike"),
                            buttons=["copy", "copy_all"],
                            placeholder="Ask about your documents. Every answer cites its "
                            "passages: click a [1] to read it.",
                        )
                        with gr.Row(elem_id="ask-row"):
                            question = gr.Textbox(
                                elem_id="question",
                                show_label=False,
                                container=False,
                                scale=8,
                                placeholder="Ask a question… (Enter to send)",
                                max_lines=6,
                                autofocus=True,
                            )
                            ask = gr.Button(
                                "Ask", variant="primary", scale=1, min_width=70, elem_id="ask"
                            )
                        with gr.Row():
                            copy = gr.Button("Copy answer as Markdown", size="sm", elem_id="copy")
                            clear = gr.Button("New conversation", size="sm", elem_id="clear")
                        with gr.Row():
                            feedback_note = gr.Textbox(
                                label="Note for Like / Dislike (optional): what was wrong",
                                max_lines=3,
                                elem_id="feedback-note",
                            )
                            feedback_right = gr.Textbox(
                                label="The right answer, if you know it (becomes the "
                                "reference of an eval question)",
                                max_lines=3,
                                elem_id="feedback-right",
                            )
                        feedback_status = gr.Markdown(elem_id="feedback-status")
                    with gr.Column(scale=4, min_width=300), gr.Tabs() as side_tabs:
                        with gr.Tab("Sources", id="sources-tab"):
                            sources = gr.HTML(render.sources_html([]), elem_id="sources")
                        with gr.Tab("Original", id="original-tab"):
                            original = gr.HTML(
                                '<p class="note">Click "open the original" on a passage to '
                                "read it in its document.</p>",
                                elem_id="original",
                            )
                open_request = gr.Textbox(visible="hidden", elem_id="open-request")
                answer_md = gr.Textbox(visible="hidden", elem_id="answer-md")
                turns = gr.State([])
                history = gr.State([])
                conv_id = gr.State("")

            with gr.Tab("Documents", id="docs-tab") as docs_tab:
                gr.Markdown(
                    f"Uploaded files are stored in `{engine.docs_dir}` and indexed. Types: "
                    f"{', '.join(sorted(_supported()))}; up to {s.load.max_file_mb:g} MB each."
                )
                with gr.Row(equal_height=False):
                    with gr.Column(scale=2, min_width=280):
                        uploads = gr.File(
                            file_count="multiple",
                            file_types=sorted(_supported()),
                            label="Add documents",
                            elem_id="uploads",
                            height=160,
                        )
                        add = gr.Button("Add and index", variant="primary", elem_id="add")
                    with gr.Column(scale=3, min_width=280):
                        docs_result = gr.Markdown(elem_id="docs-result")
                docs_table = gr.Dataframe(
                    headers=["Title", "File", "Folder", "Status", "Chunks", "Note"],
                    datatype=["str", "str", "str", "str", "number", "str"],
                    interactive=False,
                    elem_id="documents",
                    label="Indexed documents",
                    wrap=True,
                )
                with gr.Row():
                    doc_pick = gr.Dropdown(
                        [],
                        label="Document (or click its row)",
                        scale=3,
                        min_width=260,
                        elem_id="doc-pick",
                    )
                    with gr.Column(scale=1, min_width=160):
                        delete = gr.Button("Delete document", variant="stop", elem_id="delete")
                        reindex = gr.Button("Re-index all", elem_id="reindex")
                with gr.Row(visible=False, elem_id="confirm-delete") as confirm_row:
                    confirm_text = gr.Markdown(elem_id="confirm-text")
                    confirm = gr.Button("Yes, delete it", variant="stop", elem_id="confirm",
                                        scale=0, min_width=140)  # fmt: skip
                    cancel = gr.Button("Cancel", elem_id="cancel", scale=0, min_width=100)
                doc_order = gr.State([])

            with gr.Tab("Evaluation", id="eval-tab") as eval_tab:
                eval_dataset = evaluation_tab(
                    engine, mode_default=s.retrieve.mode, k_default=s.retrieve.k
                )
            eval_tab.select(lambda current: refresh_datasets(engine, current), eval_dataset,
                            eval_dataset, api_name=False)  # fmt: skip

            with gr.Tab("Status", id="status-tab") as status_tab:
                status_md = gr.Markdown(elem_id="status")
                status_json = gr.JSON(label="All details", open=False)
                refresh = gr.Button("Refresh", size="sm")

        # the chat's settings show only with the chat
        for tab, show in (
            (chat_tab, True),
            (docs_tab, False),
            (eval_tab, False),
            (status_tab, False),
        ):
            tab.select(
                lambda show=show: gr.update(visible=show),
                None,
                sidebar,
                api_name=False,
                show_progress="hidden",
                queue=False,
            )

        # --- chat --------------------------------------------------------------------------

        def respond(
            q: str,
            msgs: list,
            turns_: list,
            hist: list,
            mode_: str,
            k_: float,
            backend_: str,
            url: str,
            model: str,
            only: list[str] | None,
            cid: str,
            expand_: bool = False,
        ) -> Iterator[tuple[Any, ...]]:
            skip2 = (gr.skip(), gr.skip())  # the conversation id and the saved list
            q = (q or "").strip()
            if not q:
                gr.Warning("Type a question first.")
                yield (gr.skip(),) * 8
                return
            llm = _llm_choice(backend_, url, model, local)
            msgs = [
                *msgs,
                {"role": "user", "content": render.plain(q)},
                {"role": "assistant", "content": "*Searching the documents…*"},
            ]
            yield "", msgs, gr.skip(), gr.skip(), gr.skip(), gr.skip(), *skip2
            answer: Answer | None = None
            text = ""
            try:
                for piece in engine.ask_stream(q, k=int(k_), mode=mode_, llm=llm, history=hist,
                                               sources=list(only) or None,
                                               expand=bool(expand_) and llm.writes,
                                               ):  # fmt: skip
                    if isinstance(piece, Answer):
                        answer = piece
                        continue
                    if isinstance(piece, Draft):  # the quoted answer, at once
                        msgs[-1] = {"role": "assistant", "content": render.draft_html(piece.answer)}
                        yield gr.skip(), msgs, gr.skip(), gr.skip(), gr.skip(), gr.skip(), *skip2
                        continue
                    text += piece
                    msgs[-1] = {"role": "assistant", "content": render.streaming_text(text)}
                    yield gr.skip(), msgs, gr.skip(), gr.skip(), gr.skip(), gr.skip(), *skip2
            except Exception as e:
                text = message(e)
                msgs[-1] = {"role": "assistant", "content": f"⚠ {render.plain(text)}"}
                gr.Warning(text)
                yield gr.skip(), msgs, gr.skip(), gr.skip(), gr.skip(), gr.skip(), *skip2
                return
            assert answer is not None, "the answerer ended without an Answer"
            turn = len(turns_) + 1
            turns_ = [*turns_, (turn, answer)]
            msgs[-1] = {"role": "assistant", "content": render.answer_html(answer, turn)}
            hist = [
                *hist,
                {"role": "user", "content": q},
                {"role": "assistant", "content": answer.answer},
            ]
            # saved after every answer: reopened later from the list
            cid = cid or conversations.new_id()
            try:
                conversations.save(cid, [a for _, a in turns_])
                saved_list: Any = gr.update(choices=_conversation_choices(engine), value=cid)
            except OSError as e:  # a read-only index still answers
                gr.Warning(f"could not save the conversation ({e})")
                saved_list = gr.skip()
            yield (
                gr.skip(),
                msgs,
                render.sources_html(turns_, _titles(engine, turns_)),
                turns_,
                hist,
                render.answer_markdown(answer),
                cid,
                saved_list,
            )

        ask_inputs = [question, chat, turns, history, mode, k, backend, llm_url, llm_model,
                      search_in, conv_id, expand]  # fmt: skip
        ask_outputs = [question, chat, sources, turns, history, answer_md, conv_id, conv_pick]
        for trigger in (question.submit, ask.click):
            trigger(
                respond,
                ask_inputs,
                ask_outputs,
                concurrency_limit=4,
                concurrency_id="ask",
                api_name=False,
            ).then(None, js=SOURCES_TO_TOP)
        configured = LLMChoice(
            s.answer.llm_url,
            s.answer.llm_model,
            str(s.answer.llm_gguf) if s.answer.llm_gguf else None,
        )
        gr.api(_api_ask(engine, configured), api_name="ask")
        copy.click(None, [answer_md], None, js=COPY_JS)

        def open_original(request: str) -> tuple[Any, Any]:
            """The cited passage inside its document (only documents in the index)."""
            import json

            try:
                r = json.loads(request)
                source = str(r["source"])
            except (ValueError, KeyError, TypeError):
                return gr.skip(), gr.skip()
            row = engine.files().get(source)
            if row is None or row.status != "indexed":
                body = '<p class="note">That document is not in the index.</p>'
            else:
                page = r.get("page")
                body = original_html(source, int(r["start"]), int(r["end"]),
                                     int(page) if page is not None else None,
                                     str(r.get("quote") or ""))  # fmt: skip
            return body, gr.Tabs(selected="original-tab")

        open_request.change(open_original, open_request, [original, side_tabs], api_name=False)

        def new_conversation() -> tuple[Any, ...]:
            return [], render.sources_html([]), [], [], "", "", gr.update(value=None)

        # the chat's own trash button too: the sources and the history go with the messages
        conv_outputs = [chat, sources, turns, history, answer_md, conv_id, conv_pick]
        for trigger in (clear.click, chat.clear):
            trigger(new_conversation, None, conv_outputs, api_name=False)

        def regenerate(msgs: list, turns_: list, hist: list, *rest: Any) -> Iterator[Any]:
            """Ask the last question again (the chat's retry button)."""
            if not turns_:
                yield (gr.skip(),) * 8
                return
            last = turns_[-1][1]
            yield from respond(last.question, msgs[:-2], turns_[:-1], hist[:-2], *rest)

        chat.retry(regenerate, [chat, turns, history, *ask_inputs[4:]], ask_outputs,
                   concurrency_limit=4, concurrency_id="ask", api_name=False)  # fmt: skip

        @guard(outputs=7, message_at=4)
        def open_conversation(cid: str | None) -> tuple[Any, ...]:
            if not cid:
                raise gr.Error("Pick a saved conversation first.")
            conv = conversations.load(cid)
            turns_ = list(enumerate(conv.answers, start=1))
            msgs: list[dict[str, str]] = []
            for n, a in turns_:
                msgs += [{"role": "user", "content": render.plain(a.question)},
                         {"role": "assistant", "content": render.answer_html(a, n)}]  # fmt: skip
            md = render.answer_markdown(conv.answers[-1]) if conv.answers else ""
            panel = render.sources_html(turns_, _titles(engine, turns_))
            return msgs, panel, turns_, conv.history(), md, cid, gr.skip()

        conv_open.click(open_conversation, conv_pick, conv_outputs, api_name=False)

        def delete_conversation(cid: str | None, current: str) -> tuple[Any, ...]:
            if cid == CANCELLED:
                return gr.skip(), gr.skip()
            if not cid:
                gr.Warning("Pick a saved conversation first.")
                return gr.skip(), gr.skip()
            conversations.delete(cid)
            choices = _conversation_choices(engine)
            return gr.update(choices=choices, value=None), "" if cid == current else current

        conv_delete.click(delete_conversation, [conv_pick, conv_id], [conv_pick, conv_id],
                          js=CONFIRM_CONVERSATION_DELETE, api_name=False)  # fmt: skip

        def rate(
            turns_: list, cid: str, note: str, right: str, evt: gr.LikeData
        ) -> tuple[str, str, str]:
            """👍/👎 on an answer: stored with the note (index/feedback.jsonl)."""
            index = evt.index[0] if isinstance(evt.index, list | tuple) else evt.index
            turn = int(index) // 2 + 1  # messages alternate: question, answer
            answer = dict(turns_).get(turn)
            if answer is None:
                return gr.skip(), gr.skip(), gr.skip()
            good = bool(evt.liked)
            add_feedback(engine.settings.store.index_dir, answer, good, note or "", cid or None,
                         right=right or "")  # fmt: skip
            thanks = "👍 saved" if good else "👎 saved"
            return (
                f"{thanks} for answer {turn}; export it as eval questions with "
                "`rag feedback export`.",
                "",
                "",
            )

        chat.like(rate, [turns, conv_id, feedback_note, feedback_right],
                  [feedback_status, feedback_note, feedback_right], api_name=False)  # fmt: skip

        def check(backend_: str, url: str) -> str:
            """Whether the chosen answerer can be reached (a quick GET {url}/models)."""
            if backend_ == EXTRACTIVE:
                return ""
            if backend_ != ENDPOINT:
                return "Local model: llama-server starts at the first question."
            if not url.strip():
                return '<span class="bad">Enter the endpoint URL first.</span>'
            ok, text = check_llm(url, s.answer.api_key)
            css = "ok" if ok else "bad"
            return f'<span class="{css}">{"●" if ok else "○"} {html.escape(text)}</span>'

        def pick_backend(choice: str, url: str) -> tuple[Any, ...]:
            show = gr.update(visible=choice == ENDPOINT)
            guess = gr.update(visible=choice != EXTRACTIVE)  # only a model can guess
            return show, show, show, check(choice, url), guess

        backend.change(
            pick_backend,
            [backend, llm_url],
            [llm_url, llm_model, llm_check, llm_status, expand],
            api_name=False,
        )
        for trigger in (llm_check.click, llm_url.submit, demo.load):
            trigger(check, [backend, llm_url], llm_status, api_name=False)

        # --- documents ---------------------------------------------------------------------

        def documents() -> tuple[Any, ...]:
            """The documents table, the delete menu, the header and the Status tab, refreshed."""
            files, titles = engine.files(), engine.titles()
            rows, order = render.documents_rows(files, engine.docs_dir, titles)
            choices = [(f"{Path(src).name} — {Path(src).parent}", src) for src in order]
            indexed = [src for src in order if files[src].status == "indexed"]
            # chosen documents stay chosen while they are indexed
            searchable = [(render.doc_label(src, titles.get(src)), src) for src in indexed]
            info = _index_info(engine)
            return (
                rows,
                gr.update(choices=choices, value=None),
                gr.update(choices=searchable),
                order,
                _header(info),
                *_status(info, engine.docs_dir),
            )

        docs_outputs = [docs_table, doc_pick, search_in, doc_order, header, status_md, status_json]

        def pick_row(order: list[str], evt: gr.SelectData) -> Any:
            row = evt.index[0] if isinstance(evt.index, list | tuple) else evt.index
            return order[row] if 0 <= row < len(order) else gr.skip()

        docs_table.select(pick_row, doc_order, doc_pick, api_name=False)

        @guard(outputs=9)
        def add_files(
            files: list[str] | None,
            progress: Any = gr.Progress(),  # noqa: B008
        ) -> tuple[Any, ...]:
            if not files:
                raise gr.Error("Choose one or more files first.")
            saved, refused = engine.save_uploads(files)
            report = None
            if saved:
                report = engine.ingest_docs(progress_bar(progress))
            return (_ingest_summary(report, saved, refused), None, *documents())

        add.click(
            add_files,
            uploads,
            [docs_result, uploads, *docs_outputs],
            concurrency_id="write",
            concurrency_limit=1,
            api_name="add_documents",
        )

        @guard(outputs=3)
        def ask_to_delete(source: str | None) -> tuple[Any, ...]:
            if not source:
                raise gr.Error("Pick a document to delete first.")
            inside = Path(source).parent == engine.docs_dir.resolve()
            what = "the uploaded file too" if inside else "not the file itself (it stays on disk)"
            text = (
                f"**Delete {html.escape(Path(source).name)}** from the index? Its passages go, "
                f"and {what}; re-indexing leaves it out."
            )
            return "", text, gr.update(visible=True)

        delete.click(ask_to_delete, doc_pick, [docs_result, confirm_text, confirm_row],
                     api_name=False).then(None, js=SHOW_CONFIRM)  # fmt: skip
        cancel.click(lambda: gr.update(visible=False), None, confirm_row, api_name=False)

        @guard(outputs=9)
        def delete_doc(source: str | None) -> tuple[Any, ...]:
            if not source:
                raise gr.Error("Pick a document to delete first.")
            return (engine.delete(source), gr.update(visible=False), *documents())

        confirm.click(
            delete_doc,
            doc_pick,
            [docs_result, confirm_row, *docs_outputs],
            concurrency_id="write",
            concurrency_limit=1,
            api_name=False,
        )

        @guard(outputs=8)
        def reindex_all(progress: Any = gr.Progress()) -> tuple[Any, ...]:  # noqa: B008
            report = engine.reindex(progress_bar(progress))
            return (_ingest_summary(report, [], []), *documents())

        reindex.click(
            reindex_all,
            None,
            [docs_result, *docs_outputs],
            concurrency_id="write",
            concurrency_limit=1,
            api_name=False,
        )

        # --- status ------------------------------------------------------------------------

        @guard(outputs=2)
        def status() -> tuple[str, Any]:
            return _status(_index_info(engine), engine.docs_dir)

        refresh.click(status, None, [status_md, status_json], api_name="status")

        demo.load(guard(outputs=7, message_at=4)(documents), None, docs_outputs, api_name=False)
    return demo


def mount(app: Any, engine: Engine, api_key: str | None) -> Any:
    """The Gradio app on `app` (the API's FastAPI) at /: one server, one port. With a key,
    the page asks for it (any user name, the key as the password)."""
    import hmac

    demo = build_app(engine)
    demo.queue(default_concurrency_limit=4, max_size=64)
    auth = None
    if api_key:
        key = api_key.encode()

        def auth(user: str, password: str) -> bool:
            return hmac.compare_digest(password.encode(), key)

    return gr.mount_gradio_app(
        app,
        demo,
        path="/",
        server_name=None,  # type: ignore[arg-type]
        footer_links=["api"],
        auth=auth,
        auth_message="This rag is protected by a key: any user name, the key as password."
        if api_key
        else None,
        show_error=True,
        max_file_size=f"{int(engine.settings.load.max_file_mb * 1024)}kb",
        ssr_mode=False,
        mcp_server=False,
        pwa=False,
        theme=gr.themes.Default(),
        css=CSS,
        head=HEAD,
    )


def configured_llm(settings: Any) -> LLMChoice:
    """The answerer `rag serve` was started with (the API's model "rag")."""
    a = settings.answer
    return LLMChoice(a.llm_url, a.llm_model, str(a.llm_gguf) if a.llm_gguf else None)


# --- helpers ---------------------------------------------------------------------------


def _titles(engine: Engine, turns: list[tuple[int, Answer]]) -> dict[str, str]:
    """source → the title to show, for the passages of these turns; none when the index
    cannot be read (the panel then names passages by their chunks' titles)."""
    sources = {c.hit.chunk.source for _, a in turns for c in a.citations}
    sources |= {h.chunk.source for _, a in turns for h in a.hits}
    sources |= {s for _, a in turns for s in a.searched or ()}
    try:
        return engine.titles(sorted(sources))
    except RagError:
        return {}


def _conversation_choices(engine: Engine) -> list[tuple[str, str]]:
    import time

    return [
        (f"{title} · {time.strftime('%d %b %H:%M', time.localtime(when))}", cid)
        for cid, title, when in Conversations(engine.settings.store.index_dir).list()
    ]


def local_models(configured: Path | None) -> dict[str, Path]:
    """The local models the app offers, by label: the bundled ones that are installed
    (`rag models install`), and the GGUF the app was started with."""
    from .. import models

    out = {f"Local: {m.title}": models.model_path(m.name)
           for m in models.MODELS.values() if models.installed(m.name)}  # fmt: skip
    if configured is not None and Path(configured) not in out.values():
        out[f"Local model ({Path(configured).name})"] = Path(configured)
    return out


def _llm_choice(backend: str, url: str, model: str, local: dict[str, Path]) -> LLMChoice:
    if backend == ENDPOINT:
        if not url.strip():
            gr.Warning("No endpoint URL is set: answering extractively.")
            return LLMChoice()
        return LLMChoice(url=url.strip(), model=model.strip() or None)
    if backend in local:
        return LLMChoice(gguf=str(local[backend]))
    return LLMChoice()


def _api_ask(engine: Engine, llm: LLMChoice) -> Callable[..., dict[str, Any]]:
    def ask(question: str, k: int = 5, mode: str = "hybrid") -> dict[str, Any]:
        """Answer a question from the documents, as `rag ask --json` does."""
        if mode not in MODES:
            raise gr.Error(f"mode must be one of {', '.join(MODES)}")
        answer = None
        try:
            for piece in engine.ask_stream(question, k=int(k), mode=mode, llm=llm):  # type: ignore[arg-type]
                if isinstance(piece, Answer):
                    answer = piece
        except Exception as e:
            raise gr.Error(message(e)) from None
        assert answer is not None
        return answer.to_json()

    return ask


def _index_info(engine: Engine) -> dict[str, Any] | None:
    """Rag.status(), or None while there is no index."""
    try:
        return engine.status()
    except IndexMissing:
        return None


def _status(info: dict[str, Any] | None, docs_dir: Path) -> tuple[str, Any]:
    if info is None:
        return NO_INDEX, {}
    return render.status_markdown(info, docs_dir), info


def _header(info: dict[str, Any] | None) -> str:
    if info is None:
        return f"## rag — ask your documents\n{NO_INDEX}"
    return (
        f"## rag — ask your documents\n{info['documents']} documents · {info['chunks']} passages"
        f" · index `{info['index']}`"
    )


def _ingest_summary(report: IngestReport | None, saved: list[Any], refused: list[str]) -> str:
    lines = []
    if report is not None:
        changed = len(report.added) + len(report.updated)
        lines.append(
            f"**Indexed {changed} file{'s' if changed != 1 else ''}** in {report.seconds:.1f} s: "
            f"{_count(report.chunks_added, 'passage')} added, {report.chunks_removed} removed; "
            f"{len(report.unchanged)} unchanged."
        )
        for label, items in (
            ("added", report.added),
            ("updated", report.updated),
            ("removed", report.removed),
        ):
            lines += [f"- {label}: {Path(x).name}" for x in items]
        earlier = set(report.skipped_before)
        lines += [
            f"- **skipped** {Path(x.source).name}: {x.reason}"
            for x in report.skipped
            if x.source not in earlier
        ]
        if earlier:
            lines.append(f"{len(earlier)} file(s) skipped before are unchanged (see Status).")
        if report.excluded:
            lines.append(f"{len(report.excluded)} document(s) you deleted were left out.")
        if report.copies:
            one = len(report.copies) == 1
            lines.append(
                f"Left out {len(report.copies)} `_sources/` cop{'y' if one else 'ies'} of "
                f"page{'' if one else 's'} indexed as HTML (the same text in reST markup)."
            )
    replaced = [x.name for x in saved if x.replaced]
    if replaced:
        lines.append(f"Replaced the earlier version of: {', '.join(replaced)}.")
    lines += [f"- **not added** {r}" for r in refused]
    return "\n".join(lines) or "Nothing to do."


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _supported() -> set[str]:
    from ..loaders import SUPPORTED

    return set(SUPPORTED)
