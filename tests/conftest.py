"""Shared fixtures: the seeds index (built once per session), a CLI runner, free ports."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from rag.config import Settings, apply_offline_env
from rag.pipeline import Rag

ROOT = Path(__file__).resolve().parent.parent
SEEDS = ROOT / "seeds"

apply_offline_env()

# A shell without job control starts background commands (`nohup make test &`, some CI
# runners) with SIGINT ignored, and exec keeps it ignored in every `rag` a test starts: the
# Ctrl-C tests then see a process that cannot be interrupted. Caught here, it is reset to
# the default in children, as in a terminal.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@dataclass
class CliResult:
    code: int
    out: str
    err: str


def run_rag(*args: str, index: Path | None = None, env: dict[str, str] | None = None,
            cwd: Path | None = None, timeout: float = 300) -> CliResult:  # fmt: skip
    """Run the real `rag` command (python -m rag) in a subprocess."""
    cmd = [sys.executable, "-m", "rag"]
    if index is not None:
        cmd += ["--index", str(index)]
    # the user's own RAG_* settings must not leak into tests
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("RAG_")}
    full_env.update(env or {})
    p = subprocess.run(
        [*cmd, *args], capture_output=True, text=True, env=full_env, cwd=cwd or ROOT,
        timeout=timeout,
    )  # fmt: skip
    return CliResult(p.returncode, p.stdout, p.stderr)


def stop(proc: subprocess.Popen, timeout: float = 20) -> None:
    """Stop a server a test started: SIGTERM, then SIGKILL if it does not go in time."""
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()


def exit_code(proc: subprocess.Popen, timeout: float) -> tuple[int, str]:
    """(exit code, stderr) of a `rag` process told to stop. One still running after `timeout`
    fails the test with the stack of every thread (rag dumps them on SIGUSR1), then is killed."""
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGUSR1)
        time.sleep(3)
        proc.terminate()  # rag stops a llama-server it started; SIGKILL would orphan it
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
        _, err = proc.communicate(timeout=30)
        raise AssertionError(
            f"still running {timeout:g} s after the signal; stderr:\n{err}"
        ) from None
    _, err = proc.communicate(timeout=30)
    return proc.returncode, err


def settings_for(index: Path, **groups: dict) -> Settings:
    s = Settings().with_(store={"index_dir": index})
    return s.with_(**groups) if groups else s


def missing(reason: str) -> None:
    """Skip a test whose real part is not set up, but fail in CI (CI=true), where `make test`
    has set everything up: a CI run must never go green by skipping the real servers."""
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"{reason} (CI=true: the real part is required)")
    pytest.skip(reason)


def llm_requirements() -> tuple[Path, Path]:
    """The llama-server binary and the bundled 0.5B GGUF (Qwen2.5-Coder-0.5B-Instruct)."""
    from rag import models
    from rag.errors import UsageError
    from rag.llamacpp import find_llama_server

    try:
        binary = find_llama_server()
    except FileNotFoundError as e:
        missing(f"llama-server is not built (run `make llama-server`): {e}")
    try:
        gguf = models.find_model("local-small")
    except UsageError as e:
        missing(str(e))
    return binary, gguf


@pytest.fixture(scope="session")
def seeds_index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An index of seeds/ built once for the session. Tests must not write to it."""
    index = tmp_path_factory.mktemp("seeds_index")
    Rag(settings_for(index)).ingest([SEEDS])
    return index


@pytest.fixture(scope="session")
def seeds_rag(seeds_index: Path) -> Rag:
    """A Rag over the shared seeds index (read-only use)."""
    return Rag(settings_for(seeds_index))


@pytest.fixture
def free_port() -> int:
    return pick_free_port()


def pick_free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_small_corpus(d: Path) -> Path:
    """Two short documents (alpha.md, beta.txt) with facts the tests ask about."""
    d.mkdir(parents=True, exist_ok=True)
    (d / "alpha.md").write_text(
        "# Alpha Project\n\nThe Alpha project was started in 2019 by Maria Lopez in Lisbon. "
        "It builds solar-powered water pumps for small farms.\n\n## Funding\n\n"
        "Alpha received 2.5 million euros from the Horizon programme in 2021.\n"
    )
    (d / "beta.txt").write_text(
        "Beta is a bicycle-sharing scheme in Ghent. It has 1,200 bikes at 85 stations. "
        "Riders pay 3 euros per day.\n"
    )
    return d


@pytest.fixture
def corpus(tmp_path: Path) -> Iterator[Path]:
    """A small folder of documents a test may change."""
    yield write_small_corpus(tmp_path / "docs")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Let fixtures see whether the test itself failed (the browser tests screenshot it)."""
    report = yield
    if report.when == "call":
        item.failed_call = report.failed  # type: ignore[attr-defined]
    return report
