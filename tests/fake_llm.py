"""A real OpenAI-compatible HTTP server on 127.0.0.1 whose replies each test decides.

    with FakeLLM(lambda request: Reply("Alpha started in 2019 [1].")) as llm:
        rag.ask(question, llm=LLM(llm.url))

It serves GET /v1/models and POST /v1/chat/completions (plain and streamed), and can be
slow, fail with an HTTP status, or send a body that is not JSON.
"""

from __future__ import annotations

import contextlib
import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MODEL = "fake-model"


@dataclass
class Reply:
    text: str = ""
    status: int = 200
    delay: float = 0.0  # seconds before the response starts
    malformed: bool = False  # a body (or stream event) that is not JSON
    piece_delay: float = 0.0  # seconds between streamed pieces


Script = Callable[[dict[str, Any]], Reply]


class FakeLLM:
    """The server; `requests` keeps every chat request body it received."""

    def __init__(self, reply: Script | Reply | str = "") -> None:
        if isinstance(reply, str):
            reply = Reply(reply)
        self.script: Script = reply if callable(reply) else (lambda _req, r=reply: r)
        self.requests: list[dict[str, Any]] = []
        self.finished_at: float | None = None  # time.perf_counter() when the last reply ended
        self._stopping = threading.Event()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def __enter__(self) -> FakeLLM:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopping.set()  # cut the sleeps of slow replies short
        self._httpd.shutdown()
        self._httpd.server_close()

    def sleep(self, seconds: float) -> None:
        self._stopping.wait(seconds)

    def last_user_message(self) -> str:
        return next(
            m["content"] for m in reversed(self.requests[-1]["messages"]) if m["role"] == "user"
        )


def _handler(fake: FakeLLM) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:  # keep the test output clean
            pass

        def do_GET(self) -> None:
            if self.path.rstrip("/") == "/v1/models":
                model = {"id": MODEL, "object": "model", "created": 0, "owned_by": "test"}
                self._json(200, {"object": "list", "data": [model]})
            else:
                self._json(404, {"error": {"message": "not found"}})

        def do_POST(self) -> None:
            # the client may give up (its timeout) or stop reading early
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                self._answer()

        def _answer(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
            if self.path.rstrip("/") != "/v1/chat/completions":
                self._json(404, {"error": {"message": "not found"}})
                return
            fake.requests.append(body)
            reply = fake.script(body)
            fake.sleep(reply.delay)
            if reply.status != 200:
                self._json(reply.status, {"error": {"message": "fake failure", "type": "server"}})
            elif reply.malformed and body.get("stream"):
                self._raw(200, "text/event-stream", b'data: {"choices": [{"delta": \n\n')
            elif reply.malformed:
                self._raw(200, "application/json", b'{"choices": [{"message": ')
            elif body.get("stream"):
                self._stream(reply)
            else:
                message = {"role": "assistant", "content": reply.text}
                choice = {"index": 0, "message": message, "finish_reason": "stop"}
                self._json(200, {"id": "c1", "object": "chat.completion", "created": 0,
                                 "model": MODEL, "choices": [choice]})  # fmt: skip

        def _stream(self, reply: Reply) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()
            for piece in re.findall(r"\S+\s*|\s+", reply.text):
                fake.sleep(reply.piece_delay)
                self._event({"content": piece}, None)
            self._event({}, "stop")
            self.wfile.write(b"data: [DONE]\n\n")
            fake.finished_at = time.perf_counter()

        def _event(self, delta: dict[str, str], finish: str | None) -> None:
            choice = {"index": 0, "delta": delta, "finish_reason": finish}
            chunk = {"id": "c1", "object": "chat.completion.chunk", "created": 0, "model": MODEL,
                     "choices": [choice]}  # fmt: skip
            self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
            self.wfile.flush()

        def _json(self, status: int, obj: Any) -> None:
            self._raw(status, "application/json", json.dumps(obj).encode())

        def _raw(self, status: int, kind: str, data: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    return Handler


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False
