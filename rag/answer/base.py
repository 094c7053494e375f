"""The answer stage's interfaces: a question and its passages in, a cited Answer out.

An answerer never searches and never reaches back into the pipeline: `Rag` retrieves the
hits and hands them down, with the models the answerer was made with (an embedding
function, and the cross-encoder as the judge of evidence).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from ..types import Answer, Draft, Hit
from .verify import REFUSAL

if TYPE_CHECKING:
    from .llm import LLM

Embed = Callable[[Sequence[str]], Any]  # texts → L2-normalised vectors (Embedder.embed)


class EvidenceJudge(Protocol):
    """A trained relevance model: how well does each passage answer the question?"""

    def logits(self, question: str, passages: Sequence[str]) -> list[float]:
        """One score per passage, higher is better; each scored alone (no batch effects)."""
        ...


class Answerer(Protocol):
    name: str  # the registry's name: "extractive", "llm"

    @property
    def llm(self) -> LLM | None:
        """The chat model behind it (it also rewrites follow-ups), or None."""
        ...

    def stream(self, question: str, hits: Sequence[Hit]) -> Iterator[str | Draft | Answer]:
        """The answer's text as it is produced, then the whole Answer (always last). An
        answerer that is slow to start may first yield a Draft: a quick answer to show
        meanwhile, which the text that follows replaces."""
        ...

    def close(self) -> None:
        """Stop what it started (a llama-server). Idempotent."""
        ...


def refusal(question: str, hits: Sequence[Hit], mode: str = "extractive") -> Answer:
    """ "The documents do not say.", with the closest passages."""
    return Answer(question, REFUSAL, True, [], mode, hits=list(hits))
