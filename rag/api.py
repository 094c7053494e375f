"""`rag` as a service: an OpenAI-compatible API with citations, on the app's own port.

`/v1/chat/completions` takes OpenAI's request and answers in its shapes (plain and as
server-sent events), with `citations` and `refused` beside `choices`; `/v1/models`,
`/v1/embeddings` (the index's embedder, for `--embed-url` elsewhere), `/v1/search`,
`/v1/documents`, `/v1/status`; `/healthz` outside `/v1`. With a key
(`RAG_API_KEY` or `--api-key`) every `/v1` request needs `Authorization: Bearer KEY`.
Errors are OpenAI-style JSON whose message is the one-line fix. The work runs on the
app's `Engine` (its thread pools and shared models); a bounded number of requests run at
once, the rest get 503 with Retry-After.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import tempfile
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, File, Request, UploadFile
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from pydantic import BaseModel, Field
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool

from .errors import (
    EmbeddingError,
    IndexDamaged,
    IndexMismatch,
    IndexMissing,
    LLMError,
    RagError,
    StoreError,
    UsageError,
)
from .types import Answer
from .ui.engine import Engine, LLMChoice, safe_name

# requests admitted at once (answered by the app's thread pools, the rest waiting their
# turn); past that, 503 with Retry-After rather than an unbounded queue
MAX_QUEUE = 32


class ApiError(Exception):
    def __init__(self, status: int, message: str, kind: str = "invalid_request_error",
                 headers: dict[str, str] | None = None) -> None:  # fmt: skip
        super().__init__(message)
        self.status, self.message, self.kind, self.headers = status, message, kind, headers


def _error_of(e: BaseException) -> ApiError:
    if isinstance(e, ApiError):
        return e
    if isinstance(e, UsageError):
        return ApiError(400, str(e))
    if isinstance(e, IndexMissing):
        return ApiError(409, str(e), "index_missing")
    if isinstance(e, (IndexDamaged, IndexMismatch)):  # the message names the command that fixes it
        return ApiError(409, str(e), "index_unusable")
    if isinstance(e, (StoreError, LLMError, EmbeddingError)):
        return ApiError(503, str(e), "service_unavailable")
    if isinstance(e, RagError):
        return ApiError(500, str(e), "rag_error")
    return ApiError(500, f"unexpected {type(e).__name__}: {e}", "internal_error")


def error_response(e: ApiError) -> JSONResponse:
    body = {"error": {"message": e.message, "type": e.kind, "code": e.status}}
    return JSONResponse(body, status_code=e.status, headers=e.headers)


# --- requests ------------------------------------------------------------------------------


class Message(BaseModel):
    role: str
    content: str | list[dict[str, Any]] | None = None

    def text(self) -> str:
        if isinstance(self.content, list):  # OpenAI's content parts: the text ones
            return " ".join(str(p.get("text", "")) for p in self.content if p.get("type") == "text")
        return self.content or ""


class ChatRequest(BaseModel):
    model: str = "rag"
    messages: list[Message]
    stream: bool = False
    # rag's own, optional: how many passages, which retrieval mode, which documents, and
    # whether to search also for the model's guess at the answer (default: RAG_EXPAND)
    k: int | None = Field(default=None, ge=1, le=50)
    mode: str | None = None
    sources: list[str] | None = None
    expand: bool | None = None


class SearchRequest(BaseModel):
    query: str
    k: int = Field(default=10, ge=1, le=1000)
    mode: str | None = None
    sources: list[str] | None = None


class EmbeddingsRequest(BaseModel):
    input: str | list[str]
    model: str | None = None  # the embedder's name (GET /v1/models); none: the embedder
    encoding_format: str = "float"  # or "base64" (little-endian float32), the client's default
    dimensions: int | None = None  # only the model's own


MAX_EMBED_INPUTS = 2048  # texts per /v1/embeddings request, as OpenAI's API allows


# --- the app -------------------------------------------------------------------------------


def build_api(engine: Engine, *, api_key: str | None, configured: LLMChoice,
              local: dict[str, Path]) -> FastAPI:  # fmt: skip
    """The FastAPI app: /v1 and /healthz (Gradio is mounted on it by `ui.serve`)."""
    app = FastAPI(
        title="rag API",
        version="1",
        description="Cited answers from your documents, OpenAI-compatible.",
        docs_url=None,  # Swagger's page loads its assets from a CDN: ours is /v1/docs
        redoc_url=None,
        openapi_url="/v1/openapi.json",
    )
    app.state.in_flight = 0  # requests admitted and not yet finished
    admit_lock = threading.Lock()
    models = _models(configured, local)

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, e: ApiError) -> JSONResponse:
        return error_response(e)

    @app.exception_handler(RagError)
    async def _rag_error(request: Request, e: RagError) -> JSONResponse:
        return error_response(_error_of(e))

    @app.exception_handler(Exception)  # a bug: still OpenAI-style JSON, not a bare page
    async def _unexpected(request: Request, e: Exception) -> JSONResponse:
        return error_response(_error_of(e))

    from fastapi.exceptions import RequestValidationError

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, e: RequestValidationError) -> JSONResponse:
        first = e.errors()[0] if e.errors() else {}
        where = ".".join(str(x) for x in first.get("loc", ()) if x != "body")
        return error_response(ApiError(400, f"bad request: {where}: {first.get('msg', e)}"))

    def check_key(request: Request) -> None:
        if not api_key:
            return
        given = request.headers.get("authorization", "")
        token = given[7:] if given.lower().startswith("bearer ") else ""
        if not hmac.compare_digest(token.encode(), api_key.encode()):
            raise ApiError(401, "a valid API key is required: send `Authorization: Bearer "
                           "KEY` (the key `rag serve` was started with)",
                           "invalid_api_key")  # fmt: skip

    def slot() -> Callable[[], None]:
        with admit_lock:
            if app.state.in_flight >= MAX_QUEUE:
                raise ApiError(503, f"busy: {MAX_QUEUE} requests are being answered or "
                               "waiting; retry in a few seconds", "server_busy",
                               {"Retry-After": "2"})  # fmt: skip
            app.state.in_flight += 1

        done = [False]

        def release() -> None:  # once, however the request ends
            with admit_lock:
                if not done[0]:
                    done[0] = True
                    app.state.in_flight -= 1

        return release

    v1 = APIRouter(prefix="/v1", dependencies=[Depends(check_key)])

    @app.get("/healthz", response_model=None)
    def healthz() -> dict[str, Any] | JSONResponse:
        try:
            n = len([f for f in engine.files().values() if f.status == "indexed"])
        except (IndexDamaged, IndexMismatch):  # up, but no question can be answered
            # no key is needed here: the fix (it names paths) is on /v1/status
            return JSONResponse({"ok": False, "documents": 0, "error": "index_unusable: see "
                                 "/v1/status or run `rag doctor`"}, status_code=503)  # fmt: skip
        except RagError:
            n = 0
        return {"ok": True, "documents": n}

    @v1.get("/models")
    def list_models() -> dict[str, Any]:
        names = list(models)
        # an --embed-url that is down leaves it out: the chat models still answer
        with contextlib.suppress(RagError):
            names.append(engine.embedder().name)  # last: clients take the first for chat
        return {"object": "list", "data": [
            {"id": name, "object": "model", "created": 0, "owned_by": "rag"} for name in names
        ]}  # fmt: skip

    @v1.post("/embeddings")
    def embeddings(req: EmbeddingsRequest) -> dict[str, Any]:
        """The index's own embedder as an OpenAI-compatible endpoint: another machine can
        ingest with `rag ingest --embed-url http://THIS-HOST:PORT/v1`. Texts past the
        model's 256 tokens are cut, as when rag embeds its chunks."""
        texts = [req.input] if isinstance(req.input, str) else req.input
        if not texts or not all(texts):
            raise ApiError(400, "`input` must be a text or a list of texts, none of them empty")
        if len(texts) > MAX_EMBED_INPUTS:
            raise ApiError(400, f"`input` holds {len(texts)} texts, more than "
                           f"{MAX_EMBED_INPUTS}: send them in batches")  # fmt: skip
        if req.encoding_format not in ("float", "base64"):
            raise ApiError(400, f"encoding_format {req.encoding_format!r}: use float or base64")
        embedder = engine.embedder()
        name = embedder.name
        if req.model not in (None, "", name):
            raise ApiError(404, f"no embedding model {req.model!r}: this server embeds with "
                           f"{name!r}", "model_not_found")  # fmt: skip
        if req.dimensions not in (None, embedder.dim):
            dim = embedder.dim
            raise ApiError(400, f"dimensions {req.dimensions}: {name} makes {dim}-d vectors "
                           f"only; send {dim} or leave `dimensions` out")  # fmt: skip
        # the model reads 256 tokens: a longer text is cut here, before tokenizing all of it
        texts = [t[: embedder.max_tokens * 16] for t in texts]
        release = slot()
        try:
            vectors, tokens = engine.run("ask", lambda _: _embed(embedder, texts))
        finally:
            release()
        return {"object": "list", "model": name,
                "data": [{"object": "embedding", "index": i, "embedding": _encoded(v, req)}
                         for i, v in enumerate(vectors)],
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}  # fmt: skip

    @v1.post("/chat/completions", response_model=None)
    async def chat_completions(req: ChatRequest) -> Any:
        llm = models.get(req.model)
        if llm is None:
            raise ApiError(404, f"no model {req.model!r}: use one of {', '.join(models)}",
                           "model_not_found")  # fmt: skip
        users = [m for m in req.messages if m.role == "user"]
        if not users or not users[-1].text().strip():
            raise ApiError(400, "the last message must be the user's question")
        last = max(i for i, m in enumerate(req.messages) if m.role == "user")
        question = req.messages[last].text()
        history = [{"role": m.role, "content": m.text()} for m in req.messages[:last]
                   if m.role in ("user", "assistant")]  # fmt: skip
        mode = req.mode or engine.settings.retrieve.mode
        k = req.k or engine.settings.retrieve.k
        # before any LLM call (condense, expand); the catalog is read off the event loop
        await run_in_threadpool(_check_search, engine, mode, req.sources)
        if req.expand and not llm.writes:
            writers = [name for name, m in models.items() if m.writes]
            fix = (f"use one of {', '.join(writers)}, or leave expand out" if writers
                   else "install a model (`rag models install local-small`) and start "
                   "rag serve with --llm local-small, or with --llm-url URL; "
                   "or leave expand out")  # fmt: skip
            raise ApiError(400, "expand needs a model that writes the answer (it writes the "
                           f"guess that is searched for): {fix}")  # fmt: skip
        release = slot()
        rid, created = f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time())

        def answer() -> Answer:
            final = None
            for piece in engine.ask_stream(question, k=k, mode=mode, llm=llm,  # type: ignore[arg-type]
                                           history=history, sources=req.sources,
                                           expand=req.expand):  # fmt: skip
                if isinstance(piece, Answer):
                    final = piece
            assert final is not None
            return final

        if not req.stream:
            try:
                a = await run_in_threadpool(answer)
            finally:
                release()
            return _completion(a, rid, created, req.model)

        async def events() -> AsyncIterator[str]:
            try:
                a = await run_in_threadpool(answer)
            except Exception as e:
                err = _error_of(e)
                yield _sse({"error": {"message": err.message, "type": err.kind,
                                      "code": err.status}})  # fmt: skip
                yield "data: [DONE]\n\n"
                return
            finally:
                release()
            # the verified answer, in pieces: what streams is exactly what was checked
            head = {"id": rid, "object": "chat.completion.chunk", "created": created,
                    "model": req.model}  # fmt: skip
            yield _sse({**head, "choices": [{"index": 0, "delta": {"role": "assistant",
                       "content": ""}, "finish_reason": None}]})  # fmt: skip
            for word in _pieces(a.answer):
                yield _sse({**head, "choices": [{"index": 0, "delta": {"content": word},
                           "finish_reason": None}]})  # fmt: skip
                await asyncio.sleep(0)
            yield _sse({**head, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
                        **_extras(a)})  # fmt: skip
            yield "data: [DONE]\n\n"

        # released by the stream's end, or after the response if the client left before it
        return StreamingResponse(events(), media_type="text/event-stream",
                                 background=BackgroundTask(release))  # fmt: skip

    @v1.post("/search")
    def search(req: SearchRequest) -> dict[str, Any]:
        _check_search(engine, req.mode, req.sources)
        release = slot()
        try:
            hits = engine.run("ask", lambda rag: rag.search(
                req.query, k=req.k, mode=req.mode, sources=req.sources))  # fmt: skip
        finally:
            release()
        return {"query": req.query, "hits": [h.to_json() for h in hits]}

    @v1.get("/documents")
    def documents() -> dict[str, Any]:
        files, titles = engine.files(), engine.titles()  # titles as the app shows them
        return {"object": "list", "data": [
            {"source": s, "title": titles.get(s) or r.title, "status": r.status, "chunks": r.chunks,
             "reason": r.reason} for s, r in sorted(files.items())
        ]}  # fmt: skip

    @v1.post("/documents")
    def upload(files: list[UploadFile] = File(...)) -> dict[str, Any]:  # noqa: B008
        limit = int(engine.settings.load.max_file_mb * 1024 * 1024)
        with tempfile.TemporaryDirectory(prefix="rag-upload-") as tmp:
            paths = []
            for f in files:
                name = safe_name(f.filename or "upload")  # never "..", "" or a path
                target = Path(tmp) / name
                size = 0
                with target.open("wb") as out:
                    while block := f.file.read(1 << 20):
                        size += len(block)
                        if size > limit:
                            mb = engine.settings.load.max_file_mb
                            raise ApiError(
                                413,
                                f"{name} is larger than {mb:g} MB: raise --max-file-mb or split it",
                                "file_too_large",
                            )
                        out.write(block)
                paths.append(target)
            saved, refused = engine.save_uploads(paths)
        report = engine.ingest_docs(lambda *_: None) if saved else None
        return {"saved": [s.name for s in saved], "refused": refused,
                "report": report.to_json() if report else None}  # fmt: skip

    @v1.delete("/documents")
    def delete(source: str) -> dict[str, Any]:
        if source not in engine.files():
            raise ApiError(404, f"no document {source!r} in the index: see GET /v1/documents",
                           "not_found")  # fmt: skip
        return {"deleted": source, "message": engine.delete(source)}

    @v1.get("/status")
    def status() -> dict[str, Any]:
        return json.loads(json.dumps(engine.status(), default=str))

    @v1.get("/docs", response_class=HTMLResponse)
    def docs() -> str:
        return _DOCS_PAGE

    app.include_router(v1)
    return app


