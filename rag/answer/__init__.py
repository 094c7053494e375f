"""Hits → an Answer whose every sentence cites its passage, or a plain refusal.

Answerers, chosen by name in one place (`make_answerer`):
  - "extractive" (extractive.py): quotes the sentences that answer; no LLM needed;
  - "llm" (generated.py): any OpenAI-compatible endpoint, or a GGUF file llama-server is
    started for, writes the answer, and every sentence is verified against its passage.
A new answerer is one file with a class that has `stream()`, `llm` and `close()`
(base.Answerer), and one line in ANSWERERS. A follow-up question is first made standalone
(conversation.py) by `Rag`, which then retrieves and hands the hits to the answerer.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from ..config import AnswerSettings
from ..errors import UsageError
from .base import Answerer, Embed, EvidenceJudge, refusal
from .conversation import condense
from .extractive import ExtractiveAnswerer, compose
from .generated import LLMAnswerer
from .verify import REFUSAL

if TYPE_CHECKING:
    from .llm import LLM

__all__ = [
    "ANSWERERS",
    "REFUSAL",
    "Answerer",
    "EvidenceJudge",
    "ExtractiveAnswerer",
    "LLMAnswerer",
    "answerer_name",
    "compose",
    "condense",
    "make_answerer",
    "pairs",
    "refusal",
]

ANSWERERS: dict[str, Callable[..., Answerer]] = {
    "extractive": ExtractiveAnswerer,
    "llm": LLMAnswerer,
}


def answerer_name(settings: AnswerSettings) -> str:
    """The answerer the settings ask for: "llm" when an endpoint or a GGUF is configured."""
    return "llm" if settings.llm_url or settings.llm_gguf else "extractive"


def make_answerer(
    settings: AnswerSettings,
    embed: Embed,
    judge: EvidenceJudge | None = None,
    *,
    name: str | None = None,
    llm: LLM | None = None,
) -> Answerer:
    """The one place an answerer is chosen: by `name`, else by the settings (an `llm` given
    here means the LLM answerer with that model)."""
    name = name or ("llm" if llm is not None else answerer_name(settings))
    if name not in ANSWERERS:
        raise UsageError(f"unknown answerer {name!r}: use one of {', '.join(ANSWERERS)}")
    if llm is not None:
        if name != "llm":
            raise UsageError(f"the {name} answerer uses no LLM: drop the model, or use 'llm'")
        return ANSWERERS[name](settings, embed, judge, llm=llm)
    return ANSWERERS[name](settings, embed, judge)


def pairs(history: Iterable[Any]) -> list[tuple[str, str]]:
    """(question, answer) turns from (q, a) pairs or from chat messages ({"role", "content"})."""
    turns: list[tuple[str, str]] = []
    for item in history:
        if isinstance(item, dict):
            role, content = item.get("role"), str(item.get("content") or "")
            if role == "user":
                turns.append((content, ""))
            elif role == "assistant" and turns and not turns[-1][1]:
                turns[-1] = (turns[-1][0], content)
        else:
            q, a = item
            turns.append((str(q), str(a)))
    return turns
