"""rag.llamacpp against a real llama-server running the bundled Qwen2.5-Coder-0.5B GGUF."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from openai import OpenAI

from rag.llamacpp import (
    LlamaServer,
    LlamaServerError,
    cached_binary,
    cpu_key,
    find_llama_server,
)

from .conftest import llm_requirements

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.llm


def _requirements() -> tuple[Path, Path]:
    return llm_requirements()


@pytest.fixture(scope="module")
def server() -> Iterator[LlamaServer]:
    binary, gguf = _requirements()
    with LlamaServer(gguf, ctx_size=2048, binary=binary) as srv:
        yield srv


@pytest.fixture(scope="module")
def client(server: LlamaServer) -> OpenAI:
    return OpenAI(base_url=server.url, api_key="none", timeout=120, max_retries=0)


def _model(client: OpenAI) -> str:
    return client.models.list().data[0].id


def _port_is_free(port: int) -> bool:
    with socket.socket() as s:
        # SO_REUSEADDR as a server would set it: TIME_WAIT leftovers don't count, a listener does
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


# -- locating things (no server) --------------------------------------------------------------


def _script_cpu_key(cpuinfo: Path, machine: str) -> str:
    """The build script's own key computation, run by bash on a given cpuinfo and `uname -m`."""
    script = (ROOT / "scripts" / "build-llama-server.sh").read_text()
    start = script.index("cpu_flags_line=")
    end = script.index("cache_root=")
    snippet = script[start:end].replace("/proc/cpuinfo", str(cpuinfo))
    shell = subprocess.run(
        ["bash", "-c", f"uname() {{ echo {machine}; }}\n{snippet}\nprintf '%s' \"$cpukey\""],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return shell.stdout


AMD_FLAGS = "fpu sse2 avx fma f16c bmi1 avx2 bmi2 sha_ni"
INTEL_AMX_FLAGS = "fpu sse2 avx f16c fma bmi2 avx2 avx512f avx512vnni amx_bf16 amx_tile amx_int8"


@pytest.mark.parametrize(
    ("flags", "machine", "portable"),
    [
        (AMD_FLAGS, "x86_64", True),
        (INTEL_AMX_FLAGS, "x86_64", True),
        ("fpu sse2 avx", "x86_64", False),  # no AVX2: a native build
        ("fp asimd evtstrm aes", "aarch64", False),
    ],
)
def test_cpu_key_matches_build_script(
    tmp_path: Path, flags: str, machine: str, portable: bool
) -> None:
    """AMD and Intel-with-AMX share the portable build; other CPUs get a native one, keyed by
    their flags. Python and the build script agree on every case."""
    cpuinfo = tmp_path / "cpuinfo"
    tag = "Features" if machine == "aarch64" else "flags"
    cpuinfo.write_text(f"processor\t: 0\n{tag}\t\t: {flags}\n\nprocessor\t: 1\n")
    key = cpu_key(cpuinfo, machine)
    assert key == _script_cpu_key(cpuinfo, machine)
    if portable:
        assert key == "x86-64-v3"
    else:
        assert len(key) == 12 and key != "x86-64-v3"
    assert cpu_key() == _script_cpu_key(Path("/proc/cpuinfo"), os.uname().machine)


FORBIDDEN = ("ldtilecfg", "tileloadd", "tdpbssd", "tdpbf16ps", "%zmm")  # AMX, AVX-512


def _instruction_counts(binary: Path) -> dict[str, int]:
    """How often each of FORBIDDEN and vfmadd (AVX2/FMA) occurs in the binary's code."""
    if shutil.which("objdump") is None:
        pytest.skip("objdump (binutils) is not installed")
    # objdump's text is ~100 MB: counted as it streams, not kept
    proc = subprocess.Popen(["objdump", "-d", "--no-show-raw-insn", str(binary)],
                            stdout=subprocess.PIPE, text=True)  # fmt: skip
    counts = dict.fromkeys((*FORBIDDEN, "vfmadd"), 0)
    assert proc.stdout is not None
    for line in proc.stdout:
        for marker in counts:
            if marker in line:
                counts[marker] += 1
    assert proc.wait(timeout=240) == 0
    return counts


def test_instruction_check_finds_avx512() -> None:
    """The check below can fail: glibc's AVX-512 string functions are found by it."""
    libc = Path("/lib/x86_64-linux-gnu/libc.so.6")
    if not libc.is_file():
        pytest.skip("no x86-64 glibc here")
    assert _instruction_counts(libc)["%zmm"] > 0


def test_cached_binary_has_no_amx_or_avx512_instructions() -> None:
    """The portable build must run on AMD and on Intel Xeons whose VM does not grant AMX tile
    state: a native build on an AMX machine contains `ldtilecfg` and dies with SIGSEGV at
    "llama threadpool init"; one with AVX-512 (zmm registers) dies of SIGILL on most AMD."""
    if cpu_key() != "x86-64-v3":
        pytest.skip("not an x86-64-v3 CPU: the build here is native by design")
    binary = cached_binary()
    if not binary.is_file():
        pytest.skip("llama-server is not built for this CPU: run `make llama-server`")
    counts = _instruction_counts(binary)
    assert counts["vfmadd"] > 100  # really disassembled, and the AVX2/FMA kernels are there
    found = {m: n for m, n in counts.items() if m in FORBIDDEN and n}
    assert not found, f"{found} in {binary}: rebuild with `make llama-server`"


def test_build_script_reports_the_cached_binary() -> None:
    """When built, the (idempotent) script prints exactly the path Python looks for."""
    if not cached_binary().is_file():
        pytest.skip("llama-server is not built for this CPU: run `make llama-server`")
    t0 = time.monotonic()
    p = subprocess.run(
        ["bash", str(ROOT / "scripts" / "build-llama-server.sh")],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    assert time.monotonic() - t0 < 10
    assert Path(p.stdout.strip()) == cached_binary()
    assert (cached_binary().parent.parent / "current").resolve() == cached_binary().parent.resolve()


def test_find_llama_server_env_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "llama-server"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    monkeypatch.setenv("RAG_LLAMA_SERVER", str(fake))
    assert find_llama_server() == fake
    monkeypatch.setenv("RAG_LLAMA_SERVER", str(tmp_path / "nope"))
    with pytest.raises(FileNotFoundError, match="RAG_LLAMA_SERVER"):
        find_llama_server()


def test_find_llama_server_missing_says_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("RAG_LLAMA_SERVER", raising=False)
    monkeypatch.setenv("RAG_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="make llama-server") as e:
        find_llama_server()
    assert "\n" not in str(e.value)


# -- a real server ----------------------------------------------------------------------------


@pytest.mark.slow
def test_health_ready(server: LlamaServer) -> None:
    assert server.running
    assert server.url == f"http://127.0.0.1:{server.port}/v1"
    with urllib.request.urlopen(f"{server.base_url}/health", timeout=5) as r:
        assert r.status == 200
        assert json.load(r).get("status") == "ok"


@pytest.mark.slow
def test_chat_completion(client: OpenAI) -> None:
    resp = client.chat.completions.create(
        model=_model(client),
        messages=[{"role": "user", "content": "What is the capital of France? Answer briefly."}],
        max_tokens=32,
        temperature=0,
    )
    text = resp.choices[0].message.content or ""
    assert text.strip(), resp
    assert resp.usage is not None and resp.usage.completion_tokens > 0


@pytest.mark.slow
def test_streaming(client: OpenAI) -> None:
    stream = client.chat.completions.create(
        model=_model(client),
        messages=[{"role": "user", "content": "Name three colours."}],
        max_tokens=32,
        temperature=0,
        stream=True,
    )
    pieces = [c.choices[0].delta.content or "" for c in stream if c.choices]
    assert len([p for p in pieces if p]) >= 3, pieces
    assert "".join(pieces).strip()


@pytest.mark.slow
def test_stop_frees_port_and_process() -> None:
    binary, gguf = _requirements()
    srv = LlamaServer(gguf, ctx_size=512, binary=binary)
    with srv:
        port, pid, log = srv.port, srv.pid, srv.log_path
        assert port is not None and pid is not None and log is not None
        assert _pid_alive(pid)
        assert not _port_is_free(port)
        assert srv.startup_seconds is not None and srv.startup_seconds < 30
    assert not srv.running
    assert not _pid_alive(pid)
    assert _port_is_free(port)
    assert not log.exists()
    srv.stop()  # idempotent


@pytest.mark.slow
def test_missing_gguf_fails_fast(tmp_path: Path) -> None:
    binary, _ = _requirements()
    missing = tmp_path / "nope.gguf"
    with pytest.raises(FileNotFoundError, match=r"nope\.gguf"):
        LlamaServer(missing, binary=binary).start()


@pytest.mark.slow
def test_bad_gguf_fails_with_log_not_hang(tmp_path: Path) -> None:
    binary, _ = _requirements()
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"this is not a gguf file\n" * 100)
    srv = LlamaServer(bad, binary=binary, startup_timeout=60)
    t0 = time.monotonic()
    with pytest.raises(LlamaServerError) as e:
        srv.start()
    assert time.monotonic() - t0 < 30
    msg = str(e.value)
    assert "exited" in msg and "bad.gguf" in msg and "\n" not in msg
    assert "failed to load model" in msg  # the tail of the server's own log
    assert not srv.running
    assert srv.log_path is not None and srv.log_path.exists()  # kept for the user to read
    srv.stop()
    assert srv.log_path is None