def _check_search(engine: Engine, mode: str | None, sources: list[str] | None) -> None:
    """A 400 that says what to send, for a mode or `sources` no search could use: an
    unknown source would otherwise search nothing and answer "The documents do not say."."""
    from .config import MODES

    if mode is not None and mode not in MODES:
        raise ApiError(400, f"mode {mode!r} is not one of {', '.join(MODES)}: use one, or leave "
                       "mode out")  # fmt: skip
    if sources is None:
        return
    if not sources:
        raise ApiError(400, "sources is empty: leave it out to search every document, or list "
                       "documents as GET /v1/documents gives them")  # fmt: skip
    indexed = {s for s, row in engine.files().items() if row.status == "indexed"}
    unknown = [s for s in sources if s not in indexed]
    if unknown:
        more = f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else ""
        raise ApiError(400, f"no indexed document {unknown[0]!r}{more}: sources are exact "
                       "paths, as GET /v1/documents lists them", "unknown_source")  # fmt: skip


def _models(configured: LLMChoice, local: dict[str, Path]) -> dict[str, LLMChoice]:
    from . import models as bundled

    out = {"rag": configured, "rag:extractive": LLMChoice()}
    for m in bundled.MODELS.values():
        if bundled.installed(m.name):
            out[f"rag:{m.name}"] = LLMChoice(gguf=str(bundled.model_path(m.name)))
    if configured.url:
        out["rag:endpoint"] = configured
    return out


