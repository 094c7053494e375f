"""What every Gradio handler shares: failures shown as messages, progress shown as bars."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

import gradio as gr

from ..errors import IndexMissing, RagError

log = logging.getLogger(__name__)

NO_INDEX = "No documents are indexed yet: add some in the Documents tab."
STAGES = {
    "scan": "Checking files",
    "load": "Reading files",
    "embed": "Embedding passages",
    "questions": "Asking the questions",
    "baselines": "Measuring the baselines",
}


def guard(outputs: int, message_at: int = 0) -> Callable[[Callable[..., Any]], Any]:
    """Show any failure as a toast and in output `message_at`, leaving the other outputs as
    they were (a raised gr.Error would cover them all with an error badge)."""

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                return fn(*args, **kwargs)
            except Exception as e:
                text = e.message if isinstance(e, gr.Error) else message(e)
                gr.Warning(text)
                out: list[Any] = [gr.skip()] * outputs
                out[message_at] = f"**⚠ {text}**"
                return tuple(out)

        return wrapper

    return decorate


def message(e: BaseException) -> str:
    """What the page says about a failure: our errors say how to fix them; others are logged."""
    if isinstance(e, IndexMissing):
        return NO_INDEX
    if isinstance(e, RagError):
        return str(e)
    log.exception("unexpected error in the app")
    return f"Unexpected error ({type(e).__name__}: {e}); the details are in the server's log."


def progress_bar(progress: Any) -> Callable[[str, int, int], None]:
    """An (stage, done, total) callback that moves a gr.Progress bar."""

    def update(stage: str, done: int, total: int) -> None:
        progress((done, total), desc=STAGES.get(stage, stage))

    return update