def _embed(embedder: Any, texts: list[str]) -> tuple[Any, int]:
    """(one unit vector per text, the tokens read)."""
    tokens = sum(min(len(o), embedder.max_tokens) for o in embedder.token_offsets(texts))
    return embedder.embed(texts), tokens


def _encoded(vector: Any, req: EmbeddingsRequest) -> list[float] | str:
    if req.encoding_format == "base64":
        import base64

        import numpy as np

        return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")
    return [float(x) for x in vector]


def _extras(a: Answer) -> dict[str, Any]:
    cits = []
    for c in a.citations:
        ch = c.hit.chunk
        cits.append({"n": c.n, "source": ch.source, "chunk_id": ch.id, "page": ch.page,
                     "start_char": ch.start_char, "end_char": ch.end_char, "quote": c.quote,
                     "supported": c.supported})  # fmt: skip
    out: dict[str, Any] = {"citations": cits, "refused": a.refused,
                           "warnings": list(a.warnings), "rag_mode": a.mode}  # fmt: skip
    if a.hypothesis:
        out["hypothesis"] = a.hypothesis  # the model's guess that was searched for too
    return out


def _completion(a: Answer, rid: str, created: int, model: str) -> dict[str, Any]:
    return {
        "id": rid,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": a.answer},
                "finish_reason": "stop",
                "logprobs": None,
            }
        ],
        "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
        **_extras(a),
    }


def _pieces(text: str) -> list[str]:
    words = text.split(" ")
    return [w if i == 0 else " " + w for i, w in enumerate(words)]


def _sse(obj: dict[str, Any]) -> str:
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"


_DOCS_PAGE = """<!doctype html><meta charset="utf-8"><title>rag API</title>
<style>body{font:15px/1.5 system-ui,sans-serif;max-width:60em;margin:2em auto;padding:0 1em}
code,pre{background:#f3f4f6;padding:.1em .3em;border-radius:4px}h2{margin-top:1.5em}</style>
<h1>rag API</h1><p>OpenAI-compatible, with citations. The schema: <a href="/v1/openapi.json">
/v1/openapi.json</a>. Served offline: nothing on this page comes from the internet.</p>
<div id="paths">loading…</div>
<script>
fetch("/v1/openapi.json").then(r => r.json()).then(spec => {
  const out = [];
  for (const [path, ops] of Object.entries(spec.paths)) {
    for (const [method, op] of Object.entries(ops)) {
      out.push(`<h2><code>${method.toUpperCase()} ${path}</code></h2><p>${op.summary || ""}</p>`);
    }
  }
  document.getElementById("paths").innerHTML = out.join("");
});
</script>
"""
